//! `BeginOAuth`, `CompleteOAuth`: signing in with Google (or any OpenID
//! provider), and linking or creating the account.

use super::*;

/// Starts a login with the OpenID provider: the URL to send the browser to
/// and the state for its cookie.
#[derive(Message)]
#[rtype(result = "Result<OAuthStart, AppError>")]
pub struct BeginOAuth;

pub struct OAuthStart {
    pub url: String,
    pub state: String,
}

/// Finishes a login from the provider's callback.
#[derive(Message)]
#[rtype(result = "Result<TokenPair, OAuthFailure>")]
pub struct CompleteOAuth {
    pub code: Option<String>,
    pub state: Option<String>,
    /// The state from the browser's cookie.
    pub cookie_state: Option<String>,
    /// `error=` from the provider (consent denied, ...).
    pub provider_error: Option<String>,
}

/// How long a login attempt may take.
pub const OAUTH_STATE_TTL: Duration = Duration::from_secs(600);

fn not_configured() -> AppError {
    AppError::Unavailable(anyhow::anyhow!("OAuth provider is not configured"))
}

impl Handler<BeginOAuth> for UserActor {
    type Result = Reply<OAuthStart>;

    fn handle(&mut self, _: BeginOAuth, _: &mut Context<Self>) -> Self::Result {
        let (pool, provider) = (self.pool.clone(), self.oauth.clone());
        self.reply(async move {
            let provider = provider.ok_or_else(not_configured)?;
            let start = provider.start();
            let mut conn = pool.get().await?;
            oauth_state::insert(&mut conn, &refresh::hash(&start.state), &start.pkce_verifier).await?;
            Ok(OAuthStart {
                url: start.url,
                state: start.state,
            })
        })
    }
}

/// Constant-time comparison of two states.
fn same_state(a: &str, b: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter().zip(y.iter()).fold(0u8, |acc, (p, q)| acc | (p ^ q)) == 0
}

impl Handler<CompleteOAuth> for UserActor {
    type Result = ResponseFuture<Result<TokenPair, OAuthFailure>>;

    fn handle(&mut self, msg: CompleteOAuth, _: &mut Context<Self>) -> Self::Result {
        let (c, provider) = (self.ctx(), self.oauth.clone());
        guarded_or(
            "UserActor",
            async move {
                let server_error = |e: AppError| {
                    tracing::error!(error = %e, "OAuth login failed on our side");
                    OAuthFailure::ServerError
                };
                let provider = provider.ok_or(OAuthFailure::ServerError)?;
                let state = msg
                    .state
                    .filter(|s| !s.is_empty() && s.len() <= 512)
                    .ok_or(OAuthFailure::InvalidState)?;
                // The state must come back to the browser that started the login.
                if !msg.cookie_state.is_some_and(|cookie| same_state(&cookie, &state)) {
                    return Err(OAuthFailure::InvalidState);
                }
                let taken = {
                    let mut conn = c.pool.get().await.map_err(|e| server_error(e.into()))?;
                    oauth_state::take(&mut conn, &refresh::hash(&state))
                        .await
                        .map_err(|e| server_error(e.into()))?
                };
                let verifier = match taken {
                    Taken::Unknown => return Err(OAuthFailure::InvalidState),
                    Taken::Reused => return Err(OAuthFailure::StateReused),
                    Taken::Fresh { created_at, .. }
                        if chrono::Utc::now() - created_at
                            > chrono::Duration::from_std(OAUTH_STATE_TTL).unwrap_or_default() =>
                    {
                        return Err(OAuthFailure::StateExpired)
                    }
                    Taken::Fresh { verifier, .. } => verifier,
                };
                if msg.provider_error.is_some() {
                    return Err(OAuthFailure::AccessDenied);
                }
                let code = msg
                    .code
                    .filter(|c| !c.is_empty() && c.len() <= 2048)
                    .ok_or(OAuthFailure::ProviderError)?;
                let info = provider.user(code, verifier).await?;
                let user = link_or_create(&c, &info).await?;
                let mut conn = c.pool.get().await.map_err(|e| server_error(e.into()))?;
                c.issue_pair(&mut conn, user, Uuid::new_v4())
                    .await
                    .map_err(server_error)
            },
            |_| Err(OAuthFailure::ServerError),
        )
    }
}

/// Links by Google id first, else by a verified email (clearing the local
/// password and ending its logins), else creates a user without a password.
/// An unverified email is never linked, nor used to create an account (it
/// could pre-claim someone else's address).
async fn link_or_create(c: &Ctx, info: &UserInfo) -> Result<UserRow, OAuthFailure> {
    let fail = |e: diesel::result::Error| {
        tracing::error!(error = %e, "OAuth account lookup failed");
        OAuthFailure::ServerError
    };
    let mut conn = c.pool.get().await.map_err(|e| {
        tracing::error!(error = %e, "OAuth account lookup failed");
        OAuthFailure::ServerError
    })?;
    let active = |u: UserRow| {
        if u.is_active {
            Ok(u)
        } else {
            Err(OAuthFailure::AccountDisabled)
        }
    };
    if let Some(u) = user::find_by_google_id(&mut conn, &info.sub)
        .await
        .map_err(fail)?
    {
        return active(u);
    }
    let email = info
        .email
        .as_deref()
        .and_then(|e| Email::parse(e).ok())
        .ok_or(OAuthFailure::EmailMissing)?;
    if !info.email_verified {
        return Err(OAuthFailure::EmailNotVerified);
    }
    if let Some(existing) = user::find_by_email(&mut conn, email.as_str())
        .await
        .map_err(fail)?
    {
        if existing.google_id.is_some() {
            // Linked to another Google account already.
            return Err(OAuthFailure::AccountDisabled);
        }
        // The local account's email was never verified; the provider's is.
        // The owner of the verified email wins: the password goes, and every
        // login made with it ends, in the same transaction as the link.
        let existing = active(existing)?;
        let (id, sub) = (existing.id, info.sub.clone());
        return conn
            .transaction::<_, diesel::result::Error, _>(async move |conn| {
                let linked = user::link_google(conn, id, &sub).await?;
                refresh_token::revoke_all_for_user(conn, id).await?;
                Ok(linked)
            })
            .await
            .map_err(fail);
    }
    let fallback = email.as_str().split('@').next().unwrap_or("User").to_owned();
    let name = info
        .name
        .as_deref()
        .and_then(|n| UserName::parse(n).ok())
        .or_else(|| UserName::parse(&fallback).ok())
        .or_else(|| UserName::parse("Google user").ok())
        .ok_or(OAuthFailure::ServerError)?;
    let new = NewUser {
        email: email.as_str(),
        password_hash: None,
        name: name.as_str(),
        role: Role::User,
        google_id: Some(&info.sub),
    };
    match user::insert(&mut conn, &new).await {
        Ok(u) => Ok(u),
        // A concurrent login created it first: use that one.
        Err(e)
            if is_unique_violation(&e, "users_email_key")
                || is_unique_violation(&e, "users_google_id_key") =>
        {
            user::find_by_google_id(&mut conn, &info.sub)
                .await
                .map_err(fail)?
                .ok_or(OAuthFailure::ServerError)
        }
        Err(e) => Err(fail(e)),
    }
}
