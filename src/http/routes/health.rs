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
/// set, only for `Authorization: Bearer <that token>`. With Redis configured,
/// `storefront_redis_up` is the state the CacheActor's probe (every second)
/// and the request path last saw.
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
    if state.cache_actor.is_some() {
        state.metrics.set_redis_up(state.redis_health.is_up());
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

/// Readiness: the database alone decides it. Without Redis the service keeps
/// working (catalog reads from the database, in-process rate limits), so an
/// unreachable Redis makes the answer `degraded`, still 200: taking every
/// instance out of the load balancer for it would turn a slower service into
/// none.
#[utoipa::path(get, path = "/health/ready", tag = "operations", summary = "Readiness (the database decides; Redis is reported)",
    responses(
        (status = 200, description = "Ready. `status` is `degraded` while Redis is configured but unreachable \
            (cache and rate limits run in process)", body = Object, examples(
            ("up" = (summary = "Every dependency up", value = json!({"status": "up", "checks": {"database": "up", "redis": "up"}}))),
            ("without_redis" = (summary = "Redis not configured", value = json!({"status": "up", "checks": {"database": "up", "redis": "disabled"}}))),
            ("degraded" = (summary = "Redis unreachable", value = json!({"status": "degraded", "checks": {"database": "up", "redis": "down"}})))
        )),
        (status = 503, description = "The database is down", body = Object,
            example = json!({"status": "down", "checks": {"database": "down", "redis": "up"}}))))]
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
    let status = match (database, redis) {
        (false, _) => "down",
        (true, "down") => "degraded",
        (true, _) => "up",
    };
    let body = json!({
        "status": status,
        "checks": {"database": if database { "up" } else { "down" }, "redis": redis},
    });
    if database {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "5"))
            .json(body)
    }
}
