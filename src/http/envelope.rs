//! The response envelope every `/api` response carries.

use actix_web::{http::StatusCode, HttpResponse};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::error::FieldError;

#[derive(Debug, Serialize)]
pub struct Envelope<T: Serialize> {
    pub success: bool,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Option<Vec<FieldError>>>,
    pub timestamp: String,
    #[serde(rename = "statusCode")]
    pub status_code: u16,
}

fn now() -> String {
    timestamp(Utc::now())
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl<T: Serialize> Envelope<T> {
    pub fn ok(status: StatusCode, message: impl Into<String>, data: T) -> Self {
        Self {
            success: true,
            message: message.into(),
            data: Some(data),
            errors: None,
            timestamp: now(),
            status_code: status.as_u16(),
        }
    }
}

impl Envelope<()> {
    /// An error body; `errors` is always present (a list or null).
    pub fn error(status: StatusCode, message: impl Into<String>, errors: Option<Vec<FieldError>>) -> Self {
        Self {
            success: false,
            message: message.into(),
            data: None,
            errors: Some(errors),
            timestamp: now(),
            status_code: status.as_u16(),
        }
    }
}

pub fn respond<T: Serialize>(status: StatusCode, message: &str, data: T) -> HttpResponse {
    HttpResponse::build(status).json(Envelope::ok(status, message, data))
}

/// A success envelope stamped `at` instead of now: the same `data` and `at`
/// give the same bytes, so an idempotent replay equals the first response.
pub fn respond_at<T: Serialize>(
    status: StatusCode,
    message: &str,
    data: T,
    at: DateTime<Utc>,
) -> HttpResponse {
    let mut envelope = Envelope::ok(status, message, data);
    envelope.timestamp = timestamp(at);
    HttpResponse::build(status).json(envelope)
}

/// A JSON response from an already serialized body.
fn raw(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(actix_web::http::header::ContentType::json())
        .body(body)
}

/// 200 with `data` already serialized (cached JSON), without re-parsing it.
/// `message` is one of our own constant texts (no quotes or backslashes).
pub fn ok_raw(message: &'static str, data_json: &str) -> HttpResponse {
    debug_assert!(!message.contains(['"', '\\']));
    let body = format!(
        r#"{{"success":true,"message":"{message}","data":{data_json},"timestamp":"{}","statusCode":200}}"#,
        now()
    );
    raw(StatusCode::OK, body)
}

/// Marks a response that carries a token as never to be stored by any cache.
pub fn no_store(mut res: HttpResponse) -> HttpResponse {
    res.headers_mut().insert(
        actix_web::http::header::CACHE_CONTROL,
        actix_web::http::header::HeaderValue::from_static("no-store"),
    );
    res
}
