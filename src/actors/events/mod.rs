//! The outbox's readers. Events are written by the actors that make the
//! changes, in the changes' transactions (`models::event`); these actors
//! take them from there, at least once:
//!
//! - `WebhookActor` (`webhooks.rs`): webhook endpoints and signed delivery;
//! - `JetStreamActor` (`jetstream.rs`): publishing to NATS JetStream.

use std::sync::Arc;

use tokio::sync::Notify;

pub mod jetstream;
pub mod schedule;
pub mod target;
pub mod webhooks;

/// What the writers of events share with the readers of this instance:
/// whether a JetStream sink is configured, and how to wake the readers
/// after a commit (other instances' readers find the events by polling).
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    sink: bool,
    wake: Arc<Wakers>,
}

#[derive(Debug, Default)]
struct Wakers {
    webhooks: Notify,
    jetstream: Notify,
}

impl Outbox {
    pub fn new(sink: bool) -> Self {
        Self {
            sink,
            wake: Arc::default(),
        }
    }

    /// A JetStream sink is configured: events wait for it too.
    pub fn sink(&self) -> bool {
        self.sink
    }

    /// `n` events were committed.
    pub fn committed(&self, n: usize) {
        if n > 0 {
            self.wake.webhooks.notify_one();
            self.wake.jetstream.notify_one();
        }
    }

    async fn webhooks_woken(&self) {
        self.wake.webhooks.notified().await
    }

    async fn jetstream_woken(&self) {
        self.wake.jetstream.notified().await
    }
}
