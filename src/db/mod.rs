//! Database access: pools, migrations and the diesel schema.

pub mod migrate;
pub mod pool;
pub mod schema;

pub use pool::{build_pool, DbConn, DbPool};
