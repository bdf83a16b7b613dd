//! Embedded migrations, run under a Postgres advisory lock so that several
//! instances starting at once apply them exactly once.

use diesel::{sql_query, Connection, RunQueryDsl};
use diesel_async::{async_connection_wrapper::AsyncConnectionWrapper, AsyncPgConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// `pg_advisory_lock` key shared by every instance ("storefront" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x7374_6f72_6566_726f;

/// Every table of the schema, for ANALYZE.
pub const TABLES: &[&str] = &[
    "users",
    "refresh_tokens",
    "categories",
    "products",
    "product_search",
    "product_search_version",
    "orders",
    "order_items",
    "idempotency_keys",
    "oauth_states",
];

type SyncConn = AsyncConnectionWrapper<AsyncPgConnection>;

/// Applies pending migrations; returns the versions applied. Runs on its own
/// thread (diesel's migration harness is synchronous), so it can be awaited
/// from any runtime, including an actix current-thread one.
pub async fn run_pending(url: &str) -> anyhow::Result<Vec<String>> {
    let url = url.to_owned();
    on_thread(move || {
        let mut conn = SyncConn::establish(&url)?;
        with_lock(&mut conn, |conn| {
            let applied: Vec<String> = conn
                .run_pending_migrations(MIGRATIONS)
                .map_err(|e| anyhow::anyhow!("running migrations: {e}"))?
                .iter()
                .map(ToString::to_string)
                .collect();
            // Fresh statistics for tables with rows (only this schema's, by
            // search_path). An empty table is left unanalyzed: statistics
            // saying "empty" would make plans cached now scan it whole once
            // it fills; unanalyzed, the planner assumes a small table, not an
            // empty one, and looks rows up by index.
            analyze_non_empty(conn)?;
            Ok(applied)
        })
    })
    .await
}

fn analyze_non_empty(conn: &mut SyncConn) -> anyhow::Result<()> {
    #[derive(diesel::QueryableByName)]
    struct Filled {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        filled: bool,
    }
    for table in TABLES {
        let rows: Vec<Filled> =
            sql_query(format!("SELECT EXISTS (SELECT 1 FROM {table}) AS filled")).load(conn)?;
        if rows.first().is_some_and(|r| r.filled) {
            sql_query(format!("ANALYZE {table}")).execute(conn)?;
        }
    }
    Ok(())
}

/// Reverts every applied migration (used by the down/up round-trip test and
/// `storefront migrate --revert-all`).
pub async fn revert_all(url: &str) -> anyhow::Result<Vec<String>> {
    let url = url.to_owned();
    on_thread(move || {
        let mut conn = SyncConn::establish(&url)?;
        with_lock(&mut conn, |conn| {
            let reverted = conn
                .revert_all_migrations(MIGRATIONS)
                .map_err(|e| anyhow::anyhow!("reverting migrations: {e}"))?
                .iter()
                .map(ToString::to_string)
                .collect();
            Ok(reverted)
        })
    })
    .await
}

fn with_lock<T>(
    conn: &mut SyncConn,
    f: impl FnOnce(&mut SyncConn) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")).execute(conn)?;
    let result = f(conn);
    sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")).execute(conn)?;
    result
}

async fn on_thread<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("migrations".into())
        .spawn(move || {
            let _ = tx.send(f());
        })?;
    rx.await
        .map_err(|_| anyhow::anyhow!("migration thread panicked"))?
}
