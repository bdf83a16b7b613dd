//! One error type for the whole request path, mapped to the envelope and a
//! status code in exactly one place (`ResponseError for AppError`).

use actix_web::{
    http::{header, StatusCode},
    HttpResponse, ResponseError,
};
use serde::Serialize;

use crate::http::envelope::Envelope;

/// One offending field (`field` is `None` for errors about the whole request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[cfg_attr(test, derive(serde::Deserialize))]
pub struct FieldError {
    pub field: Option<String>,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("Validation Error")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Conflict {
        message: String,
        errors: Vec<FieldError>,
    },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{message}")]
    Unprocessable {
        message: String,
        errors: Vec<FieldError>,
    },
    #[error("Too many requests, please try again later")]
    TooManyRequests { retry_after_secs: u64 },
    /// A dependency (Postgres, an actor) is unavailable; the cause is logged.
    #[error("Service temporarily unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything unexpected; the cause is logged, the client sees nothing of it.
    #[error("Internal server error")]
    Internal(#[source] anyhow::Error),
}

impl AppError {
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict {
            message: message.into(),
            errors: Vec::new(),
        }
    }

    pub fn unprocessable(message: impl Into<String>, errors: Vec<FieldError>) -> Self {
        Self::Unprocessable {
            message: message.into(),
            errors,
        }
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        Self::Internal(e.into())
    }

    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    fn errors(&self) -> Option<&[FieldError]> {
        match self {
            Self::Validation(e) => Some(e),
            Self::Conflict { errors, .. } | Self::Unprocessable { errors, .. } if !errors.is_empty() => {
                Some(errors)
            }
            _ => None,
        }
    }
}

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
            Self::Conflict { .. } => StatusCode::CONFLICT,
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

/// Pool and query failures: lost connections and exhausted pools are 503,
/// everything else is an opaque 500.
impl From<diesel::result::Error> for AppError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match &e {
            Error::NotFound => Self::NotFound("Resource not found".into()),
            Error::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            ) => Self::Unavailable(e.into()),
            // Statement timeout / admin shutdown / cannot connect are reported
            // as "unknown" by diesel; their messages identify them.
            Error::DatabaseError(DatabaseErrorKind::Unknown, info)
                if [
                    "terminating connection",
                    "connection closed",
                    "shutting down",
                    "starting up",
                ]
                .iter()
                .any(|m| info.message().contains(m)) =>
            {
                Self::Unavailable(e.into())
            }
            _ => Self::Internal(e.into()),
        }
    }
}

impl From<crate::db::pool::RunError> for AppError {
    fn from(e: crate::db::pool::RunError) -> Self {
        Self::Unavailable(anyhow::Error::new(e).context("acquiring a database connection"))
    }
}

impl From<actix::MailboxError> for AppError {
    fn from(e: actix::MailboxError) -> Self {
        // The actor stopped (a panic under supervision) or its mailbox is gone:
        // the request is lost, the client may retry.
        Self::Unavailable(anyhow::Error::new(e).context("actor mailbox"))
    }
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
