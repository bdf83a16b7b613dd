//! OAuth 2.0 authorization code flow with PKCE (S256) against Google or any
//! OpenID provider with the same endpoints, through the `oauth2` crate. The
//! HTTP client never follows redirects and gives up after `timeout_ms`.

use std::time::Duration;

use oauth2::{
    basic::BasicClient, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope, TokenResponse,
    TokenUrl,
};
use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::config::OAuthProviderSettings;

type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// Why a login failed; the code goes to `oauth.failure_redirect?error=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthFailure {
    AccessDenied,
    InvalidState,
    StateReused,
    StateExpired,
    ProviderError,
    ProviderTimeout,
    EmailMissing,
    EmailNotVerified,
    AccountDisabled,
    ServerError,
}

impl OAuthFailure {
    pub fn code(self) -> &'static str {
        match self {
            Self::AccessDenied => "access_denied",
            Self::InvalidState => "invalid_state",
            Self::StateReused => "state_reused",
            Self::StateExpired => "state_expired",
            Self::ProviderError => "provider_error",
            Self::ProviderTimeout => "provider_timeout",
            Self::EmailMissing => "email_missing",
            Self::EmailNotVerified => "email_not_verified",
            Self::AccountDisabled => "account_disabled",
            Self::ServerError => "server_error",
        }
    }
}

/// The OpenID userinfo fields used.
#[derive(Debug, Clone, Deserialize)]
pub struct UserInfo {
    pub sub: String,
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified: bool,
    pub name: Option<String>,
}

pub struct Provider {
    client: Client,
    http: oauth2::reqwest::Client,
    userinfo_url: String,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("userinfo_url", &self.userinfo_url)
            .finish_non_exhaustive()
    }
}

/// A started login: where to send the browser, the state for its cookie and
/// the PKCE verifier to keep server-side.
pub struct Start {
    pub url: String,
    pub state: String,
    pub pkce_verifier: String,
}

impl Provider {
    /// `None` when no client id and secret are configured.
    pub fn from_settings(s: &OAuthProviderSettings) -> anyhow::Result<Option<Self>> {
        if !s.is_configured() {
            return Ok(None);
        }
        let client = BasicClient::new(ClientId::new(s.client_id.clone()))
            .set_client_secret(ClientSecret::new(s.client_secret.expose_secret().to_owned()))
            .set_auth_uri(AuthUrl::new(s.auth_url.clone())?)
            .set_token_uri(TokenUrl::new(s.token_url.clone())?)
            .set_redirect_uri(RedirectUrl::new(s.redirect_url.clone())?);
        let http = oauth2::reqwest::ClientBuilder::new()
            // A provider redirect is never followed (SSRF, token leaks).
            .redirect(oauth2::reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(s.timeout_ms.max(1)))
            .build()?;
        Ok(Some(Self {
            client,
            http,
            userinfo_url: s.userinfo_url.clone(),
        }))
    }

    pub fn start(&self) -> Start {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state) = self
            .client
            .authorize_url(CsrfToken::new_random)
            .add_scope(Scope::new("openid".into()))
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        Start {
            url: url.to_string(),
            state: state.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        }
    }

    /// Exchanges the code (with the PKCE verifier) and reads the userinfo.
    pub async fn user(&self, code: String, pkce_verifier: String) -> Result<UserInfo, OAuthFailure> {
        let timeout = |e: &oauth2::reqwest::Error| e.is_timeout();
        let token = self
            .client
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| {
                let failure = match &e {
                    RequestTokenError::Request(oauth2::HttpClientError::Reqwest(r)) if timeout(r) => {
                        OAuthFailure::ProviderTimeout
                    }
                    _ => OAuthFailure::ProviderError,
                };
                tracing::warn!(error = %e, code = failure.code(), "OAuth code exchange failed");
                failure
            })?;
        let response = self
            .http
            .get(&self.userinfo_url)
            .bearer_auth(token.access_token().secret())
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "OAuth userinfo request failed");
                if timeout(&e) {
                    OAuthFailure::ProviderTimeout
                } else {
                    OAuthFailure::ProviderError
                }
            })?;
        if !response.status().is_success() {
            tracing::warn!(status = %response.status(), "OAuth userinfo refused");
            return Err(OAuthFailure::ProviderError);
        }
        let body = response.bytes().await.map_err(|e| {
            tracing::warn!(error = %e, "OAuth userinfo unreadable");
            if timeout(&e) {
                OAuthFailure::ProviderTimeout
            } else {
                OAuthFailure::ProviderError
            }
        })?;
        serde_json::from_slice::<UserInfo>(&body).map_err(|e| {
            tracing::warn!(error = %e, "OAuth userinfo is not the expected JSON");
            OAuthFailure::ProviderError
        })
    }
}
