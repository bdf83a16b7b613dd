//! `AppError` to the envelope and a status code, in this one place; and
//! framework-made errors (no route, wrong method, bad path or query) into the
//! same envelope as everything else.

use actix_web::{
    body::{BoxBody, EitherBody},
    dev::ServiceResponse,
    error::{PathError, QueryPayloadError},
    http::{header, StatusCode},
    middleware::{ErrorHandlerResponse, ErrorHandlers},
    HttpRequest, HttpResponse, ResponseError,
};

use crate::{
    error::{AppError, FieldError},
    http::envelope::Envelope,
};

/// The cause chain of an error, for the log line of a 5xx.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Validation(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict { .. } | Self::ClaimLost => StatusCode::CONFLICT,
            Self::Gone(_) => StatusCode::GONE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        // This runs inside the request's root span, so the log line carries
        // the request id; the response body stays opaque.
        match self {
            Self::Internal(cause) => {
                tracing::error!(error.cause_chain = %chain(cause.as_ref()), "request failed")
            }
            Self::Unavailable(cause) => {
                tracing::warn!(error.cause_chain = %chain(cause.as_ref()), "dependency unavailable")
            }
            _ => {}
        }
        let mut builder = HttpResponse::build(status);
        match self {
            Self::Unauthorized(_) => {
                builder.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            Self::Unavailable(_) => {
                builder.insert_header((header::RETRY_AFTER, "5"));
            }
            Self::TooManyRequests { retry_after_secs } => {
                builder.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            _ => {}
        }
        builder.json(Envelope::<()>::error(
            status,
            self.to_string(),
            self.errors().map(<[FieldError]>::to_vec),
        ))
    }
}

pub async fn not_found() -> Result<HttpResponse, AppError> {
    Err(AppError::NotFound("Route not found".into()))
}

pub fn path_error(err: PathError, _: &HttpRequest) -> actix_web::Error {
    let msg = match err {
        PathError::Deserialize(_) => "must be a valid positive integer",
        _ => "is invalid",
    };
    AppError::invalid_field("id", msg).into()
}

pub fn query_error(err: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    let msg = match err {
        QueryPayloadError::Deserialize(e) => format!("Invalid query string: {e}"),
        _ => "Invalid query string".to_owned(),
    };
    AppError::BadRequest(msg).into()
}

/// Error responses that are not JSON yet (405 from a resource, errors of
/// third-party middleware such as a refused CORS request) get the envelope.
pub fn envelope_errors<B: 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(|res: ServiceResponse<B>| {
        let is_json = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if is_json {
            return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
        }
        let status = res.status();
        let cors = res.request().headers().contains_key(header::ORIGIN);
        let message = match status {
            StatusCode::BAD_REQUEST if cors => {
                "CORS request refused: origin, method or headers not allowed".to_owned()
            }
            StatusCode::METHOD_NOT_ALLOWED => "Method not allowed".to_owned(),
            StatusCode::NOT_FOUND => "Route not found".to_owned(),
            s if s.is_server_error() => "Internal server error".to_owned(),
            s => s.canonical_reason().unwrap_or("Error").to_owned(),
        };
        let (req, old) = res.into_parts();
        let mut new = HttpResponse::build(status).json(Envelope::error(status, message, None));
        // Keep headers such as Allow, Retry-After and the rate-limit ones.
        for (name, value) in old.headers() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                new.headers_mut().insert(name.clone(), value.clone());
            }
        }
        let res: ServiceResponse<EitherBody<B, BoxBody>> = ServiceResponse::new(req, new)
            .map_into_boxed_body()
            .map_into_right_body();
        Ok(ErrorHandlerResponse::Response(res))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    #[actix_web::test]
    async fn internal_errors_are_opaque() {
        let err = AppError::internal(anyhow::anyhow!("SELECT secret FROM /etc/passwd"));
        let resp = err.error_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = to_bytes(resp.into_body()).await.expect("body");
        let text = std::str::from_utf8(&body).expect("utf8");
        assert!(!text.contains("SELECT"), "{text}");
        assert!(text.contains("\"statusCode\":500"), "{text}");
    }

    #[actix_web::test]
    async fn unauthorized_sends_www_authenticate_and_unavailable_retry_after() {
        let resp = AppError::Unauthorized("x".into()).error_response();
        assert_eq!(
            resp.headers().get(header::WWW_AUTHENTICATE).map(|v| v.as_bytes()),
            Some(&b"Bearer"[..])
        );
        let resp = AppError::Unavailable(anyhow::anyhow!("down")).error_response();
        assert!(resp.headers().contains_key(header::RETRY_AFTER));
    }
}
