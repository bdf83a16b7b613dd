//! Routes, one file per URL prefix. `/api/v1`, `/api/v2` and `/api` (latest)
//! serve the same resources; only list endpoints differ by version.

pub mod auth;
pub mod categories;
pub mod health;
pub mod orders;
pub mod products;
pub mod users;

use actix_web::web;

use crate::pagination::ApiVersion;

/// Every `/api` resource, registered once per version prefix.
fn api(cfg: &mut web::ServiceConfig) {
    auth::configure(cfg);
    users::configure(cfg);
    categories::configure(cfg);
    products::configure(cfg);
    orders::configure(cfg);
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    health::configure(cfg);
    for (prefix, version) in [
        ("/api/v1", ApiVersion::V1),
        ("/api/v2", ApiVersion::V2),
        ("/api", ApiVersion::V2),
    ] {
        cfg.service(web::scope(prefix).app_data(version).configure(api));
    }
}
