//! WebhookActor: webhook endpoints and the delivery of events to them.
//!
//! Handles: `CreateEndpoint`, `ListEndpoints`, `GetEndpoint`,
//! `UpdateEndpoint`, `DeleteEndpoint`, `RotateSecret`, `Ping`,
//! `ListAttempts`.
//!
//! Delivery runs beside the mailbox, on every instance: claim due
//! deliveries (`FOR UPDATE SKIP LOCKED`, a lease per claim, at most
//! `webhooks.max_in_flight` per endpoint), POST each signed per Standard
//! Webhooks on a task of its own, record the attempts in batches and
//! schedule retries. A slow or dead receiver holds only its own slots.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use actix::prelude::*;
use base64::Engine;
use chrono::Utc;
use serde::Serialize;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{schedule, target, Outbox};
use crate::{
    config::WebhookSettings,
    db::DbPool,
    domain::{EventType, EventTypes},
    error::AppError,
    metrics::Metrics,
    models::{
        event::{self, InsertEvents, NewEvents},
        webhook::{
            self, Attempt, AttemptCursor, Claimed, CreatedEndpoint, EndpointChanges, EndpointView, Secret,
            Verdict,
        },
    },
    pagination::{newest_first, CursorCodec, Fetch, NewestFirst, Page, PageRequest},
};

pub const ENDPOINTS_CURSOR_SCOPE: &str = "webhooks:created_at_desc";
pub const ATTEMPTS_CURSOR_SCOPE: &str = "webhook_attempts:created_at_desc";

type Reply<T> = ResponseFuture<Result<T, AppError>>;

pub struct WebhookActor {
    pool: DbPool,
    settings: WebhookSettings,
    outbox: Outbox,
    metrics: Arc<Metrics>,
    cursors: CursorCodec,
}

impl WebhookActor {
    pub fn new(
        pool: DbPool,
        settings: WebhookSettings,
        outbox: Outbox,
        metrics: Arc<Metrics>,
        cursors: CursorCodec,
    ) -> Self {
        Self {
            pool,
            settings,
            outbox,
            metrics,
            cursors,
        }
    }
}

impl Actor for WebhookActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let delivery = Delivery::new(
            self.pool.clone(),
            self.settings.clone(),
            self.outbox.clone(),
            self.metrics.clone(),
        );
        match delivery {
            Ok(d) => {
                ctx.spawn(d.run().into_actor(self));
            }
            Err(e) => tracing::error!(error = %e, "webhook delivery could not start"),
        }
    }
}

impl Supervised for WebhookActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!("WebhookActor restarting");
    }
}

fn not_found() -> AppError {
    AppError::NotFound("Webhook not found".into())
}

/// `whsec_` + base64 of 32 random bytes.
fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

#[derive(Message)]
#[rtype(result = "Result<CreatedEndpoint, AppError>")]
pub struct CreateEndpoint {
    pub url: String,
    pub events: Vec<EventType>,
    pub description: Option<String>,
}

#[derive(Message)]
#[rtype(result = "Result<Page<EndpointView>, AppError>")]
pub struct ListEndpoints {
    pub page: PageRequest<NewestFirst>,
}

#[derive(Message)]
#[rtype(result = "Result<EndpointView, AppError>")]
pub struct GetEndpoint {
    pub id: i64,
}

#[derive(Message)]
#[rtype(result = "Result<EndpointView, AppError>")]
pub struct UpdateEndpoint {
    pub id: i64,
    pub changes: EndpointChanges,
}

#[derive(Message)]
#[rtype(result = "Result<(), AppError>")]
pub struct DeleteEndpoint {
    pub id: i64,
}

#[derive(Message)]
#[rtype(result = "Result<Secret, AppError>")]
pub struct RotateSecret {
    pub id: i64,
}

/// Queues a `ping` event for one endpoint; answers its id.
#[derive(Message)]
#[rtype(result = "Result<PingQueued, AppError>")]
pub struct Ping {
    pub id: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PingQueued {
    /// The ping's event id: the `webhook-id` of its delivery.
    pub event_id: Uuid,
}

#[derive(Message)]
#[rtype(result = "Result<Page<webhook::AttemptView>, AppError>")]
pub struct ListAttempts {
    pub id: i64,
    pub page: PageRequest<AttemptCursor>,
}

impl Handler<CreateEndpoint> for WebhookActor {
    type Result = Reply<CreatedEndpoint>;

