//! JetStreamActor: publishes every event (but pings) to NATS JetStream when
//! `events.nats_url` is set: stream `events.nats_stream` (created when
//! missing) on subjects `<events.nats_subject_prefix>.<type>`, with
//! `Nats-Msg-Id` = the event id, so JetStream drops the duplicates that
//! at-least-once publishing can make.
//!
//! Handles no messages: it runs one loop. Each round locks a batch of
//! unpublished events (`FOR NO KEY UPDATE SKIP LOCKED`: instances share the work),
//! publishes them all, waits for every acknowledgement, then marks them
//! published in the same transaction. A round that fails leaves its events
//! for the next.

use std::time::Duration;

use actix::prelude::*;
use async_nats::jetstream;
use diesel_async::AsyncConnection;
use std::sync::Arc;

use super::Outbox;
use crate::{config::EventSettings, db::DbPool, metrics::Metrics, models::event};

/// How long a round waits for JetStream's acknowledgements.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed round or connection attempt.
const BACKOFF: Duration = Duration::from_secs(1);

pub struct JetStreamActor {
    pool: DbPool,
    url: String,
    settings: EventSettings,
    poll: Duration,
    outbox: Outbox,
    metrics: Arc<Metrics>,
}

impl JetStreamActor {
    pub fn new(
        pool: DbPool,
        url: String,
        settings: EventSettings,
        poll: Duration,
        outbox: Outbox,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            pool,
            url,
            settings,
            poll,
            outbox,
            metrics,
        }
    }
}

impl Actor for JetStreamActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let sink = Sink {
            pool: self.pool.clone(),
            url: self.url.clone(),
            settings: self.settings.clone(),
            poll: self.poll,
            outbox: self.outbox.clone(),
            metrics: self.metrics.clone(),
            failing: false,
        };
        ctx.spawn(sink.run().into_actor(self));
    }
}

impl Supervised for JetStreamActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!("JetStreamActor restarting");
    }
}

struct Sink {
    pool: DbPool,
    url: String,
    settings: EventSettings,
    poll: Duration,
    outbox: Outbox,
    metrics: Arc<Metrics>,
    failing: bool,
}

impl Sink {
    async fn run(mut self) {
        let mut js = None;
        loop {
            let context = match &js {
                Some(c) => c,
                None => match self.connect().await {
                    Ok(c) => {
                        tracing::info!(stream = %self.settings.nats_stream, "publishing events to NATS JetStream");
                        js.insert(c)
                    }
                    Err(e) => {
                        self.failed("connecting to NATS", e);
                        tokio::time::sleep(BACKOFF).await;
                        continue;
                    }
                },
            };
            match self.round(context).await {
                Ok(0) => {
                    self.recovered();
                    tokio::select! {
                        _ = self.outbox.jetstream_woken() => {}
                        _ = tokio::time::sleep(self.poll) => {}
                    }
                }
                Ok(n) => {
                    self.recovered();
                    self.metrics.events_published.inc_by(n as u64);
                }
                Err(e) => {
                    self.failed("publishing events", e);
                    tokio::time::sleep(BACKOFF).await;
                }
            }
        }
    }

    fn failed(&mut self, what: &str, e: anyhow::Error) {
        if !self.failing {
            tracing::error!(error = %format!("{e:#}"), "JetStream sink: {what} failed; retrying");
        }
        self.failing = true;
    }

    fn recovered(&mut self) {
        if self.failing {
            tracing::info!("JetStream sink: publishing again");
        }
        self.failing = false;
    }

    async fn connect(&self) -> anyhow::Result<jetstream::Context> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(self.url.as_str())
            .await?;
        let js = jetstream::new(client);
        js.get_or_create_stream(jetstream::stream::Config {
            name: self.settings.nats_stream.clone(),
            subjects: vec![format!("{}.>", self.settings.nats_subject_prefix)],
            ..Default::default()
        })
        .await?;
        Ok(js)
    }

    /// One round; returns how many events it published.
    async fn round(&self, js: &jetstream::Context) -> anyhow::Result<usize> {
        let mut conn = self.pool.get().await?;
        let (limit, prefix) = (self.settings.publish_batch, &self.settings.nats_subject_prefix);
        AsyncConnection::transaction::<_, anyhow::Error, _>(
            &mut *conn,
            async move |conn: &mut diesel_async::AsyncPgConnection| {
                let events = event::lock_unpublished(conn, limit).await?;
                if events.is_empty() {
                    return Ok(0);
                }
                let mut acks = Vec::with_capacity(events.len());
                for e in &events {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert(async_nats::header::NATS_MESSAGE_ID, e.id.to_string().as_str());
                    let body = event::body(&e.event_type, e.created_at, &e.data);
                    let subject = format!("{prefix}.{}", e.event_type);
                    acks.push(js.publish_with_headers(subject, headers, body.into()).await?);
                }
                tokio::time::timeout(ACK_TIMEOUT, async {
                    for ack in acks {
                        ack.await?;
                    }
                    Ok::<_, anyhow::Error>(())
                })
                .await
                .map_err(|_| anyhow::anyhow!("no acknowledgement from JetStream within {ACK_TIMEOUT:?}"))??;
                let ids: Vec<_> = events.iter().map(|e| e.id).collect();
                event::mark_published(conn, &ids).await?;
                Ok(events.len())
            },
        )
        .await
    }
}
