//! CacheActor: owns the Redis connection (one multiplexed `ConnectionManager`
//! shared by every request) and its health.
//!
//! Handles: `CheckRedis` (readiness). Every second it probes Redis; when Redis
//! comes (back) up it bumps the cache epoch, so entries that may have missed an
//! invalidation while it was unreachable are never read again. Cache reads
//! and writes themselves run on the request's thread through `Cache`; they do
//! not queue behind this mailbox.

use std::time::Duration;

use actix::prelude::*;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::cache::RedisHealth;

const TIMEOUT: Duration = Duration::from_millis(500);

pub struct CacheActor {
    client: redis::Client,
    health: RedisHealth,
    probing: bool,
}

impl CacheActor {
    pub fn new(client: redis::Client, health: RedisHealth) -> Self {
        Self {
            client,
            health,
            probing: false,
        }
    }

    fn probe(&mut self, ctx: &mut Context<Self>) {
        if self.probing {
            return;
        }
        self.probing = true;
        let (client, health) = (self.client.clone(), self.health.clone());
        ctx.spawn(
            probe(client, health)
                .into_actor(self)
                .map(|_, act, _| act.probing = false),
        );
    }
}

/// One probe: connect if needed, PING, and on a transition to up bump the
/// epoch before the cache is used again. Returns whether Redis is up.
async fn probe(client: redis::Client, health: RedisHealth) -> bool {
    let manager = match health.manager() {
        Some(m) => m,
        None => {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(TIMEOUT)
                .set_response_timeout(TIMEOUT)
                .set_number_of_retries(1);
            match ConnectionManager::new_with_config(client, config).await {
                Ok(m) => m,
                Err(e) => {
                    health.failed("connect", &e);
                    return false;
                }
            }
        }
    };
    let mut conn = manager.clone();
    let pong: Result<String, _> = redis::cmd("PING").query_async(&mut conn).await;
    match pong {
        Ok(_) if health.is_up() => true,
        Ok(_) => {
            let bumped: Result<i64, _> = redis::cmd("INCR")
                .arg(health.epoch_key())
                .query_async(&mut conn)
                .await;
            match bumped {
                Ok(epoch) => {
                    tracing::info!(epoch, "Redis is up; cache epoch bumped");
                    health.set_up(manager);
                    true
                }
                Err(e) => {
                    health.failed("epoch bump", &e);
                    false
                }
            }
        }
        Err(e) => {
            health.failed("probe", &e);
            false
        }
    }
}

impl Actor for CacheActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.probe(ctx);
        ctx.run_interval(Duration::from_secs(1), |act, ctx| act.probe(ctx));
    }
}

impl Supervised for CacheActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.probing = false;
        tracing::warn!(actor = "CacheActor", "restarting after a failure");
    }
}

/// Probes Redis now and answers whether it is up.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct CheckRedis;

impl Handler<CheckRedis> for CacheActor {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, _: CheckRedis, _: &mut Context<Self>) -> Self::Result {
        crate::actors::guarded_or(
            "CacheActor",
            probe(self.client.clone(), self.health.clone()),
            |_| false,
        )
    }
}