    fn handle(&mut self, msg: CreateEndpoint, _: &mut Context<Self>) -> Self::Result {
        let pool = self.pool.clone();
        crate::actors::guarded("WebhookActor", async move {
            let mut conn = pool.get().await?;
            let secret = new_secret();
            let row = webhook::create(
                &mut conn,
                webhook::NewEndpoint {
                    url: msg.url,
                    events: webhook::type_names(&msg.events),
                    description: msg.description,
                    secret: secret.clone(),
                },
            )
            .await?;
            Ok(CreatedEndpoint {
                endpoint: row.into(),
                secret,
            })
        })
    }
}

impl Handler<ListEndpoints> for WebhookActor {
    type Result = Reply<Page<EndpointView>>;

    fn handle(&mut self, msg: ListEndpoints, _: &mut Context<Self>) -> Self::Result {
        let (pool, cursors) = (self.pool.clone(), self.cursors.clone());
        crate::actors::guarded("WebhookActor", async move {
            let mut conn = pool.get().await?;
            cursors
                .serve(
                    ENDPOINTS_CURSOR_SCOPE,
                    msg.page,
                    |e: &EndpointView| (e.created_at.timestamp_micros(), e.id),
                    |fetch| async move {
                        let (rows, total) = match fetch {
                            Fetch::Offset { offset, limit } => {
                                webhook::list_offset(&mut conn, offset, limit).await?
                            }
                            Fetch::Keyset { after, limit } => (
                                webhook::list_keyset(&mut conn, newest_first(after)?, limit).await?,
                                0,
                            ),
                        };
                        Ok((rows.into_iter().map(EndpointView::from).collect(), total))
                    },
                )
                .await
        })
    }
}

impl Handler<GetEndpoint> for WebhookActor {
    type Result = Reply<EndpointView>;

    fn handle(&mut self, msg: GetEndpoint, _: &mut Context<Self>) -> Self::Result {
        let pool = self.pool.clone();
        crate::actors::guarded("WebhookActor", async move {
            let mut conn = pool.get().await?;
            webhook::find(&mut conn, msg.id)
                .await?
                .map(EndpointView::from)
                .ok_or_else(not_found)
        })
    }
}

impl Handler<UpdateEndpoint> for WebhookActor {
    type Result = Reply<EndpointView>;

    fn handle(&mut self, msg: UpdateEndpoint, _: &mut Context<Self>) -> Self::Result {
        let pool = self.pool.clone();
        crate::actors::guarded("WebhookActor", async move {
            let mut conn = pool.get().await?;
            webhook::update(&mut conn, msg.id, msg.changes)
                .await?
                .map(EndpointView::from)
                .ok_or_else(not_found)
        })
    }
}

impl Handler<DeleteEndpoint> for WebhookActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: DeleteEndpoint, _: &mut Context<Self>) -> Self::Result {
        let pool = self.pool.clone();
        crate::actors::guarded("WebhookActor", async move {
            let mut conn = pool.get().await?;
            if webhook::delete(&mut conn, msg.id).await? {
                Ok(())
            } else {
                Err(not_found())
            }
        })
    }
}

impl Handler<RotateSecret> for WebhookActor {
    type Result = Reply<Secret>;

    fn handle(&mut self, msg: RotateSecret, _: &mut Context<Self>) -> Self::Result {
        let pool = self.pool.clone();
        crate::actors::guarded("WebhookActor", async move {
            let mut conn = pool.get().await?;
            let secret = new_secret();
            if webhook::set_secret(&mut conn, msg.id, &secret).await? {
                Ok(Secret { secret })
            } else {
                Err(not_found())
            }
        })
    }
}

impl Handler<Ping> for WebhookActor {
    type Result = Reply<PingQueued>;

    fn handle(&mut self, msg: Ping, _: &mut Context<Self>) -> Self::Result {
        let (pool, outbox) = (self.pool.clone(), self.outbox.clone());
        crate::actors::guarded("WebhookActor", async move {
            let mut conn = pool.get().await?;
            let endpoint = webhook::find(&mut conn, msg.id).await?.ok_or_else(not_found)?;
            if !endpoint.is_active {
                return Err(AppError::conflict("Webhook is inactive; activate it to ping it"));
            }
            let mut events = NewEvents {
                endpoint: Some(msg.id),
                ..NewEvents::new(EventTypes::default(), false)
            };
            #[derive(Serialize)]
            struct PingData {
                endpoint_id: i64,
            }
            events.push(EventType::Ping, &PingData { endpoint_id: msg.id })?;
            let event_id = *events
                .ids
                .first()
                .ok_or_else(|| AppError::internal(anyhow::anyhow!("ping not queued")))?;
            InsertEvents {
                events,
                now: Utc::now(),
            }
            .run(&mut conn)
            .await?;
            outbox.committed(1);
            Ok(PingQueued { event_id })
        })
    }
}

