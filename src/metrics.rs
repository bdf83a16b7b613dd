//! Prometheus metrics, one registry per `Application` (so two instances in
//! one test process do not mix), served at `GET /metrics`.

use std::sync::Mutex;

use prometheus::{
    exponential_buckets, Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::db::DbPool;

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub inventory_batch_size: Histogram,
    pub inventory_queue_depth: IntGauge,
    pub inventory_batches: IntCounter,
    pub inventory_batch_duration: Histogram,
    pub orders_placed: IntCounter,
    pub orders_rejected: IntCounterVec,
    pub reservations: IntCounterVec,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub events_pending: IntGaugeVec,
    pub events_oldest_pending: GaugeVec,
    pub webhook_attempts: IntCounterVec,
    pub webhook_latency: Histogram,
    pub events_published: IntCounter,
    pool_connections: IntGaugeVec,
    pools: Mutex<Vec<(&'static str, DbPool)>>,
    /// Exported only once set: an instance without Redis has no such series.
    redis_up: IntGauge,
    redis_up_registered: std::sync::Once,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Only fails on invalid names or duplicate registration: programming errors.
    r.expect("metric definition")
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("storefront".into()), None).expect("registry");
        let http_requests = must(IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route and status"),
            &["method", "route", "status"],
        ));
        let http_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route and status",
            )
            .buckets(exponential_buckets(0.0005, 2.0, 16).expect("buckets")),
            &["method", "route", "status"],
        ));
        let inventory_batch_size = must(Histogram::with_opts(
            HistogramOpts::new(
                "inventory_batch_size",
                "Requests decided by one InventoryActor transaction",
            )
            .buckets(exponential_buckets(1.0, 2.0, 10).expect("buckets")),
        ));
        let inventory_queue_depth = must(IntGauge::new(
            "inventory_queue_depth",
            "Requests waiting in the InventoryActor's queue",
        ));
        let inventory_batches = must(IntCounter::new(
            "inventory_batches_total",
            "InventoryActor batches (transactions) started",
        ));
        let inventory_batch_duration = must(Histogram::with_opts(
            HistogramOpts::new(
                "inventory_batch_duration_seconds",
                "InventoryActor batches, from sending the first statement to the \
                 answer back in the actor",
            )
            .buckets(exponential_buckets(0.000_125, 2.0, 14).expect("buckets")),
        ));
        let orders_placed = must(IntCounter::new("orders_placed_total", "Orders placed"));
        let orders_rejected = must(IntCounterVec::new(
            Opts::new("orders_rejected_total", "Orders refused, by reason"),
            &["reason"],
        ));
        let reservations = must(IntCounterVec::new(
            Opts::new(
                "reservations_total",
                "Checkout holds by event: created, confirmed, released, expired",
            ),
            &["event"],
        ));
        let cache_hits = must(IntCounter::new(
            "cache_hits_total",
            "Catalog reads served from the cache",
        ));
        let cache_misses = must(IntCounter::new(
            "cache_misses_total",
            "Catalog reads that went to the database",
        ));
        let events_pending = must(IntGaugeVec::new(
            Opts::new(
                "events_pending",
                "Events not yet delivered: webhook deliveries pending (sink=\"webhooks\") and events \
                 not yet published (sink=\"jetstream\")",
            ),
            &["sink"],
        ));
        let events_oldest_pending = must(GaugeVec::new(
            Opts::new(
                "events_oldest_pending_age_seconds",
                "Age of the oldest event not yet delivered (webhooks) or published (jetstream)",
            ),
            &["sink"],
        ));
        let webhook_attempts = must(IntCounterVec::new(
            Opts::new(
                "webhook_attempts_total",
                "Webhook delivery attempts by outcome: delivered, retry (to be tried again), failed \
                 (given up)",
            ),
            &["outcome"],
        ));
        let webhook_latency = must(Histogram::with_opts(
            HistogramOpts::new(
                "webhook_delivery_latency_seconds",
                "From an event's commit to its successful webhook delivery",
            )
            .buckets(exponential_buckets(0.001, 2.0, 20).expect("buckets")),
        ));
        let events_published = must(IntCounter::new(
            "events_published_total",
            "Events published to NATS JetStream (acknowledged)",
        ));
        let pool_connections = must(IntGaugeVec::new(
            Opts::new(
                "db_pool_connections",
                "Connections per actor pool, in use or idle",
            ),
            &["pool", "state"],
        ));
        for c in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_duration.clone()),
            Box::new(inventory_batch_size.clone()),
            Box::new(inventory_queue_depth.clone()),
            Box::new(inventory_batches.clone()),
            Box::new(inventory_batch_duration.clone()),
            Box::new(orders_placed.clone()),
            Box::new(orders_rejected.clone()),
            Box::new(reservations.clone()),
            Box::new(cache_hits.clone()),
            Box::new(cache_misses.clone()),
            Box::new(pool_connections.clone()),
            Box::new(events_pending.clone()),
            Box::new(events_oldest_pending.clone()),
            Box::new(webhook_attempts.clone()),
            Box::new(webhook_latency.clone()),
            Box::new(events_published.clone()),
        ] {
            must(registry.register(c));
        }
        Self {
            registry,
            http_requests,
            http_duration,
            inventory_batch_size,
            inventory_queue_depth,
            inventory_batches,
            inventory_batch_duration,
            orders_placed,
            orders_rejected,
            reservations,
            cache_hits,
            cache_misses,
            events_pending,
            events_oldest_pending,
            webhook_attempts,
            webhook_latency,
            events_published,
            pool_connections,
            pools: Mutex::new(Vec::new()),
            redis_up: must(IntGauge::new(
                "redis_up",
                "1 while the configured Redis answers, 0 while it is unreachable",
            )),
            redis_up_registered: std::sync::Once::new(),
        }
    }

    /// Reports `pool` under `name` from now on.
    pub fn register_pool(&self, name: &'static str, pool: DbPool) {
        if let Ok(mut pools) = self.pools.lock() {
            pools.push((name, pool));
        }
    }

    pub fn observe_http(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        let labels = [method, route, status.as_str()];
        self.http_requests.with_label_values(&labels).inc();
        self.http_duration.with_label_values(&labels).observe(seconds);
    }

    /// Sets `storefront_redis_up` (registered on first use).
    pub fn set_redis_up(&self, up: bool) {
        self.redis_up_registered
            .call_once(|| must(self.registry.register(Box::new(self.redis_up.clone()))));
        self.redis_up.set(i64::from(up));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        if let Ok(pools) = self.pools.lock() {
            for (name, pool) in pools.iter() {
                let state = pool.state();
                let idle = i64::from(state.idle_connections);
                let total = i64::from(state.connections);
                self.pool_connections.with_label_values(&[name, "idle"]).set(idle);
                self.pool_connections
                    .with_label_values(&[name, "in_use"])
                    .set(total - idle);
            }
        }
        let mut out = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
