//! `Authorization: Bearer <jwt>` → `AuthUser`, or 401 with `WWW-Authenticate`.

use std::future::{ready, Ready};

use actix_web::{dev::Payload, http::header, FromRequest, HttpMessage, HttpRequest};

use crate::{auth::AuthUser, domain::Role, error::AppError, http::AppState};

/// Tokens longer than this are refused before any parsing.
const MAX_TOKEN_LEN: usize = 4096;

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
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
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
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        if req.headers().contains_key(header::AUTHORIZATION) {
            ready(authenticate(req).map(|u| Self(Some(u))))
        } else {
            ready(Ok(Self(None)))
        }
    }
}

/// A caller with the admin role or higher; anyone else gets 403 (401
/// without a valid token), before the body is even read.
pub struct Admin(pub AuthUser);

impl FromRequest for Admin {
    type Error = AppError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req).and_then(|u| u.require(Role::Admin)).map(Self))
    }
}
