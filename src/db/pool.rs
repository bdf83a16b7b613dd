//! bb8 pools of diesel-async Postgres connections. Every actor owns one
//! (bulkheads), sized by `database.pools.<actor>.max_size`.

use std::time::Duration;

use diesel_async::{
    pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod},
    AsyncConnection, AsyncPgConnection, SimpleAsyncConnection,
};
use futures_util::FutureExt;

pub type DbPool = diesel_async::pooled_connection::bb8::Pool<AsyncPgConnection>;
pub type DbConn<'a> = diesel_async::pooled_connection::bb8::PooledConnection<'a, AsyncPgConnection>;
pub type RunError = diesel_async::pooled_connection::bb8::RunError;

/// Builds a pool without connecting: start-up does not fail because one
/// actor's pool cannot connect yet, and requests get 503 after
/// `acquire_timeout` instead of hanging.
///
/// Connections are not tested with `SELECT 1` on checkout (a round trip per
/// use for nothing on a healthy pool); a connection that broke is detected
/// when it is returned and discarded, so the pool heals after a restart.
///
/// `setup` runs on every new connection (session settings of one actor's
/// pool).
pub fn build_pool(
    url: &str,
    max_size: u32,
    acquire_timeout: Duration,
    setup: Option<&'static str>,
) -> DbPool {
    let mut config = ManagerConfig::default();
    config.recycling_method = RecyclingMethod::Fast;
    if let Some(sql) = setup {
        config.custom_setup = Box::new(move |url| {
            let url = url.to_owned();
            async move {
                let mut conn = AsyncPgConnection::establish(&url).await?;
                conn.batch_execute(sql)
                    .await
                    .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
                Ok(conn)
            }
            .boxed()
        });
    }
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
    bb8::Pool::builder()
        .max_size(max_size.max(1))
        .min_idle(Some(0))
        .test_on_check_out(false)
        .connection_timeout(acquire_timeout)
        .idle_timeout(Some(Duration::from_secs(300)))
        .build_unchecked(manager)
}
