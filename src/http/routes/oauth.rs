//! `GET /auth/google` and `GET /auth/google/callback` (outside `/api`): the
//! browser side of the OAuth login. Every outcome is a redirect; nothing here
//! answers 500.

use actix_web::{
    cookie::{time::Duration as CookieDuration, Cookie, SameSite},
    http::header::LOCATION,
    web, HttpRequest, HttpResponse,
};
use serde::Deserialize;

use crate::{
    actors::user::{BeginOAuth, CompleteOAuth, OAUTH_STATE_TTL},
    auth::oauth::OAuthFailure,
    error::AppError,
    http::envelope::Envelope,
    http::AppState,
};

pub const STATE_COOKIE: &str = "sf_oauth_state";
const COOKIE_PATH: &str = "/auth/google";

pub fn configure(cfg: &mut web::ServiceConfig) {
    resource!(cfg, "", "/auth/google", get => start);
    resource!(cfg, "", "/auth/google/callback", get => callback);
}

/// Where the browser goes after a login, from `oauth.google.*`.
#[derive(Clone)]
pub struct OAuthRedirects {
    pub success: String,
    pub failure: String,
    /// Mark the state cookie `Secure` (the callback is https).
    pub secure_cookie: bool,
}

fn state_cookie(value: &str, secure: bool, max_age: CookieDuration) -> Cookie<'static> {
    Cookie::build(STATE_COOKIE, value.to_owned())
        .path(COOKIE_PATH)
        .http_only(true)
        .secure(secure)
        // Lax: sent on the provider's top-level redirect back to us.
        .same_site(SameSite::Lax)
        .max_age(max_age)
        .finish()
}

fn redirect(to: &str) -> actix_web::HttpResponseBuilder {
    let mut b = HttpResponse::Found();
    // The success redirect carries the tokens (in the fragment).
    b.insert_header((LOCATION, to.to_owned()))
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"));
    b
}

fn not_configured() -> HttpResponse {
    let status = actix_web::http::StatusCode::SERVICE_UNAVAILABLE;
    HttpResponse::ServiceUnavailable().json(Envelope::error(
        status,
        "Google login is not configured: set GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET \
         (or oauth.google.client_id and oauth.google.client_secret)",
        None,
    ))
}

/// Redirects to the provider with a fresh single-use state (also set as an
/// HttpOnly cookie) and a PKCE S256 challenge.
#[utoipa::path(
    get, path = "/auth/google", tag = "auth", summary = "Start a Google login",
    responses(
        (status = 302, description = "To the provider's consent page (state + PKCE S256, scope openid email profile)"),
        (status = 503, description = "No client id and secret configured", body = crate::http::openapi::ErrorResponse)
    )
)]
pub async fn start(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let Some(redirects) = &state.oauth else {
        return Ok(not_configured());
    };
    let started = state.users.send(BeginOAuth).await??;
    let max_age = CookieDuration::seconds(OAUTH_STATE_TTL.as_secs() as i64);
    Ok(redirect(&started.url)
        .cookie(state_cookie(&started.state, redirects.secure_cookie, max_age))
        .finish())
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// Finishes the login: success goes to `oauth.google.success_redirect` with
/// the tokens in the URL fragment (never the query), failure to
/// `oauth.google.failure_redirect?error=<code>`.
#[utoipa::path(
    get, path = "/auth/google/callback", tag = "auth", summary = "Google login callback",
    params(
        ("code" = Option<String>, Query), ("state" = Option<String>, Query), ("error" = Option<String>, Query)
    ),
    responses(
        (status = 302, description = "success_redirect#access_token=..&refresh_token=..&token_type=Bearer&expires_in=.., \
                                     or failure_redirect?error=access_denied|invalid_state|state_reused|state_expired|\
                                     provider_error|provider_timeout|email_missing|email_not_verified|account_disabled|server_error"),
        (status = 503, description = "No client id and secret configured", body = crate::http::openapi::ErrorResponse)
    )
)]
pub async fn callback(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let Some(redirects) = &state.oauth else {
        return not_configured();
    };
    // The state cookie is spent either way.
    let clear = state_cookie("", redirects.secure_cookie, CookieDuration::ZERO);
    let fail = |f: OAuthFailure| {
        let sep = if redirects.failure.contains('?') { '&' } else { '?' };
        redirect(&format!("{}{sep}error={}", redirects.failure, f.code()))
            .cookie(clear.clone())
            .finish()
    };
    let Ok(query) = web::Query::<CallbackQuery>::from_query(req.query_string()) else {
        return fail(OAuthFailure::InvalidState);
    };
    let query = query.into_inner();
    let message = CompleteOAuth {
        code: query.code,
        state: query.state,
        cookie_state: req.cookie(STATE_COOKIE).map(|c| c.value().to_owned()),
        provider_error: query.error,
    };
    match state.users.send(message).await {
        Ok(Ok(pair)) => {
            let fragment = format!(
                "access_token={}&refresh_token={}&token_type=Bearer&expires_in={}",
                pair.access_token, pair.refresh_token, pair.expires_in
            );
            redirect(&format!("{}#{fragment}", redirects.success))
                .cookie(clear)
                .finish()
        }
        Ok(Err(f)) => fail(f),
        Err(e) => {
            tracing::error!(error = %e, "OAuth callback lost (UserActor restarting)");
            fail(OAuthFailure::ServerError)
        }
    }
}
