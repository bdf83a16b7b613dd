//! The OpenAPI 3.1 document, generated from the handlers' annotations.
//!
//! Handlers are annotated once, under `/api/v1`; `spec()` then mounts every
//! operation under `/api/v2` and `/api` too (their list endpoints answer with
//! keyset pages), and adds the error responses every operation shares, so the
//! document and the router cannot drift (see `tests/api/docs.rs`).

use serde::Serialize;
use utoipa::{
    openapi::{
        path::Operation,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
        ContentBuilder, PathItem, Ref, ResponseBuilder,
    },
    Modify, OpenApi, ToSchema,
};

use crate::{
    actors::{inventory::StockLevel, user::TokenPair},
    error::FieldError,
    http::routes,
    models::{
        category::Category,
        order::{OrderItem, OrderView},
        product::Product,
        reservation::{ReservationItem, ReservationView},
        user::UserView,
    },
};

/// The success envelope.
#[derive(Serialize, ToSchema)]
pub struct ApiResponse<T> {
    #[schema(example = true)]
    pub success: bool,
    pub message: String,
    pub data: T,
    #[schema(example = "2026-11-24T10:00:00Z")]
    pub timestamp: String,
    #[serde(rename = "statusCode")]
    #[schema(example = 200)]
    pub status_code: u16,
}

/// The error envelope: `errors` names every offending field, or is null.
#[derive(Serialize, ToSchema)]
pub struct ErrorResponse {
    #[schema(example = false)]
    pub success: bool,
    pub message: String,
    pub errors: Option<Vec<FieldError>>,
    pub timestamp: String,
    #[serde(rename = "statusCode")]
    pub status_code: u16,
}

/// v1 list page (offset).
#[derive(Serialize, ToSchema)]
pub struct OffsetPage<T> {
    pub items: Vec<T>,
    pub page: i64,
    pub limit: i64,
    pub total: i64,
}

/// v2 list page (keyset); pass `next_cursor` back as `cursor`.
#[derive(Serialize, ToSchema)]
pub struct KeysetPage<T> {
    pub items: Vec<T>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A list page: offset-paged under `/api/v1`, keyset-paged under `/api/v2`
/// and `/api`.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum ListPage<T> {
    Offset(OffsetPage<T>),
    Keyset(KeysetPage<T>),
}

/// A success envelope whose `data` is null (deletes, logout).
#[derive(Serialize, ToSchema)]
pub struct EmptyResponse {
    pub success: bool,
    pub message: String,
    #[schema(value_type = Option<Object>)]
    pub data: Option<()>,
    pub timestamp: String,
    #[serde(rename = "statusCode")]
    pub status_code: u16,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "storefront",
        description = "E-commerce REST backend. Every /api response uses the envelope; money is a string \
                       with two decimals; /api/v1 lists are offset-paged, /api/v2 and /api keyset-paged.",
        version = env!("CARGO_PKG_VERSION")
    ),
    paths(
        routes::auth::login,
        routes::auth::refresh,
        routes::auth::logout,
        routes::auth::me,
        routes::users::register,
        routes::users::list,
        routes::users::get,
        routes::users::update,
        routes::users::change_role,
        routes::users::delete,
        routes::categories::list,
        routes::categories::get,
        routes::categories::create,
        routes::categories::update,
        routes::categories::delete,
        routes::products::list,
        routes::products::get,
        routes::products::create,
        routes::products::update,
        routes::products::delete,
        routes::products::adjust_stock,
        routes::orders::place,
        routes::orders::list,
        routes::orders::get,
        routes::orders::cancel,
        routes::orders::change_status,
        routes::reservations::create,
        routes::reservations::list,
        routes::reservations::get,
        routes::reservations::confirm,
        routes::reservations::release,
        routes::webhooks::create,
        routes::webhooks::list,
        routes::webhooks::get,
        routes::webhooks::update,
        routes::webhooks::delete,
        routes::webhooks::rotate_secret,
        routes::webhooks::ping,
        routes::webhooks::deliveries,
        routes::oauth::start,
        routes::oauth::callback,
        routes::health::live,
        routes::health::ready,
        routes::health::metrics,
        routes::health::bare,
    ),
    components(schemas(
        ErrorResponse,
        FieldError,
        UserView,
        TokenPair,
        Category,
        Product,
        OrderView,
        OrderItem,
        ReservationView,
        ReservationItem,
        StockLevel,
    )),
    modifiers(&Security),
    tags(
        (name = "auth"), (name = "users"), (name = "categories"), (name = "products"),
        (name = "orders"), (name = "reservations"), (name = "webhooks"), (name = "operations")
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer_auth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

fn error(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorResponse")))
                .build(),
        )
        .build()
}

