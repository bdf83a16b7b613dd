//! The root span of every request: request id, method, route, status,
//! latency and (once authenticated) user id. Never headers or bodies.

use actix_web::{
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    Error, HttpMessage,
};
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder};

use super::request_id::RequestId;

pub struct StorefrontRootSpan;

impl RootSpanBuilder for StorefrontRootSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let route = request.match_pattern().unwrap_or_else(|| "unmatched".into());
        tracing::info_span!(
            "http_request",
            request_id = %request_id,
            http.method = %request.method(),
            http.route = %route,
            http.status_code = tracing::field::Empty,
            user_id = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// One log line per request, inside the root span (so it carries the request
/// id, route and user id): status and latency.
pub async fn access_log(
    req: ServiceRequest,
    next: actix_web::middleware::Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let start = std::time::Instant::now();
    let metrics = req
        .app_data::<actix_web::web::Data<crate::http::AppState>>()
        .map(|s| s.metrics.clone());
    let method = req.method().clone();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let res = next.call(req).await?;
    let status = res.status().as_u16();
    let elapsed = start.elapsed().as_secs_f64();
    let latency_ms = elapsed * 1000.0;
    if let Some(m) = metrics {
        m.observe_http(method.as_str(), &route, status, elapsed);
    }
    Span::current().record("latency_ms", latency_ms);
    if status >= 500 {
        tracing::error!(status, latency_ms, "request completed");
    } else {
        tracing::info!(status, latency_ms, "request completed");
    }
    Ok(res)
}
