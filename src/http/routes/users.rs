//! `/api/v{1,2}/users`: registration and user management.

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::ask;
use crate::http::middleware::rate_limit::count_login;
use crate::{
    actors::user::{
        ChangeRole, DeleteUser, GetUser, ListUsers, Register, UpdateUser, UserUpdate, USERS_CURSOR_SCOPE,
    },
    auth::AuthUser,
    domain::{text::bounded, Email, Password, Role, UserName},
    error::AppError,
    http::AppState,
    http::{
        extractors::{Admin, JsonBody},
        validate::{checked, Fields},
    },
    pagination::{ApiVersion, PageParams},
};

pub fn configure(cfg: &mut web::ServiceConfig, prefix: &str) {
    resource!(cfg, prefix, "/users", post => register, get => list);
    resource!(cfg, prefix, "/users/{id}", get => get, put => update, delete => delete);
    resource!(cfg, prefix, "/users/{id}/role", put => change_role);
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct RegisterBody {
    #[schema(value_type = String, required = true, example = "ada@example.com", format = Email)]
    email: Option<String>,
    /// 8..128 characters with a lowercase letter, an uppercase letter and a digit.
    #[schema(value_type = String, required = true, example = "Passw0rd!", min_length = 8, max_length = 128)]
    password: Option<String>,
    #[schema(value_type = String, required = true, example = "Ada", min_length = 2, max_length = 50)]
    name: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "users",
    summary = "Register",
    request_body = RegisterBody,
    responses((status = 201, description = "Register", body = crate::http::openapi::ApiResponse<crate::models::user::UserView>), (status = 409, description = "Email already registered", body = crate::http::openapi::ErrorResponse))
)]
pub async fn register(
    state: web::Data<AppState>,
    body: JsonBody<RegisterBody>,
) -> Result<HttpResponse, AppError> {
    let body = body.0;
    let mut f = Fields::new();
    let email = f.required("email", body.email.as_deref(), Email::parse);
    let password = f.required("password", body.password.as_deref(), Password::parse);
    let name = f.required("name", body.name.as_deref(), UserName::parse);
    f.finish()?;
    ask(
        &state.users,
        Register {
            email: checked(email)?,
            password: checked(password)?,
            name: checked(name)?,
            role: Role::User,
        },
        StatusCode::CREATED,
        "User registered successfully",
    )
    .await
}

#[derive(Deserialize)]
pub struct ListQuery {
    search: Option<String>,
    #[serde(flatten)]
    page: PageParams,
}

#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "users",
    summary = "List users (admin)",
    params(("search" = Option<String>, Query, max_length = 100, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$", description = "Case-insensitive substring of name or email; at most 100 characters, no control characters"), ("page" = Option<i64>, Query, minimum = 1, maximum = 1000000, description = "v1: page number, from 1"), ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1..100, default 10"), ("cursor" = Option<String>, Query, description = "v2: next_cursor of the previous page (opaque; anything else is 400)")),
    responses((status = 200, description = "List users (admin)", body = crate::http::openapi::ApiResponse<crate::http::openapi::ListPage<crate::models::user::UserView>>), (status = 403, description = "The caller's role is insufficient", body = crate::http::openapi::ErrorResponse)),
    security(("bearer_auth" = []))
)]
pub async fn list(
    state: web::Data<AppState>,
    _admin: Admin,
    version: ApiVersion,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    let query = query.into_inner();
    let page = state
        .cursors
        .page_request(version, &query.page, USERS_CURSOR_SCOPE)?;
    let search = match query.search.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => Some(bounded(s, 1, 100, false).map_err(|e| AppError::invalid_field("search", e))?),
        None => None,
    };
    ask(
        &state.users,
        ListUsers { search, page },
        StatusCode::OK,
        "Users retrieved successfully",
    )
    .await
}

#[utoipa::path(
    get,
    path = "/api/v1/users/{id}",
    tag = "users",
    summary = "A user (self or admin)",
    params(("id" = i64, Path, description = "Resource id")),
    responses((status = 200, description = "A user (self or admin)", body = crate::http::openapi::ApiResponse<crate::models::user::UserView>)),
    security(("bearer_auth" = []))
)]
pub async fn get(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    ask(
        &state.users,
        GetUser { caller, id: *id },
        StatusCode::OK,
        "User retrieved successfully",
    )
    .await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = UserUpdateBody)]