/// Adds the error responses an operation can always give.
fn add_common_errors(path: &str, op: &mut Operation) {
    let responses = &mut op.responses.responses;
    let mut add = |code: &str, description: &str| {
        responses
            .entry(code.to_owned())
            .or_insert_with(|| error(description).into());
    };
    add(
        "400",
        "Validation failed (every offending field is named), or a malformed request",
    );
    if op.request_body.is_some() {
        add("413", "Body larger than server.json_limit");
        add("415", "Body is not application/json");
    }
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    if secured {
        add(
            "401",
            "Token missing, malformed, expired or with a bad signature; sends WWW-Authenticate: Bearer",
        );
    }
    if path.contains('{') {
        add("404", "No such resource, or one the caller may not see");
    }
    add("429", "Rate limited; sends Retry-After and RateLimit-* headers");
    add("503", "Database unavailable; sends Retry-After");
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .flatten()
}

fn drop_parameter(op: &mut Operation, name: &str) {
    if let Some(params) = &mut op.parameters {
        params.retain(|p| p.name != name);
    }
}

/// One API version's document, for the interactive docs: the operations
/// under `prefix` (`/api/v1/` or `/api/v2/`) and the version-independent ones
/// (health, metrics, OAuth), each once. Unversioned `/api/...` is v2.
pub fn version_spec(full: &utoipa::openapi::OpenApi, prefix: &str, title: &str) -> utoipa::openapi::OpenApi {
    let mut doc = full.clone();
    doc.paths
        .paths
        .retain(|path, _| path.starts_with(prefix) || !path.starts_with("/api/"));
    doc.info.title = title.to_owned();
    doc
}

/// The whole document: every route, v1, v2 and unversioned.
pub fn spec() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    // Handler names repeat across modules: qualify operation ids by tag.
    for item in doc.paths.paths.values_mut() {
        for op in operations(item) {
            let tag = op
                .tags
                .as_ref()
                .and_then(|t| t.first())
                .cloned()
                .unwrap_or_default();
            if let Some(id) = &mut op.operation_id {
                *id = format!("{tag}_{id}");
            }
        }
    }
    let v1: Vec<(String, PathItem)> = doc
        .paths
        .paths
        .iter()
        .filter(|(p, _)| p.starts_with("/api/v1/"))
        .map(|(p, i)| (p.clone(), i.clone()))
        .collect();
    for (path, mut item) in v1 {
        for (prefix, suffix) in [("/api/v2/", "_v2"), ("/api/", "_latest")] {
            let mut copy = item.clone();
            for op in operations(&mut copy) {
                if let Some(id) = &mut op.operation_id {
                    id.push_str(suffix);
                }
                // Keyset pages: `page` means nothing there.
                drop_parameter(op, "page");
            }
            doc.paths.paths.insert(path.replacen("/api/v1/", prefix, 1), copy);
        }
        // Offset pages: `cursor` means nothing under v1, and `page` stops
        // at `pagination::MAX_OFFSET_ROWS` (one rule for every list).
        for op in operations(&mut item) {
            drop_parameter(op, "cursor");
            for p in op.parameters.iter_mut().flatten().filter(|p| p.name == "page") {
                p.description = Some(format!(
                    "v1: page number, from 1. (page - 1) * limit must stay below {}: deeper pages are a \
                     400 (\"{}\")",
                    crate::pagination::MAX_OFFSET_ROWS,
                    crate::pagination::MAX_OFFSET_MESSAGE
                ));
            }
        }
        doc.paths.paths.insert(path, item);
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        if path.starts_with("/api/") {
            for op in operations(item) {
                add_common_errors(path, op);
            }
        }
    }
    doc
}
