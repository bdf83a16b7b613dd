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
    /// The request's Idempotency-Key claim was taken over by a retry before
    /// the inventory decided it: it created nothing, and answers as the key
    /// does now (`actors::order`). Seen by a client only as the 409 of a key
    /// still in flight.
    #[error("A request with this Idempotency-Key is still being processed")]
    ClaimLost,
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

/// What a database failure means for the client, decided by its SQLSTATE
/// (or diesel's error kind when the server sent none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFailure {
    /// The server is unreachable, shutting down, starting up or out of
    /// connections: 503, the client may retry.
    Outage,
    /// A deadlock or a serialization failure: the transaction may succeed if
    /// run again (the actors retry once), else 503.
    Conflict,
    /// Anything else: a bug or a constraint the code did not expect, 500.
    Other,
}

impl DbFailure {
    pub fn of(e: &diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error, SqlStateClass};
        let Error::DatabaseError(kind, info) = e else {
            return Self::Other;
        };
        if matches!(
            kind,
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand
        ) {
            return Self::Outage;
        }
        if *kind == DatabaseErrorKind::SerializationFailure {
            return Self::Conflict;
        }
        let Some(code) = info.sqlstate() else {
            return Self::Other;
        };
        match code.as_str() {
            // admin_shutdown, crash_shutdown, cannot_connect_now
            "57P01" | "57P02" | "57P03" => Self::Outage,
            // too_many_connections
            "53300" => Self::Outage,
            // serialization_failure, deadlock_detected
            "40001" | "40P01" => Self::Conflict,
            _ if code.class() == SqlStateClass::CONNECTION_EXCEPTION => Self::Outage,
            _ => Self::Other,
        }
    }
}

/// Outages and transaction conflicts are 503 (with `Retry-After`), every
/// other database error an opaque 500.
impl From<diesel::result::Error> for AppError {
    fn from(e: diesel::result::Error) -> Self {
        if matches!(e, diesel::result::Error::NotFound) {
            return Self::NotFound("Resource not found".into());
        }
        match DbFailure::of(&e) {
            DbFailure::Outage | DbFailure::Conflict => Self::Unavailable(e.into()),
            DbFailure::Other => Self::Internal(e.into()),
        }
    }
}

impl AppError {
    /// A deadlock or serialization failure, worth running the transaction
    /// again once.
    pub fn is_transaction_conflict(&self) -> bool {
        matches!(self, Self::Unavailable(cause)
            if cause.downcast_ref::<diesel::result::Error>()
                .is_some_and(|e| DbFailure::of(e) == DbFailure::Conflict))
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
    use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind, Error, SqlState};

    use super::*;

    struct Info(&'static str);

    impl DatabaseErrorInformation for Info {
        fn message(&self) -> &str {
            "any text: the code decides"
        }
        fn details(&self) -> Option<&str> {
            None
        }
        fn hint(&self) -> Option<&str> {
            None
        }
        fn table_name(&self) -> Option<&str> {
            None
        }
        fn column_name(&self) -> Option<&str> {
            None
        }
        fn constraint_name(&self) -> Option<&str> {
            None
        }
        fn statement_position(&self) -> Option<i32> {
            None
        }
        fn sqlstate(&self) -> Option<SqlState> {
            self.0.parse().ok()
        }
    }

    fn db_error(code: &'static str) -> Error {
        Error::DatabaseError(DatabaseErrorKind::Unknown, Box::new(Info(code)))
    }

    #[test]
    fn database_failures_are_classified_by_sqlstate() {
        for code in ["08000", "08006", "08P01", "57P01", "57P02", "57P03", "53300"] {
            assert_eq!(DbFailure::of(&db_error(code)), DbFailure::Outage, "{code}");
            assert!(
                matches!(AppError::from(db_error(code)), AppError::Unavailable(_)),
                "{code}"
            );
        }
        for code in ["40001", "40P01"] {
            assert_eq!(DbFailure::of(&db_error(code)), DbFailure::Conflict, "{code}");
            assert!(AppError::from(db_error(code)).is_transaction_conflict(), "{code}");
        }
        for code in ["42P01", "23505", "57014", "22003", "53100"] {
            assert_eq!(DbFailure::of(&db_error(code)), DbFailure::Other, "{code}");
            assert!(
                matches!(AppError::from(db_error(code)), AppError::Internal(_)),
                "{code}"
            );
        }
        let closed = Error::DatabaseError(DatabaseErrorKind::ClosedConnection, Box::new(Info("")));
        assert_eq!(DbFailure::of(&closed), DbFailure::Outage);
        assert!(!AppError::from(db_error("57P01")).is_transaction_conflict());
        assert!(matches!(AppError::from(Error::NotFound), AppError::NotFound(_)));
    }
}
