//! `/health/live`, `/health/ready` and `/metrics` (outside the envelope).

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::{
    actors::{cache::CheckRedis, user::Ping},
    startup::AppState,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/health/live").route(web::get().to(live)))
        .service(web::resource("/health/ready").route(web::get().to(ready)))
        .service(web::resource("/metrics").route(web::get().to(metrics)));
}

/// Prometheus text format (outside the envelope).
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(prometheus::TEXT_FORMAT)
        .body(state.metrics.render())
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "up"}))
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let database = matches!(
        tokio::time::timeout(CHECK_TIMEOUT, state.users.send(Ping)).await,
        Ok(Ok(Ok(())))
    );
    let redis = match &state.cache_actor {
        None => "disabled",
        Some(cache) => match tokio::time::timeout(CHECK_TIMEOUT, cache.send(CheckRedis)).await {
            Ok(Ok(true)) => "up",
            _ => "down",
        },
    };
    let up = database && redis != "down";
    let body = json!({
        "status": if up { "up" } else { "down" },
        "checks": {"database": if database { "up" } else { "down" }, "redis": redis},
    });
    if up {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "5"))
            .json(body)
    }
}
