//! One error type for the whole request path. The HTTP layer maps it to the
//! envelope and a status code in exactly one place (`src/http/errors.rs`).

use serde::Serialize;

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
    /// The resource existed but is gone for good (a confirm of a released or
    /// expired reservation).
    #[error("{0}")]
    Gone(String),
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

    /// The offending fields, for the envelope's `errors`.
    pub fn errors(&self) -> Option<&[FieldError]> {
        match self {
            Self::Validation(e) => Some(e),
            Self::Conflict { errors, .. } | Self::Unprocessable { errors, .. } if !errors.is_empty() => {
                Some(errors)
            }
            _ => None,
        }
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