impl Handler<ListAttempts> for WebhookActor {
    type Result = Reply<Page<webhook::AttemptView>>;

    fn handle(&mut self, msg: ListAttempts, _: &mut Context<Self>) -> Self::Result {
        let (pool, cursors) = (self.pool.clone(), self.cursors.clone());
        crate::actors::guarded("WebhookActor", async move {
            let mut conn = pool.get().await?;
            webhook::find(&mut conn, msg.id).await?.ok_or_else(not_found)?;
            let id = msg.id;
            cursors
                .serve(
                    ATTEMPTS_CURSOR_SCOPE,
                    msg.page,
                    |a: &webhook::AttemptView| (a.created_at.timestamp_micros(), a.event_id, a.attempt),
                    |fetch| async move {
                        Ok(match fetch {
                            Fetch::Offset { offset, limit } => {
                                webhook::attempts_offset(&mut conn, id, offset, limit).await?
                            }
                            Fetch::Keyset { after, limit } => {
                                let after =
                                    newest_first(after.map(|(micros, event, n)| (micros, (event, n))))?;
                                (webhook::attempts_keyset(&mut conn, id, after, limit).await?, 0)
                            }
                        })
                    },
                )
                .await
        })
    }
}

/// How long a claim keeps other instances off a delivery, beyond the
/// attempt's own timeout (`webhooks.timeout_ms` bounds the whole request).
/// After a crash, the deliveries the instance had claimed are attempted
/// again once their lease ends.
const LEASE_MARGIN: Duration = Duration::from_secs(10);
/// How often the backlog gauges are refreshed.
const BACKLOG_EVERY: Duration = Duration::from_secs(2);
/// Events one prune statement deletes at most.
const PRUNE_BATCH: i64 = 5_000;
/// A batch of attempts whose recording failed this many times is dropped
/// (their leases run out and they are attempted again).
const RECORD_TRIES: u32 = 5;

/// The delivery loop of one instance.
struct Delivery {
    pool: DbPool,
    settings: WebhookSettings,
    outbox: Outbox,
    metrics: Arc<Metrics>,
    client: reqwest::Client,
    /// Attempts in flight per endpoint.
    in_flight: HashMap<i64, i32>,
    done_tx: mpsc::UnboundedSender<Attempt>,
    done_rx: mpsc::UnboundedReceiver<Attempt>,
    /// Finished attempts not recorded yet, and failed tries to record them.
    unrecorded: Vec<Attempt>,
    record_failures: u32,
    /// The last database call failed (logged once until one succeeds).
    failing: bool,
}

