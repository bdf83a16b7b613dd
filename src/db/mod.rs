//! Database access: pools, migrations and the diesel schema.

pub mod migrate;
pub mod pool;
pub mod schema;

pub use pool::{build_pool, DbConn, DbPool};

use std::future::Future;

use crate::error::AppError;

/// Runs `attempt` (a whole transaction) once more when it failed on a
/// deadlock or a serialization failure; a second conflict is answered 503.
pub async fn retry_on_conflict<T, F, Fut>(what: &'static str, mut attempt: F) -> Result<T, AppError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AppError>>,
{
    match attempt().await {
        Err(e) if e.is_transaction_conflict() => {
            tracing::warn!(transaction = what, error = ?e, "transaction conflict; running it again");
            attempt().await
        }
        result => result,
    }
}
