//! Routes, one file per URL prefix. `/api/v1`, `/api/v2` and `/api` (latest)
//! serve the same resources; only list endpoints differ by version.
//!
//! Every route is registered through `resource!`, which also records it, so
//! a test can hold the router against the OpenAPI document.

use std::{collections::BTreeSet, sync::Mutex};

use actix_web::web;

use crate::pagination::ApiVersion;

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
pub mod users;

/// Every `/api` resource, registered once per version prefix. The router
/// tries resources in this order and every `{id}` pattern before a match
/// costs a regex run, so the hot ones (orders, products) come first.
fn api(cfg: &mut web::ServiceConfig, prefix: &str) {
    orders::configure(cfg, prefix);
    products::configure(cfg, prefix);
    auth::configure(cfg, prefix);
    categories::configure(cfg, prefix);
    users::configure(cfg, prefix);
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
    cfg.service(
        utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", crate::http::openapi::spec()),
    );
}