pub struct UpdateBody {
    #[schema(min_length = 2, max_length = 50)]
    name: Option<String>,
    #[schema(format = Email)]
    email: Option<String>,
    /// 8..128 characters with a lowercase letter, an uppercase letter and a digit.
    #[schema(min_length = 8, max_length = 128)]
    password: Option<String>,
    /// Required when changing one's own email or password.
    current_password: Option<String>,
}

#[utoipa::path(
    put,
    path = "/api/v1/users/{id}",
    tag = "users",
    summary = "Update a user (self or admin)",
    params(("id" = i64, Path, description = "Resource id")),
    request_body = UpdateBody,
    responses((status = 200, description = "Update a user (self or admin)", body = crate::http::openapi::ApiResponse<crate::models::user::UserView>), (status = 403, description = "The caller's role is insufficient", body = crate::http::openapi::ErrorResponse), (status = 409, description = "Email already registered", body = crate::http::openapi::ErrorResponse)),
    security(("bearer_auth" = []))
)]
pub async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: AuthUser,
    id: web::Path<i64>,
    body: JsonBody<UpdateBody>,
) -> Result<HttpResponse, AppError> {
    let body = body.0;
    // A password check is a login attempt: it spends the login limit.
    if body.current_password.is_some() {
        count_login(&req).await?;
    }
    let mut f = Fields::new();
    let update = UserUpdate {
        name: f.optional("name", body.name.as_deref(), UserName::parse),
        email: f.optional("email", body.email.as_deref(), Email::parse),
        password: f.optional("password", body.password.as_deref(), Password::parse),
        current_password: body.current_password.filter(|p| p.chars().count() <= 128),
    };
    f.finish()?;
    ask(
        &state.users,
        UpdateUser {
            caller,
            id: *id,
            update,
        },
        StatusCode::OK,
        "User updated successfully",
    )
    .await
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct RoleBody {
    #[schema(value_type = String, required = true, example = "admin", pattern = "^(user|admin|super_admin)$")]
    role: Option<String>,
}

#[utoipa::path(
    put,
    path = "/api/v1/users/{id}/role",
    tag = "users",
    summary = "Change a role (super_admin)",
    params(("id" = i64, Path, description = "Resource id")),
    request_body = RoleBody,
    responses((status = 200, description = "Change a role (super_admin)", body = crate::http::openapi::ApiResponse<crate::models::user::UserView>), (status = 403, description = "The caller's role is insufficient", body = crate::http::openapi::ErrorResponse), (status = 409, description = "Would demote the last super_admin", body = crate::http::openapi::ErrorResponse)),
    security(("bearer_auth" = []))
)]
pub async fn change_role(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<i64>,
    body: JsonBody<RoleBody>,
) -> Result<HttpResponse, AppError> {
    caller.require(Role::SuperAdmin)?;
    let mut f = Fields::new();
    let role = f.required("role", body.0.role.as_deref(), str::parse::<Role>);
    f.finish()?;
    ask(
        &state.users,
        ChangeRole {
            caller,
            id: *id,
            role: checked(role)?,
        },
        StatusCode::OK,
        "User role updated successfully",
    )
    .await
}

#[utoipa::path(
    delete,
    path = "/api/v1/users/{id}",
    tag = "users",
    summary = "Deactivate a user (self or admin)",
    params(("id" = i64, Path, description = "Resource id")),
    responses((status = 200, description = "Deactivate a user (self or admin)", body = crate::http::openapi::EmptyResponse), (status = 403, description = "The caller's role is insufficient", body = crate::http::openapi::ErrorResponse), (status = 409, description = "Would delete the last super_admin", body = crate::http::openapi::ErrorResponse)),
    security(("bearer_auth" = []))
)]
pub async fn delete(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    ask(
        &state.users,
        DeleteUser { caller, id: *id },
        StatusCode::OK,
        "User deleted successfully",
    )
    .await
}
