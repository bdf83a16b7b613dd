//! `/api/v{1,2}/users`: registration and user management.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::{
    actors::user::{
        ChangeRole, DeleteUser, GetUser, ListUsers, Register, UpdateUser, UserUpdate, USERS_CURSOR_SCOPE,
    },
    auth::AuthUser,
    domain::{Email, Password, Role, UserName},
    error::AppError,
    http::{
        envelope,
        extractors::JsonBody,
        validate::{checked, Fields},
    },
    pagination::{ApiVersion, PageParams},
    startup::AppState,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/users")
            .route(web::post().to(register))
            .route(web::get().to(list)),
    )
    .service(
        web::resource("/users/{id}")
            .route(web::get().to(get))
            .route(web::put().to(update))
            .route(web::delete().to(delete)),
    )
    .service(web::resource("/users/{id}/role").route(web::put().to(change_role)));
}

#[derive(Deserialize)]
pub struct RegisterBody {
    email: Option<String>,
    password: Option<String>,
    name: Option<String>,
}

async fn register(
    state: web::Data<AppState>,
    body: JsonBody<RegisterBody>,
) -> Result<HttpResponse, AppError> {
    let body = body.0;
    let mut f = Fields::new();
    let email = f.required("email", body.email.as_deref(), Email::parse);
    let password = f.required("password", body.password.as_deref(), Password::parse);
    let name = f.required("name", body.name.as_deref(), UserName::parse);
    f.finish()?;
    let user = state
        .users
        .send(Register {
            email: checked(email)?,
            password: checked(password)?,
            name: checked(name)?,
            role: Role::User,
        })
        .await??;
    Ok(envelope::created("User registered successfully", user))
}

#[derive(Deserialize)]
pub struct ListQuery {
    search: Option<String>,
    #[serde(flatten)]
    page: PageParams,
}

async fn list(
    state: web::Data<AppState>,
    caller: AuthUser,
    version: ApiVersion,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    caller.require(Role::Admin)?;
    let query = query.into_inner();
    let page = state
        .cursors
        .page_request(version, &query.page, USERS_CURSOR_SCOPE)?;
    let search = query
        .search
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    if search.as_ref().is_some_and(|s| s.chars().count() > 100) {
        return Err(AppError::invalid_field(
            "search",
            "must be at most 100 characters",
        ));
    }
    let users = state.users.send(ListUsers { search, page }).await??;
    Ok(envelope::ok("Users retrieved successfully", users))
}

async fn get(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let user = state.users.send(GetUser { caller, id: *id }).await??;
    Ok(envelope::ok("User retrieved successfully", user))
}

#[derive(Deserialize)]
pub struct UpdateBody {
    name: Option<String>,
    email: Option<String>,
    password: Option<String>,
    current_password: Option<String>,
}

async fn update(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<i64>,
    body: JsonBody<UpdateBody>,
) -> Result<HttpResponse, AppError> {
    let body = body.0;
    let mut f = Fields::new();
    let update = UserUpdate {
        name: f.optional("name", body.name.as_deref(), UserName::parse),
        email: f.optional("email", body.email.as_deref(), Email::parse),
        password: f.optional("password", body.password.as_deref(), Password::parse),
        current_password: body.current_password.filter(|p| p.chars().count() <= 128),
    };
    f.finish()?;
    let user = state
        .users
        .send(UpdateUser {
            caller,
            id: *id,
            update,
        })
        .await??;
    Ok(envelope::ok("User updated successfully", user))
}

#[derive(Deserialize)]
pub struct RoleBody {
    role: Option<String>,
}

async fn change_role(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<i64>,
    body: JsonBody<RoleBody>,
) -> Result<HttpResponse, AppError> {
    caller.require(Role::SuperAdmin)?;
    let mut f = Fields::new();
    let role = f.required("role", body.0.role.as_deref(), str::parse::<Role>);
    f.finish()?;
    let user = state
        .users
        .send(ChangeRole {
            caller,
            id: *id,
            role: checked(role)?,
        })
        .await??;
    Ok(envelope::ok("User role updated successfully", user))
}

async fn delete(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    state.users.send(DeleteUser { caller, id: *id }).await??;
    Ok(envelope::ok("User deleted successfully", serde_json::Value::Null))
}
