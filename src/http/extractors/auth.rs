//! `Authorization: Bearer <jwt>` → `AuthUser`, or 401 with `WWW-Authenticate`.
//!
//! A token claiming more than the `user` role is checked against the
//! database on every request: a demoted or deactivated admin's token acts
//! with the role the database gives now (or not at all), not the one it was
//! issued with. Plain users' tokens are not looked up (most requests); what
//! a deactivated user may still do with one is read-only (their writes check
//! the account where they happen).

use std::future::{ready, Future};
use std::pin::Pin;

use actix_web::{dev::Payload, http::header, FromRequest, HttpMessage, HttpRequest};

use crate::{actors::user::CurrentAccount, auth::AuthUser, domain::Role, error::AppError, http::AppState};

/// Tokens longer than this are refused before any parsing.
const MAX_TOKEN_LEN: usize = 4096;

type Authenticating<T> = Pin<Box<dyn Future<Output = Result<T, AppError>>>>;

/// `authenticate`, then, for a token that claims a privileged role, the
/// role and activity the database gives now.
fn authenticate_fresh(req: &HttpRequest) -> Authenticating<AuthUser> {
    let claimed = authenticate(req);
    let state = req.app_data::<actix_web::web::Data<AppState>>().cloned();
    Box::pin(async move {
        let mut user = claimed?;
        if user.role == Role::User {
            return Ok(user);
        }
        let state = state.ok_or_else(|| AppError::internal(anyhow::anyhow!("AppState missing")))?;
        match state.users.send(CurrentAccount { id: user.id }).await?? {
            Some((role, true)) => {
                user.role = role;
                Ok(user)
            }
            _ => Err(AppError::Unauthorized("Invalid or expired token".into())),
        }
    })
}

fn authenticate(req: &HttpRequest) -> Result<AuthUser, AppError> {
    let unauthorized = |m: &str| AppError::Unauthorized(m.to_owned());
    let state = req
        .app_data::<actix_web::web::Data<AppState>>()
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("AppState missing")))?;
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("Access token required"))?;
    let value = value.to_str().map_err(|_| unauthorized("Invalid token"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthorized("Access token required"))?;
    if token.len() > MAX_TOKEN_LEN {
        return Err(unauthorized("Invalid token"));
    }
    let user = state.jwt.authenticate(token).map_err(|e| {
        tracing::debug!(error = %e, "rejected access token");
        unauthorized("Invalid or expired token")
    })?;
    let id = user.id;
    // For the request log line.
    req.extensions_mut().insert(user);
    tracing::Span::current().record("user_id", id);
    Ok(user)
}

impl FromRequest for AuthUser {
    type Error = AppError;
    type Future = Authenticating<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        authenticate_fresh(req)
    }
}

/// Public endpoints: no `Authorization` header is an anonymous caller; a
/// header that does not verify is still a 401.
pub struct OptionalAuth(pub Option<AuthUser>);

impl OptionalAuth {
    pub fn is_admin(&self) -> bool {
        self.0.is_some_and(|u| u.role.is_admin())
    }
}

impl FromRequest for OptionalAuth {
    type Error = AppError;
    type Future = Authenticating<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        if req.headers().contains_key(header::AUTHORIZATION) {
            let fresh = authenticate_fresh(req);
            Box::pin(async move { fresh.await.map(|u| Self(Some(u))) })
        } else {
            Box::pin(ready(Ok(Self(None))))
        }
    }
}

/// A caller whose current role (in the database) is admin or higher; anyone
/// else gets 403 (401 without a valid token), before the body is read.
pub struct Admin(pub AuthUser);

impl FromRequest for Admin {
    type Error = AppError;
    type Future = Authenticating<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let fresh = authenticate_fresh(req);
        Box::pin(async move { fresh.await?.require(Role::Admin).map(Self) })
    }
}
