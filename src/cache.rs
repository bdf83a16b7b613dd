//! Cache-aside for catalog reads, shared by every instance through Redis or,
//! without `redis.url`, kept in process (moka).
//!
//! Every cached value lives under a key that embeds a *version*: the Redis
//! epoch plus one generation counter per family it depends on (`product:{id}`,
//! `products`, `categories`, `category:{id}`). A write bumps the counters of
//! what it changed before it answers; readers then compute a new version and
//! miss, so no client sees a figure older than its own last write, on any
//! instance. A reader that loaded from the database just before a write can
//! only store its value under the old version, which nobody reads again (no
//! cache-aside race). Old versions expire by TTL.
//!
//! Redis failures never fail a request: the cache is skipped (reads go to the
//! database) and `RedisHealth` is marked down until the CacheActor's probe
//! sees Redis again; the probe then bumps the epoch, discarding entries that
//! may have missed an invalidation during the outage.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, RwLock,
    },
    time::Duration,
};

use redis::aio::ConnectionManager;

use crate::{error::AppError, metrics::Metrics};

/// What a cached value depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Family {
    Product(i64),
    Products,
    Category(i64),
    Categories,
}

impl Family {
    fn key(&self, prefix: &str) -> String {
        match self {
            Self::Product(id) => format!("{prefix}:gen:product:{id}"),
            Self::Products => format!("{prefix}:gen:products"),
            Self::Category(id) => format!("{prefix}:gen:category:{id}"),
            Self::Categories => format!("{prefix}:gen:categories"),
        }
    }
}

/// Whether Redis answered the last time anyone asked. Shared by the cache,
/// the rate limiter and the readiness check.
#[derive(Clone)]
pub struct RedisHealth {
    up: Arc<AtomicBool>,
    manager: Arc<RwLock<Option<ConnectionManager>>>,
    prefix: Arc<str>,
}

impl RedisHealth {
    /// `prefix` namespaces every key (`redis.prefix`), so deployments can
    /// share one Redis.
    pub fn new(prefix: &str) -> Self {
        Self {
            up: Arc::default(),
            manager: Arc::default(),
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn epoch_key(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The shared multiplexed connection, while Redis is considered up.
    pub fn connection(&self) -> Option<ConnectionManager> {
        if !self.is_up() {
            return None;
        }
        self.manager.read().ok().and_then(|m| m.clone())
    }

    /// Records a failure seen on the request path.
    pub fn failed(&self, what: &str, e: &redis::RedisError) {
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(error = %e, during = what, "Redis unavailable; falling back to the database and in-process limits");
        }
    }

    pub(crate) fn set_up(&self, manager: ConnectionManager) {
        if let Ok(mut m) = self.manager.write() {
            *m = Some(manager);
        }
        self.up.store(true, Ordering::Relaxed);
    }

    pub(crate) fn manager(&self) -> Option<ConnectionManager> {
        self.manager.read().ok().and_then(|m| m.clone())
    }
}

#[derive(Clone)]
enum Backend {
    Redis(RedisHealth),
    Local(Arc<Local>),
    /// `cache.enabled = false`: every read goes to the database (used to
    /// measure the uncached path).
    Off,
}

struct Local {
    values: moka::future::Cache<String, Arc<str>>,
    generations: Mutex<HashMap<Family, u64>>,
}

#[derive(Clone)]
pub struct Cache {
    backend: Backend,
    ttl: Duration,
    metrics: Arc<Metrics>,
}

/// Reads the epoch and the generations in KEYS, then the value stored under
/// ARGV[1] .. ':' .. version, in one round trip.
const GET_VERSIONED: &str = r"
local v = redis.call('GET', KEYS[1]) or '0'
for i = 2, #KEYS do
  v = v .. '.' .. (redis.call('GET', KEYS[i]) or '0')
end
return {v, redis.call('GET', ARGV[1] .. ':' .. v)}
";

static SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(GET_VERSIONED));

impl Cache {
    pub fn redis(health: RedisHealth, ttl: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            backend: Backend::Redis(health),
            ttl,
            metrics,
        }
    }

    pub fn off(metrics: Arc<Metrics>) -> Self {
        Self {
            backend: Backend::Off,
            ttl: Duration::ZERO,
            metrics,
        }
    }

    pub fn local(ttl: Duration, capacity: u64, metrics: Arc<Metrics>) -> Self {
        Self {
            backend: Backend::Local(Arc::new(Local {
                values: moka::future::Cache::builder()
                    .max_capacity(capacity)
                    .time_to_live(ttl)
                    .build(),
                generations: Mutex::new(HashMap::new()),
            })),
            ttl,
            metrics,
        }
    }

