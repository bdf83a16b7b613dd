//! `/api/v1/auth/*`: login, refresh, logout, me.

use actix_web::{http::StatusCode, web, HttpResponse};
use serde::Deserialize;

use super::ask;
use crate::{
    actors::user::{GetUser, Login, Logout, Refresh},
    auth::AuthUser,
    error::AppError,
    http::AppState,
    http::{envelope, extractors::JsonBody, validate::Fields},
};

pub fn configure(cfg: &mut web::ServiceConfig, prefix: &str) {
    resource!(cfg, prefix, "/auth/login", post => login);
    resource!(cfg, prefix, "/auth/refresh", post => refresh);
    resource!(cfg, prefix, "/auth/logout", post => logout);
    resource!(cfg, prefix, "/auth/me", get => me);
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct LoginBody {
    #[schema(value_type = String, required = true, example = "ada@example.com", pattern = r"\S")]
    email: Option<String>,
    #[schema(value_type = String, required = true, example = "Passw0rd!", min_length = 1, pattern = r"\S")]
    password: Option<String>,
}

fn non_empty(s: &str) -> Result<String, &'static str> {
    if s.trim().is_empty() {
        Err("is required")
    } else {
        Ok(s.to_owned())
    }
}

/// Passwords longer than the policy allows are refused before hashing, so a
/// huge password cannot buy a long Argon2 run.
fn bounded_password(s: &str) -> Result<String, &'static str> {
    if s.is_empty() {
        Err("is required")
    } else if s.chars().count() > 128 {
        Err("must be at most 128 characters")
    } else {
        Ok(s.to_owned())
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    summary = "Log in",
    request_body = LoginBody,
    responses((status = 200, description = "Log in", body = crate::http::openapi::ApiResponse<crate::actors::user::TokenPair>), (status = 401, description = "Wrong email or password, or the account is deactivated", body = crate::http::openapi::ErrorResponse))
)]
pub async fn login(state: web::Data<AppState>, body: JsonBody<LoginBody>) -> Result<HttpResponse, AppError> {
    let body = body.0;
    let mut f = Fields::new();
    let email = f.required("email", body.email.as_deref(), non_empty);
    let password = f.required("password", body.password.as_deref(), bounded_password);
    f.finish()?;
    let (Some(email), Some(password)) = (email, password) else {
        return Err(AppError::internal(anyhow::anyhow!("validated fields missing")));
    };
    ask(
        &state.users,
        Login { email, password },
        StatusCode::OK,
        "Login successful",
    )
    .await
    .map(envelope::no_store)
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct RefreshBody {
    #[schema(value_type = String, required = true, min_length = 1, max_length = 512, pattern = r"\S")]
    refresh_token: Option<String>,
}

fn refresh_token(body: RefreshBody) -> Result<String, AppError> {
    let mut f = Fields::new();
    let token = f.required("refresh_token", body.refresh_token.as_deref(), |s| {
        if s.trim().is_empty() {
            Err("is required")
        } else if s.len() > 512 {
            Err("is too long")
        } else {
            Ok(s.to_owned())
        }
    });
    f.finish()?;
    token.ok_or_else(|| AppError::internal(anyhow::anyhow!("validated field missing")))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/refresh",
    tag = "auth",
    summary = "Rotate a refresh token",
    request_body = RefreshBody,
    responses((status = 200, description = "Rotate a refresh token", body = crate::http::openapi::ApiResponse<crate::actors::user::TokenPair>), (status = 401, description = "Unknown, spent, revoked or expired refresh token (a spent one revokes its whole login)", body = crate::http::openapi::ErrorResponse))
)]
pub async fn refresh(
    state: web::Data<AppState>,
    body: JsonBody<RefreshBody>,
) -> Result<HttpResponse, AppError> {
    let token = refresh_token(body.0)?;
    ask(
        &state.users,
        Refresh { refresh_token: token },
        StatusCode::OK,
        "Token refreshed successfully",
    )
    .await
    .map(envelope::no_store)
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "auth",
    summary = "Log out (end this login)",
    request_body = RefreshBody,
    responses((status = 200, description = "Log out (end this login)", body = crate::http::openapi::EmptyResponse)),
    security(("bearer_auth" = []))
)]
pub async fn logout(
    state: web::Data<AppState>,
    caller: AuthUser,
    body: JsonBody<RefreshBody>,
) -> Result<HttpResponse, AppError> {
    let token = refresh_token(body.0)?;
    ask(
        &state.users,
        Logout {
            user_id: caller.id,
            refresh_token: token,
        },
        StatusCode::OK,
        "Logged out successfully",
    )
    .await
}

#[utoipa::path(
    get,
    path = "/api/v1/auth/me",
    tag = "auth",
    summary = "The caller",
    responses((status = 200, description = "The caller", body = crate::http::openapi::ApiResponse<crate::models::user::UserView>)),
    security(("bearer_auth" = []))
)]
pub async fn me(state: web::Data<AppState>, caller: AuthUser) -> Result<HttpResponse, AppError> {
    ask(
        &state.users,
        GetUser {
            caller,
            id: caller.id,
        },
        StatusCode::OK,
        "User retrieved successfully",
    )
    .await
}
