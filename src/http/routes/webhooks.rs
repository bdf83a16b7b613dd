//! `/api/v{1,2}/webhooks`: webhook endpoints (admin only), their secrets,
//! pings and deliveries. Everything goes to the WebhookActor.

use actix_web::{http::StatusCode, web, HttpResponse};
use serde::Deserialize;

use super::{ask, categories::parse_description};
use crate::{
    actors::events::{
        target,
        webhooks::{
            CreateEndpoint, DeleteEndpoint, GetEndpoint, ListAttempts, ListEndpoints, Ping, RotateSecret,
            UpdateEndpoint, ATTEMPTS_CURSOR_SCOPE, ENDPOINTS_CURSOR_SCOPE,
        },
    },
    domain::EventType,
    error::AppError,
    http::{
        extractors::{Admin, JsonBody},
        validate::{checked, Fields},
        AppState,
    },
    models::webhook::{type_names, EndpointChanges},
    pagination::{ApiVersion, PageParams},
};

pub fn configure(cfg: &mut web::ServiceConfig, prefix: &str) {
    resource!(cfg, prefix, "/webhooks", post => create, get => list);
    resource!(cfg, prefix, "/webhooks/{id}", get => get, put => update, delete => delete);
    resource!(cfg, prefix, "/webhooks/{id}/rotate-secret", post => rotate_secret);
    resource!(cfg, prefix, "/webhooks/{id}/ping", post => ping);
    resource!(cfg, prefix, "/webhooks/{id}/deliveries", get => deliveries);
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct WebhookBody {
    /// `http(s)` URL the events are POSTed to; required on create. Loopback,
    /// private and link-local addresses are refused unless
    /// `webhooks.allow_private_targets`.
    #[schema(
        example = "https://erp.example.com/hooks/storefront",
        min_length = 1,
        max_length = 2048
    )]
    url: Option<String>,
    /// Event types to receive (at least one); required on create.
    #[schema(min_items = 1)]
    events: Option<Vec<EventType>>,
    /// `null` clears it on update.
    #[serde(default, deserialize_with = "crate::http::validate::double_option")]
    #[schema(value_type = Option<String>, max_length = 5000, pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$")]
    description: Option<Option<String>>,
    /// Update only (ignored on create): an inactive endpoint gets no new
    /// events, and its pending deliveries wait until it is active again.
    is_active: Option<bool>,
}

/// Checks a URL, when present: syntax, scheme, and (unless private targets
/// are allowed) that neither it nor what its name resolves to is a private
/// address. Async (DNS), so it runs before the body's `Fields`.
async fn parse_url(raw: Option<&str>, allow_private: bool) -> Option<Result<String, String>> {
    Some(check_url(raw?, allow_private).await)
}

async fn check_url(raw: &str, allow_private: bool) -> Result<String, String> {
    if raw.len() > 2048 {
        return Err("must be at most 2048 characters".into());
    }
    let url = target::parse_url(raw, allow_private)?;
    if !allow_private {
        if let Some(url::Host::Domain(name)) = url.host() {
            target::resolves_publicly(name, url.port_or_known_default().unwrap_or(443)).await?;
        }
    }
    Ok(url.to_string())
}

fn parse_events(events: Vec<EventType>) -> Result<Vec<EventType>, &'static str> {
    let mut v = events;
    v.sort_by_key(|t| t.as_str());
    v.dedup();
    if v.is_empty() {
        return Err("must name at least one event type");
    }
    Ok(v)
}

#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    summary = "Create a webhook endpoint (admin)",
    description = "Answers the endpoint with its signing `secret` (`whsec_` + base64 of 32 random bytes), shown only here. Every event of a subscribed type written from now on is POSTed to `url`, signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).",
    request_body = WebhookBody,
    responses((status = 201, description = "The endpoint and its secret", body = crate::http::openapi::ApiResponse<crate::models::webhook::CreatedEndpoint>), (status = 400, description = "Bad url (not http(s), or a private address) or unknown event types", body = crate::http::openapi::ErrorResponse), (status = 403, description = "The caller's role is insufficient", body = crate::http::openapi::ErrorResponse)),
    security(("bearer_auth" = []))
)]
pub async fn create(
    state: web::Data<AppState>,
    _admin: Admin,
    body: JsonBody<WebhookBody>,
) -> Result<HttpResponse, AppError> {
    let body = body.0;
    let url = parse_url(body.url.as_deref(), state.allow_private_targets).await;
    let mut f = Fields::new();
    let url = f.required_parsed("url", url);
    let events = f.required_parsed("events", body.events.map(parse_events));
    let description = f.optional(
        "description",
        body.description.flatten().as_deref(),
        parse_description,
    );
    f.finish()?;
    ask(
        &state.webhooks,
        CreateEndpoint {
            url: checked(url)?,
            events: checked(events)?,
            description: description.filter(|d| !d.is_empty()),
        },
        StatusCode::CREATED,
        "Webhook created successfully",
    )
    .await
}