    /// The JSON stored under `key` for the current version of `families`, or
    /// `load()`'s result, which is then stored.
    pub async fn get_or_load<F>(&self, families: &[Family], key: &str, load: F) -> Result<Arc<str>, AppError>
    where
        F: Future<Output = Result<String, AppError>>,
    {
        match &self.backend {
            Backend::Off => {
                self.metrics.cache_misses.inc();
                load.await.map(Into::into)
            }
            Backend::Local(local) => {
                let version = {
                    let gens = local
                        .generations
                        .lock()
                        .map_err(|_| AppError::internal(anyhow::anyhow!("poisoned")))?;
                    families
                        .iter()
                        .map(|f| gens.get(f).copied().unwrap_or(0).to_string())
                        .collect::<Vec<_>>()
                        .join(".")
                };
                let full = format!("{key}:{version}");
                if let Some(v) = local.values.get(&full).await {
                    self.metrics.cache_hits.inc();
                    return Ok(v);
                }
                self.metrics.cache_misses.inc();
                let value: Arc<str> = load.await?.into();
                local.values.insert(full, value.clone()).await;
                Ok(value)
            }
            Backend::Redis(health) => {
                let Some(mut conn) = health.connection() else {
                    self.metrics.cache_misses.inc();
                    return load.await.map(Into::into);
                };
                let mut script = SCRIPT.prepare_invoke();
                script.key(health.epoch_key());
                for f in families {
                    script.key(f.key(health.prefix()));
                }
                script.arg(format!("{}:{key}", health.prefix()));
                let found: Result<(String, Option<String>), _> = script.invoke_async(&mut conn).await;
                match found {
                    Ok((_, Some(v))) => {
                        self.metrics.cache_hits.inc();
                        Ok(v.into())
                    }
                    Ok((version, None)) => {
                        self.metrics.cache_misses.inc();
                        let value = load.await?;
                        let full = format!("{}:{key}:{version}", health.prefix());
                        let ttl = self.ttl.as_secs().max(1);
                        let stored: Result<(), _> = redis::cmd("SET")
                            .arg(&full)
                            .arg(&value)
                            .arg("EX")
                            .arg(ttl)
                            .query_async(&mut conn)
                            .await;
                        if let Err(e) = stored {
                            health.failed("cache set", &e);
                        }
                        Ok(value.into())
                    }
                    Err(e) => {
                        health.failed("cache get", &e);
                        self.metrics.cache_misses.inc();
                        load.await.map(Into::into)
                    }
                }
            }
        }
    }

    /// Bumps the generation of every family a write changed. Awaited before
    /// the write answers its client.
    pub async fn invalidate(&self, families: &[Family]) {
        if families.is_empty() {
            return;
        }
        match &self.backend {
            Backend::Off => {}
            Backend::Local(local) => {
                if let Ok(mut gens) = local.generations.lock() {
                    for f in families {
                        *gens.entry(f.clone()).or_insert(0) += 1;
                    }
                }
            }
            Backend::Redis(health) => {
                let Some(mut conn) = health.connection() else {
                    // Down: the epoch bump on recovery covers this write.
                    return;
                };
                let mut pipe = redis::pipe();
                for f in families {
                    let k = f.key(health.prefix());
                    // Generations outlive any value stored under them.
                    pipe.cmd("INCR").arg(&k).ignore();
                    pipe.cmd("EXPIRE")
                        .arg(&k)
                        .arg(self.ttl.as_secs().max(1) * 4 + 3600)
                        .ignore();
                }
                let done: Result<(), _> = pipe.query_async(&mut conn).await;
                if let Err(e) = done {
                    health.failed("cache invalidate", &e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn local_versions_invalidate_exactly_their_families() {
        let metrics = Arc::new(Metrics::new());
        let cache = Cache::local(Duration::from_secs(60), 100, metrics.clone());
        let load = |v: &'static str| async move { Ok::<_, AppError>(v.to_owned()) };
        let f1 = [Family::Product(1)];
        assert_eq!(&*cache.get_or_load(&f1, "p:1", load("a")).await.expect("ok"), "a");
        assert_eq!(
            &*cache.get_or_load(&f1, "p:1", load("b")).await.expect("ok"),
            "a",
            "hit"
        );
        let f2 = [Family::Product(2)];
        assert_eq!(&*cache.get_or_load(&f2, "p:2", load("x")).await.expect("ok"), "x");
        cache.invalidate(&[Family::Product(1)]).await;
        assert_eq!(
            &*cache.get_or_load(&f1, "p:1", load("c")).await.expect("ok"),
            "c",
            "invalidated"
        );
        assert_eq!(
            &*cache.get_or_load(&f2, "p:2", load("y")).await.expect("ok"),
            "x",
            "untouched"
        );
        assert_eq!(metrics.cache_hits.get(), 2);
    }
}