impl Delivery {
    fn new(
        pool: DbPool,
        settings: WebhookSettings,
        outbox: Outbox,
        metrics: Arc<Metrics>,
    ) -> reqwest::Result<Self> {
        // No proxy from the environment (HTTP(S)_PROXY, ALL_PROXY): behind
        // one, names resolve at the proxy and the private-address guard of
        // `target` would not apply.
        let mut client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(settings.timeout_ms))
            .connect_timeout(Duration::from_millis(settings.timeout_ms))
            .pool_max_idle_per_host(settings.max_in_flight)
            .user_agent(concat!("storefront-webhooks/", env!("CARGO_PKG_VERSION")));
        if let Some(resolver) = target::resolver(settings.allow_private_targets) {
            client = client.dns_resolver(resolver);
        }
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Ok(Self {
            pool,
            settings,
            outbox,
            metrics,
            client: client.build()?,
            in_flight: HashMap::new(),
            done_tx,
            done_rx,
            unrecorded: Vec::new(),
            record_failures: 0,
            failing: false,
        })
    }

    async fn run(mut self) {
        let poll = Duration::from_millis(self.settings.poll_interval_ms);
        let mut last_backlog = Instant::now() - BACKLOG_EVERY;
        let mut last_prune = Instant::now();
        loop {
            while let Ok(a) = self.done_rx.try_recv() {
                self.finished(a);
            }
            let recorded = self.record().await;
            if last_backlog.elapsed() >= BACKLOG_EVERY {
                last_backlog = Instant::now();
                self.backlog().await;
            }
            if last_prune.elapsed() >= Duration::from_secs(self.settings.prune_interval_secs) {
                last_prune = Instant::now();
                self.prune().await;
            }
            let claimed = self.claim().await;
            if claimed > 0 || recorded > 0 {
                // More may be due, or slots just freed: look again at once.
                continue;
            }
            tokio::select! {
                Some(a) = self.done_rx.recv() => self.finished(a),
                _ = self.outbox.webhooks_woken() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    fn finished(&mut self, a: Attempt) {
        if let Some(n) = self.in_flight.get_mut(&a.endpoint_id) {
            *n -= 1;
            if *n <= 0 {
                self.in_flight.remove(&a.endpoint_id);
            }
        }
        let outcome = match a.verdict {
            Verdict::Delivered => {
                let latency = (Utc::now() - a.event_created_at)
                    .num_microseconds()
                    .unwrap_or(i64::MAX);
                self.metrics.webhook_latency.observe(latency.max(0) as f64 / 1e6);
                "delivered"
            }
            Verdict::Retry(_) => "retry",
            Verdict::Failed => "failed",
        };
        self.metrics.webhook_attempts.with_label_values(&[outcome]).inc();
        self.unrecorded.push(a);
    }

    fn failed(&mut self, what: &str, e: impl std::fmt::Display) {
        if !self.failing {
            tracing::error!(error = %e, "webhook delivery: {what} failed; retrying");
        }
        self.failing = true;
    }

    fn recovered(&mut self) {
        if self.failing {
            tracing::info!("webhook delivery: database reachable again");
        }
        self.failing = false;
    }

    /// Records the finished attempts; returns how many.
    async fn record(&mut self) -> usize {
        if self.unrecorded.is_empty() {
            return 0;
        }
        let result = match self.pool.get().await {
            Ok(mut conn) => webhook::record(&mut conn, &self.unrecorded)
                .await
                .map_err(anyhow::Error::from),
            Err(e) => Err(anyhow::Error::from(e)),
        };
        match result {
            Ok(()) => {
                self.recovered();
                self.record_failures = 0;
                let n = self.unrecorded.len();
                self.unrecorded.clear();
                n
            }
            Err(e) => {
                self.record_failures += 1;
                if self.record_failures >= RECORD_TRIES {
                    tracing::error!(error = %e, attempts = self.unrecorded.len(),
                        "webhook attempts could not be recorded; they will be attempted again");
                    self.unrecorded.clear();
                    self.record_failures = 0;
                } else {
                    self.failed("recording attempts", e);
                }
                0
            }
        }
    }

    /// Claims what is due and starts an attempt for each; returns how many.
    async fn claim(&mut self) -> usize {
        let max = i32::try_from(self.settings.max_in_flight).unwrap_or(i32::MAX);
        let busy: (Vec<i64>, Vec<i32>) = self.in_flight.iter().map(|(id, n)| (*id, *n)).unzip();
        let lease = Duration::from_millis(self.settings.timeout_ms) + LEASE_MARGIN;
        let claimed = match self.pool.get().await {
            Ok(mut conn) => webhook::claim(&mut conn, max, busy, lease.as_millis() as i64)
                .await
                .map_err(anyhow::Error::from),
            Err(e) => Err(anyhow::Error::from(e)),
        };
        let claimed = match claimed {
            Ok(c) => {
                self.recovered();
                c
            }
            Err(e) => {
                self.failed("claiming deliveries", e);
                return 0;
            }
        };
        let n = claimed.len();
        for c in claimed {
            *self.in_flight.entry(c.endpoint_id).or_default() += 1;
            let (client, settings, done) = (self.client.clone(), self.settings.clone(), self.done_tx.clone());
            actix::spawn(async move {
                let _ = done.send(attempt(&client, &settings, c).await);
            });
        }
        n
    }

    async fn backlog(&mut self) {
        let backlog = match self.pool.get().await {
            Ok(mut conn) => webhook::backlog(&mut conn).await.map_err(anyhow::Error::from),
            Err(e) => Err(anyhow::Error::from(e)),
        };
        let b = match backlog {
            Ok(b) => b,
            Err(e) => return self.failed("reading the backlog", e),
        };
        let age = |id: Option<Uuid>| {
            id.and_then(webhook::written_at).map_or(0.0, |t| {
                (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
            })
        };
        let m = &self.metrics;
        m.events_pending
            .with_label_values(&["webhooks"])
            .set(b.deliveries);
        m.events_pending
            .with_label_values(&["jetstream"])
            .set(b.unpublished);
        m.events_oldest_pending
            .with_label_values(&["webhooks"])
            .set(age(b.oldest_delivery));
        m.events_oldest_pending
            .with_label_values(&["jetstream"])
            .set(age(b.oldest_unpublished));
    }

    async fn prune(&mut self) {
        let Ok(mut conn) = self.pool.get().await else {
            return;
        };
        let now = Utc::now();
        let max_age = chrono::Duration::seconds(self.settings.max_age_secs.min(i64::MAX as u64) as i64);
        if let Err(e) = webhook::fail_expired(&mut conn, now - max_age).await {
            tracing::warn!(error = %e, "webhook deliveries past max_age could not be failed");
        }
        let retention = chrono::Duration::seconds(self.settings.retention_secs.min(i64::MAX as u64) as i64);
        loop {
            match webhook::prune(&mut conn, now - retention, PRUNE_BATCH).await {
                Ok(n) if n as i64 == PRUNE_BATCH => continue,
                Ok(n) => {
                    if n > 0 {
                        tracing::debug!(pruned = n, "old events deleted");
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "old events could not be pruned");
                    break;
                }
            }
        }
    }
}

/// One attempt: POST the event to the endpoint, signed, and decide what
/// comes next.
async fn attempt(client: &reqwest::Client, settings: &WebhookSettings, c: Claimed) -> Attempt {
    let started_at = Utc::now();
    let started = Instant::now();
    let id = c.event_id.to_string();
    let body = event::body(&c.event_type, c.created_at, &c.data);
    let (status_code, error) = match send(client, settings, &c, &id, started_at.timestamp(), body).await {
        Ok(code) if (200..300).contains(&code) => (Some(code), None),
        Ok(code) => (Some(code), Some(format!("HTTP {code}"))),
        Err(e) => (None, Some(e)),
    };
    let duration_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
    let verdict = if error.is_none() {
        Verdict::Delivered
    } else {
        let age = (Utc::now() - c.created_at).to_std().unwrap_or_default();
        match schedule::after_failure(
            c.attempt,
            age,
            &settings.retry_schedule_secs,
            Duration::from_secs(settings.max_age_secs),
            schedule::jitter(),
        ) {
            schedule::Next::Retry(delay) => {
                Verdict::Retry(Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default())
            }
            schedule::Next::Fail => Verdict::Failed,
        }
    };
    Attempt {
        event_id: c.event_id,
        endpoint_id: c.endpoint_id,
        attempt: c.attempt,
        status_code,
        error,
        duration_ms,
        started_at,
        verdict,
        event_created_at: c.created_at,
    }
}

/// The most of a response body an attempt reads.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// The request itself; `Ok(status)` when a response came.
async fn send(
    client: &reqwest::Client,
    settings: &WebhookSettings,
    c: &Claimed,
    id: &str,
    timestamp: i64,
    body: String,
) -> Result<i16, String> {
    // The resolver sees names only: addresses in the URL are checked here.
    let url = target::parse_url(&c.url, settings.allow_private_targets)?;
    let signature = standardwebhooks::Webhook::new(&c.secret)
        .and_then(|w| w.sign(id, timestamp, body.as_bytes()))
        .map_err(|e| format!("cannot sign: {e}"))?;
    let mut response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(standardwebhooks::HEADER_WEBHOOK_ID, id)
        .header(standardwebhooks::HEADER_WEBHOOK_TIMESTAMP, timestamp)
        .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature)
        .body(body)
        .send()
        .await
        .map_err(|e| describe(&e, settings.timeout_ms))?;
    let status = response.status().as_u16();
    // Read (and discard) a short body so the connection can be reused; a
    // longer one is left unread, and dropping the response closes the
    // connection.
    let mut read = 0;
    while read < MAX_RESPONSE_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            Ok(None) | Err(_) => break,
        }
    }
    Ok(i16::try_from(status).unwrap_or(i16::MAX))
}

/// A network error as the deliveries list shows it.
fn describe(e: &reqwest::Error, timeout_ms: u64) -> String {
    if e.is_timeout() {
        return format!("timed out after {timeout_ms} ms");
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