#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    summary = "List webhook endpoints (admin)",
    description = "Newest first; never the secrets.",
    params(("page" = Option<i64>, Query, minimum = 1, maximum = 1000000, description = "v1: page number, from 1"), ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1..100, default 10"), ("cursor" = Option<String>, Query, description = "v2: next_cursor of the previous page (opaque; anything else is 400)")),
    responses((status = 200, description = "A page of endpoints", body = crate::http::openapi::ApiResponse<crate::http::openapi::ListPage<crate::models::webhook::EndpointView>>), (status = 403, description = "The caller's role is insufficient", body = crate::http::openapi::ErrorResponse)),
    security(("bearer_auth" = []))
)]
pub async fn list(
    state: web::Data<AppState>,
    _admin: Admin,
    version: ApiVersion,
    query: web::Query<PageParams>,
) -> Result<HttpResponse, AppError> {
    let page = state
        .cursors
        .page_request(version, &query, ENDPOINTS_CURSOR_SCOPE)?;
    ask(
        &state.webhooks,
        ListEndpoints { page },
        StatusCode::OK,
        "Webhooks retrieved successfully",
    )
    .await
}

#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "A webhook endpoint (admin)",
    params(("id" = i64, Path, description = "Resource id")),
    responses((status = 200, description = "The endpoint, without its secret", body = crate::http::openapi::ApiResponse<crate::models::webhook::EndpointView>), (status = 403, description = "The caller's role is insufficient", body = crate::http::openapi::ErrorResponse), (status = 404, description = "No such endpoint", body = crate::http::openapi::ErrorResponse)),
    security(("bearer_auth" = []))
)]
pub async fn get(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    ask(
        &state.webhooks,
        GetEndpoint { id: *id },
        StatusCode::OK,
        "Webhook retrieved successfully",
    )
    .await
}

#[utoipa::path(
    put,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "Update a webhook endpoint (admin)",
    description = "Any of `url`, `events`, `description`, `is_active`. Events written after the change are delivered per the new settings; deliveries already queued keep their endpoint (and go to its new url).",
    params(("id" = i64, Path, description = "Resource id")),
    request_body = WebhookBody,
    responses((status = 200, description = "The endpoint, without its secret", body = crate::http::openapi::ApiResponse<crate::models::webhook::EndpointView>), (status = 400, description = "Bad url or unknown event types", body = crate::http::openapi::ErrorResponse), (status = 403, description = "The caller's role is insufficient", body = crate::http::openapi::ErrorResponse), (status = 404, description = "No such endpoint", body = crate::http::openapi::ErrorResponse)),
    security(("bearer_auth" = []))
)]
pub async fn update(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<i64>,
    body: JsonBody<WebhookBody>,
) -> Result<HttpResponse, AppError> {
    let body = body.0;
    let url = parse_url(body.url.as_deref(), state.allow_private_targets).await;
    let mut f = Fields::new();
    let url = f.optional_parsed("url", url);
    let events = f.optional_parsed("events", body.events.map(parse_events));
    let description = match body.description {
        None => None,
        Some(None) => Some(None),
        Some(Some(d)) => f
            .optional("description", Some(&d), parse_description)
            .map(|d| Some(d).filter(|d| !d.is_empty())),
    };
    f.finish()?;
    let changes = EndpointChanges {
        url,
        events: events.as_deref().map(type_names),
        description,
        is_active: body.is_active,
    };
    ask(
        &state.webhooks,
        UpdateEndpoint { id: *id, changes },
        StatusCode::OK,
        "Webhook updated successfully",
    )
    .await
}

