//! `/api/v{1,2}/categories`: public reads, admin writes.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::{
    actors::catalog::{CreateCategory, DeleteCategory, UpdateCategory, CATEGORIES_CURSOR_SCOPE},
    auth::AuthUser,
    domain::{text::bounded, Role},
    error::AppError,
    http::{
        envelope,
        extractors::JsonBody,
        validate::{checked, Fields},
    },
    models::category::CategoryChanges,
    pagination::{ApiVersion, PageParams},
    startup::AppState,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/categories")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        web::resource("/categories/{id}")
            .route(web::get().to(get))
            .route(web::put().to(update))
            .route(web::delete().to(delete)),
    );
}

pub fn parse_name(s: &str) -> Result<String, String> {
    bounded(s, 1, 100, false)
}

pub fn parse_description(s: &str) -> Result<String, String> {
    bounded(s, 0, 5000, true)
}

#[derive(Deserialize)]
pub struct CategoryBody {
    name: Option<String>,
    /// `null` clears it on update.
    #[serde(default, deserialize_with = "crate::http::validate::double_option")]
    description: Option<Option<String>>,
}

async fn list(
    state: web::Data<AppState>,
    version: ApiVersion,
    query: web::Query<PageParams>,
) -> Result<HttpResponse, AppError> {
    let page = state
        .cursors
        .page_request(version, &query, CATEGORIES_CURSOR_SCOPE)?;
    let categories = state.catalog.categories_json(page).await?;
    Ok(envelope::ok_raw("Categories retrieved successfully", &categories))
}

async fn get(state: web::Data<AppState>, id: web::Path<i64>) -> Result<HttpResponse, AppError> {
    let category = state.catalog.category_json(*id).await?;
    Ok(envelope::ok_raw("Category retrieved successfully", &category))
}

async fn create(
    state: web::Data<AppState>,
    caller: AuthUser,
    body: JsonBody<CategoryBody>,
) -> Result<HttpResponse, AppError> {
    caller.require(Role::Admin)?;
    let body = body.0;
    let mut f = Fields::new();
    let name = f.required("name", body.name.as_deref(), parse_name);
    let description = f.optional(
        "description",
        body.description.flatten().as_deref(),
        parse_description,
    );
    f.finish()?;
    let category = state
        .catalog_writer
        .send(CreateCategory {
            name: checked(name)?,
            description: description.filter(|d| !d.is_empty()),
        })
        .await??;
    Ok(envelope::created("Category created successfully", category))
}

async fn update(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<i64>,
    body: JsonBody<CategoryBody>,
) -> Result<HttpResponse, AppError> {
    caller.require(Role::Admin)?;
    let body = body.0;
    let mut f = Fields::new();
    let name = f.optional("name", body.name.as_deref(), parse_name);
    let description = match body.description {
        None => None,
        Some(None) => Some(None),
        Some(Some(d)) => f
            .optional("description", Some(&d), parse_description)
            .map(|d| Some(d).filter(|d| !d.is_empty())),
    };
    f.finish()?;
    let category = state
        .catalog_writer
        .send(UpdateCategory {
            id: *id,
            changes: CategoryChanges { name, description },
        })
        .await??;
    Ok(envelope::ok("Category updated successfully", category))
}

async fn delete(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    caller.require(Role::Admin)?;
    state.catalog_writer.send(DeleteCategory { id: *id }).await??;
    Ok(envelope::ok(
        "Category deleted successfully",
        serde_json::Value::Null,
    ))
}
