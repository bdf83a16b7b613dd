//! Routes, one file per URL prefix. `/api/v1`, `/api/v2` and `/api` (latest)
//! serve the same resources; only list endpoints differ by version.
//!
//! Every route is registered through `resource!`, which also records it, so
//! a test can hold the router against the OpenAPI document.

use std::{collections::BTreeSet, sync::Mutex};

use actix_web::web;

use actix::{dev::ToEnvelope, Actor, Addr, Handler, Message};
use actix_web::{http::StatusCode, HttpResponse};
use serde::Serialize;

use crate::{
    error::AppError,
    http::{envelope, openapi},
    pagination::ApiVersion,
};

/// The tail every handler shares: send `msg` to `actor`, wrap its answer in a
/// success envelope with `status` and `message`.
pub async fn ask<A, M, T>(
    actor: &Addr<A>,
    msg: M,
    status: StatusCode,
    message: &str,
) -> Result<HttpResponse, AppError>
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Message<Result = Result<T, AppError>> + Send + 'static,
    T: Serialize + Send + 'static,
{
    let data = actor.send(msg).await??;
    Ok(envelope::respond(status, message, data))
}

static REGISTERED: Mutex<BTreeSet<(String, String)>> = Mutex::new(BTreeSet::new());

/// Records `METHOD path` (called by `resource!`).
pub fn record(method: &str, path: &str) {
    if let Ok(mut r) = REGISTERED.lock() {
        r.insert((method.to_uppercase(), path.to_owned()));
    }
}

/// Every `(METHOD, path)` registered so far by any application.
pub fn registered() -> Vec<(String, String)> {
    REGISTERED
        .lock()
        .map(|r| r.iter().cloned().collect())
        .unwrap_or_default()
}

/// `resource!(cfg, prefix, "/path", get => handler, post => other)`.
macro_rules! resource {
    ($cfg:expr, $prefix:expr, $path:literal, $($method:ident => $handler:expr),+ $(,)?) => {{
        $( $crate::http::routes::record(stringify!($method), &format!("{}{}", $prefix, $path)); )+
        $cfg.service(::actix_web::web::resource($path)$(.route(::actix_web::web::$method().to($handler)))+);
    }};
}

pub mod auth;
pub mod categories;
pub mod health;
pub mod oauth;
pub mod orders;
pub mod products;
pub mod reservations;
pub mod users;
pub mod webhooks;

/// Every `/api` resource, registered once per version prefix. The router
/// tries resources in this order and every `{id}` pattern before a match
/// costs a regex run, so the hot ones (orders, products) come first.
fn api(cfg: &mut web::ServiceConfig, prefix: &str) {
    orders::configure(cfg, prefix);
    products::configure(cfg, prefix);
    reservations::configure(cfg, prefix);
    auth::configure(cfg, prefix);
    categories::configure(cfg, prefix);
    users::configure(cfg, prefix);
    webhooks::configure(cfg, prefix);
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    health::configure(cfg);
    oauth::configure(cfg);
    for (prefix, version) in [
        ("/api/v1", ApiVersion::V1),
        ("/api/v2", ApiVersion::V2),
        ("/api", ApiVersion::V2),
    ] {
        cfg.service(
            web::scope(prefix)
                .app_data(version)
                .configure(move |c| api(c, prefix)),
        );
    }
    // The document and its interactive viewer (served from the binary).
    cfg.service(web::resource("/docs").to(|| async {
        actix_web::HttpResponse::Found()
            .insert_header((actix_web::http::header::LOCATION, "/docs/"))
            .finish()
    }));
    // `/openapi.json` covers every route, for tools; /docs shows one document
    // per version, with Swagger UI's selector.
    let full = openapi::spec();
    let full_json = full.to_json().unwrap_or_default();
    cfg.service(web::resource("/openapi.json").to(move || {
        let body = full_json.clone();
        async move {
            actix_web::HttpResponse::Ok()
                .content_type(actix_web::http::header::ContentType::json())
                .body(body)
        }
    }));
    cfg.service(
        utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}")
            .url(
                utoipa_swagger_ui::Url::new("v2 (/api/v2, and /api)", "/openapi/v2.json"),
                openapi::version_spec(&full, "/api/v2/", "storefront API v2"),
            )
            .url(
                utoipa_swagger_ui::Url::new("v1 (/api/v1)", "/openapi/v1.json"),
                openapi::version_spec(&full, "/api/v1/", "storefront API v1"),
            ),
    );
}
