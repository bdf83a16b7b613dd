//! `/api/v{1,2}/categories`: public reads, admin writes.

use actix_web::{http::StatusCode, web, HttpResponse};
use serde::Deserialize;

use super::ask;
use crate::{
    actors::catalog::{CreateCategory, DeleteCategory, UpdateCategory, CATEGORIES_CURSOR_SCOPE},
    domain::text::bounded,
    error::AppError,
    http::AppState,
    http::{
        envelope,
        extractors::{Admin, JsonBody},
        validate::{checked, Fields},
    },
    models::category::CategoryChanges,
    pagination::{ApiVersion, PageParams},
};

pub fn configure(cfg: &mut web::ServiceConfig, prefix: &str) {
    resource!(cfg, prefix, "/categories", get => list, post => create);
    resource!(cfg, prefix, "/categories/{id}", get => get, put => update, delete => delete);
}

pub fn parse_name(s: &str) -> Result<String, String> {
    bounded(s, 1, 100, false)
}

pub fn parse_description(s: &str) -> Result<String, String> {
    bounded(s, 0, 5000, true)
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CategoryBody {
    /// 1..100 characters; required on create.
    #[schema(
        example = "Books",
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: Option<String>,
    /// `null` clears it on update.
    #[serde(default, deserialize_with = "crate::http::validate::double_option")]
    #[schema(value_type = Option<String>, max_length = 5000, pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$")]
    description: Option<Option<String>>,
}

#[utoipa::path(
    get,
    path = "/api/v1/categories",
    tag = "categories",
    summary = "List categories",
    params(("page" = Option<i64>, Query, minimum = 1, maximum = 1000000, description = "v1: page number, from 1"), ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1..100, default 10"), ("cursor" = Option<String>, Query, description = "v2: next_cursor of the previous page (opaque; anything else is 400)")),
    responses((status = 200, description = "List categories", body = crate::http::openapi::ApiResponse<crate::http::openapi::ListPage<crate::models::category::Category>>))
)]
pub async fn list(
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

#[utoipa::path(
    get,
    path = "/api/v1/categories/{id}",
    tag = "categories",
    summary = "A category",
    params(("id" = i64, Path, description = "Resource id")),
    responses((status = 200, description = "A category", body = crate::http::openapi::ApiResponse<crate::models::category::Category>))
)]
pub async fn get(state: web::Data<AppState>, id: web::Path<i64>) -> Result<HttpResponse, AppError> {
    let category = state.catalog.category_json(*id).await?;
    Ok(envelope::ok_raw("Category retrieved successfully", &category))
}

#[utoipa::path(
    post,
    path = "/api/v1/categories",
    tag = "categories",
    summary = "Create a category (admin)",
    request_body = CategoryBody,
    responses((status = 201, description = "Create a category (admin)", body = crate::http::openapi::ApiResponse<crate::models::category::Category>), (status = 403, description = "The caller's role is insufficient", body = crate::http::openapi::ErrorResponse), (status = 409, description = "Name already taken", body = crate::http::openapi::ErrorResponse)),
    security(("bearer_auth" = []))
)]
pub async fn create(
    state: web::Data<AppState>,
    _admin: Admin,
    body: JsonBody<CategoryBody>,
) -> Result<HttpResponse, AppError> {
    let body = body.0;
    let mut f = Fields::new();
    let name = f.required("name", body.name.as_deref(), parse_name);
    let description = f.optional(
        "description",
        body.description.flatten().as_deref(),
        parse_description,
    );
    f.finish()?;
    ask(
        &state.catalog_writer,
        CreateCategory {
            name: checked(name)?,
            description: description.filter(|d| !d.is_empty()),
        },
        StatusCode::CREATED,
        "Category created successfully",
    )
    .await
}

#[utoipa::path(
    put,
    path = "/api/v1/categories/{id}",
    tag = "categories",
    summary = "Update a category (admin)",
    params(("id" = i64, Path, description = "Resource id")),
    request_body = CategoryBody,
    responses((status = 200, description = "Update a category (admin)", body = crate::http::openapi::ApiResponse<crate::models::category::Category>), (status = 403, description = "The caller's role is insufficient", body = crate::http::openapi::ErrorResponse), (status = 409, description = "Name already taken", body = crate::http::openapi::ErrorResponse)),
    security(("bearer_auth" = []))
)]
pub async fn update(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<i64>,
    body: JsonBody<CategoryBody>,
) -> Result<HttpResponse, AppError> {
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
    ask(
        &state.catalog_writer,
        UpdateCategory {
            id: *id,
            changes: CategoryChanges { name, description },
        },
        StatusCode::OK,
        "Category updated successfully",
    )
    .await
}

#[utoipa::path(
    delete,
    path = "/api/v1/categories/{id}",
    tag = "categories",
    summary = "Delete a category (admin)",
    params(("id" = i64, Path, description = "Resource id")),
    responses((status = 200, description = "Delete a category (admin)", body = crate::http::openapi::EmptyResponse), (status = 403, description = "The caller's role is insufficient", body = crate::http::openapi::ErrorResponse), (status = 409, description = "Products still use it", body = crate::http::openapi::ErrorResponse)),
    security(("bearer_auth" = []))
)]
pub async fn delete(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    ask(
        &state.catalog_writer,
        DeleteCategory { id: *id },
        StatusCode::OK,
        "Category deleted successfully",
    )
    .await
}
