//! `/health/live`, `/health/ready` and `/metrics` (outside the envelope).

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::{
    actors::{cache::CheckRedis, user::Ping},
    http::AppState,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    resource!(cfg, "", "/health/live", get => live);
    resource!(cfg, "", "/health/ready", get => ready);
    resource!(cfg, "", "/metrics", get => metrics);
    resource!(cfg, "", "/bench/bare", get => bare);
}

/// A bare JSON endpoint with no database, cache or actor behind it: the
/// baseline the load tester compares cached reads with. 404 unless
/// `server.bench_endpoints` is on.
#[utoipa::path(get, path = "/bench/bare", tag = "operations", summary = "Bare JSON baseline for benchmarks",
    responses((status = 200, description = "Only with server.bench_endpoints = true", body = Object),
              (status = 404, description = "Disabled (the default)")))]
pub async fn bare(state: web::Data<AppState>) -> HttpResponse {
    if !state.bench_endpoints {
        return HttpResponse::NotFound().finish();
    }
    HttpResponse::Ok().json(json!({"success": true, "message": "ok", "data": {"id": 1, "name": "bare"}}))
}

/// Prometheus text format (outside the envelope). With `metrics.bearer_token`
/// set, only for `Authorization: Bearer <that token>`.
#[utoipa::path(get, path = "/metrics", tag = "operations", summary = "Prometheus metrics", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"), (status = 401, description = "metrics.bearer_token is set and the request does not carry it")))]
pub async fn metrics(state: web::Data<AppState>, req: actix_web::HttpRequest) -> HttpResponse {
    if let Some(expected) = state.metrics_token {
        use sha2::Digest;
        let given = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| <[u8; 32]>::from(sha2::Sha256::digest(t.trim().as_bytes())));
        if given != Some(expected) {
            return HttpResponse::Unauthorized()
                .insert_header((actix_web::http::header::WWW_AUTHENTICATE, "Bearer"))
                .finish();
        }
    }
    HttpResponse::Ok()
        .content_type(prometheus::TEXT_FORMAT)
        .body(state.metrics.render())
}

#[utoipa::path(get, path = "/health/live", tag = "operations", summary = "Liveness", responses((status = 200, description = "The process is up", body = Object, example = json!({"status": "up"}))))]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "up"}))
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[utoipa::path(get, path = "/health/ready", tag = "operations", summary = "Readiness (database and Redis)", responses((status = 200, description = "Ready", body = Object, example = json!({"status": "up", "checks": {"database": "up", "redis": "disabled"}})), (status = 503, description = "A dependency is down", body = Object)))]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
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