#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "Delete a webhook endpoint (admin)",
    description = "A hard delete, with its pending deliveries and its attempts: nothing more is delivered to it.",
    params(("id" = i64, Path, description = "Resource id")),
    responses((status = 200, description = "Deleted", body = crate::http::openapi::EmptyResponse), (status = 403, description = "The caller's role is insufficient", body = crate::http::openapi::ErrorResponse), (status = 404, description = "No such endpoint", body = crate::http::openapi::ErrorResponse)),
    security(("bearer_auth" = []))
)]
pub async fn delete(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    ask(
        &state.webhooks,
        DeleteEndpoint { id: *id },
        StatusCode::OK,
        "Webhook deleted successfully",
    )
    .await
}

#[utoipa::path(
    post,
    path = "/api/v1/webhooks/{id}/rotate-secret",
    tag = "webhooks",
    summary = "Rotate a webhook endpoint's secret (admin)",
    description = "Answers the new secret, shown only here. Every attempt from now on, retries of earlier events included, is signed with it; the old one stops signing at once.",
    params(("id" = i64, Path, description = "Resource id")),
    responses((status = 200, description = "The new secret", body = crate::http::openapi::ApiResponse<crate::models::webhook::Secret>), (status = 403, description = "The caller's role is insufficient", body = crate::http::openapi::ErrorResponse), (status = 404, description = "No such endpoint", body = crate::http::openapi::ErrorResponse)),
    security(("bearer_auth" = []))
)]
pub async fn rotate_secret(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    ask(
        &state.webhooks,
        RotateSecret { id: *id },
        StatusCode::OK,
        "Webhook secret rotated successfully",
    )
    .await
}

#[utoipa::path(
    post,
    path = "/api/v1/webhooks/{id}/ping",
    tag = "webhooks",
    summary = "Send a ping event to one endpoint (admin)",
    description = "Queues a `ping` event (`data`: `{endpoint_id}`) for this endpoint alone; its attempts show in the deliveries list.",
    params(("id" = i64, Path, description = "Resource id")),
    responses((status = 202, description = "Queued; `event_id` is the delivery's `webhook-id`", body = crate::http::openapi::ApiResponse<crate::actors::events::webhooks::PingQueued>), (status = 403, description = "The caller's role is insufficient", body = crate::http::openapi::ErrorResponse), (status = 404, description = "No such endpoint", body = crate::http::openapi::ErrorResponse), (status = 409, description = "The endpoint is inactive", body = crate::http::openapi::ErrorResponse)),
    security(("bearer_auth" = []))
)]
pub async fn ping(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    ask(
        &state.webhooks,
        Ping { id: *id },
        StatusCode::ACCEPTED,
        "Ping queued",
    )
    .await
}

#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}/deliveries",
    tag = "webhooks",
    summary = "Delivery attempts of a webhook endpoint (admin)",
    description = "Every attempt, newest first: `event_id` (the `webhook-id`), `event_type`, `attempt` (1 for the first), `status_code` (null on a network error or timeout), `error`, `duration_ms`, `created_at` (when the attempt started).",
    params(("id" = i64, Path, description = "Resource id"), ("page" = Option<i64>, Query, minimum = 1, maximum = 1000000, description = "v1: page number, from 1"), ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1..100, default 10"), ("cursor" = Option<String>, Query, description = "v2: next_cursor of the previous page (opaque; anything else is 400)")),
    responses((status = 200, description = "A page of attempts", body = crate::http::openapi::ApiResponse<crate::http::openapi::ListPage<crate::models::webhook::AttemptView>>), (status = 403, description = "The caller's role is insufficient", body = crate::http::openapi::ErrorResponse), (status = 404, description = "No such endpoint", body = crate::http::openapi::ErrorResponse)),
    security(("bearer_auth" = []))
)]
pub async fn deliveries(
    state: web::Data<AppState>,
    _admin: Admin,
    version: ApiVersion,
    id: web::Path<i64>,
    query: web::Query<PageParams>,
) -> Result<HttpResponse, AppError> {
    let page = state
        .cursors
        .page_request(version, &query, ATTEMPTS_CURSOR_SCOPE)?;
    ask(
        &state.webhooks,
        ListAttempts { id: *id, page },
        StatusCode::OK,
        "Deliveries retrieved successfully",
    )
    .await
}
