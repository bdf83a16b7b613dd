//! Turns framework-made errors (no route, wrong method, bad path or query)
//! into the same envelope as everything else.

use actix_web::{
    body::{BoxBody, EitherBody},
    dev::ServiceResponse,
    error::{PathError, QueryPayloadError},
    http::{header, StatusCode},
    middleware::{ErrorHandlerResponse, ErrorHandlers},
    HttpRequest, HttpResponse,
};

use crate::{error::AppError, http::envelope::Envelope};

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
/// third-party middleware) get the envelope.
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
        let message = match status {
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
