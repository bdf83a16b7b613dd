//! InventoryActor: the only writer of `products.stock_quantity` and
//! `reserved_quantity`, and of checkout holds.
//!
//! Handles: `PlaceOrder`, `CancelOrder`, `AdjustStock`, `Reserve`,
//! `ConfirmReservation`, `ReleaseReservation`, `Flush` (and, for tests,
//! `PanicNextBatch`).
//!
//! Requests queue up; the actor drains the queue into a batch (at most
//! `inventory.max_batch`, after waiting `inventory.max_wait_us` for company)
//! and runs one transaction for it (`batch`): lock the product rows in id
//! order, decide in arrival order, all-or-nothing per request (`allocate`),
//! write everything in one multi-row statement (`sql`; with the events of the
//! changes that somebody receives, see `models::event`), commit once, then
//! answer every waiting request. While a batch is in the database the mailbox
//! keeps filling the next one; up to `inventory.max_in_flight` batches are in
//! the database at once, each starting once the previous one holds its locks.
//!
//! Expiry: every `reservations.expiry_interval_ms` (and at start) the actor
//! queues an expiry op; its batch (of its own, no requests in it) claims up to
//! `reservations.expiry_batch`
//! due holds with `FOR UPDATE SKIP LOCKED` (each due hold is claimed by one
//! instance only) and moves their units back to stock like a release. A full
//! claim queues the next one at once.
//!
//! A panic inside a batch is caught: its transaction is never committed, its
//! requests get an error, and the actor stops so its Supervisor restarts it;
//! the requests already queued for the next batch are kept.

mod allocate;
mod batch;
mod sql;

use std::{
    collections::VecDeque,
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, Instant},
};

use actix::prelude::*;
use futures_util::FutureExt;
use tokio::sync::oneshot;

pub use self::allocate::Line;
use self::allocate::{NewHold, Op, Outcome};
#[doc(hidden)]
pub use self::batch::OpenTransaction;
use crate::{
    actors::events::Outbox,
    auth::AuthUser,
    cache::{Cache, Family},
    config::{InventorySettings, ReservationSettings},
    db::DbPool,
    error::AppError,
    metrics::Metrics,
    models::{order::OrderView, reservation::ReservationView},
};
use uuid::Uuid;

/// Session settings of the InventoryActor's connections (measured in
/// docs/decisions/0003):
///
/// - one generic plan per statement: with the default `plan_cache_mode`,
///   Postgres planned the batch statements again for every batch (their array
///   parameters make a custom plan look cheaper);
/// - no sequential scans: the foreign-key checks of each new order and item
///   are planned once per connection, and planned while `orders` looks empty
///   to the statistics (a fresh shop analyzed before its first sale) they scan
///   the whole table for every new row as it fills, 1,500 orders/s instead of
///   11,000. Every statement here finds rows by key;
/// - no bitmap scans: a bitmap scan visits the heap for every index entry,
///   dead ones included, every time; a plain index scan marks an entry dead
///   once and skips it afterwards. The per-user count of active holds went
///   from 0.1 to 3.2 ms per batch on a busy shop between vacuums;
/// - no JIT: every statement here is short, and a plan that has to scan
///   anyway carries seqscan-off's huge cost estimate, which passes the JIT
///   thresholds: ~80 ms of compilation inside the batch, holding its locks.
pub const SESSION_SETUP: &str = "SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off; \
     SET enable_bitmapscan = off; SET jit = off";

type Responder = oneshot::Sender<Result<Outcome, AppError>>;

pub struct InventoryActor {
    pool: DbPool,
    cache: Cache,
    outbox: Outbox,
    metrics: Arc<Metrics>,
    settings: InventorySettings,
    holds: ReservationSettings,
    queue: VecDeque<(Op, Responder)>,
    /// An expiry op is queued or running.
    expiring: bool,
    /// The last expiry op failed (logged once until one succeeds).
    expiry_failing: bool,
    /// Batches started and not yet answered (at most `max_in_flight`).
    in_flight: usize,
    /// A batch has started but does not hold its row locks yet: the next one
    /// waits, so batches take the locks in the order they started.
    locking: bool,
    /// A `run_batch` is due (after `max_wait_us`).
    scheduled: bool,
    panic_next_batch: bool,
    /// `Flush` callers waiting for the queue to empty.
    flushed: Vec<oneshot::Sender<()>>,
}

impl InventoryActor {
    pub fn new(
        pool: DbPool,
        cache: Cache,
        outbox: Outbox,
        settings: InventorySettings,
        holds: ReservationSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            pool,
            cache,
            outbox,
            metrics,
            settings,
            holds,
            queue: VecDeque::new(),
            expiring: false,
            expiry_failing: false,
            in_flight: 0,
            locking: false,
            scheduled: false,
            panic_next_batch: false,
            flushed: Vec::new(),
        }
    }

    /// Queues `op` and returns the future of its outcome.
    fn submit(&mut self, op: Op, ctx: &mut Context<Self>) -> ResponseFuture<Result<Outcome, AppError>> {
        if self.queue.len() >= self.settings.max_queue {
            return Box::pin(async { Err(AppError::Unavailable(anyhow::anyhow!("inventory queue full"))) });
        }
        let (tx, rx) = oneshot::channel();
        self.queue.push_back((op, tx));
        self.metrics.inventory_queue_depth.set(self.queue.len() as i64);
        self.schedule(ctx);
        Box::pin(async move {
            rx.await.map_err(|_| {
                AppError::Unavailable(anyhow::anyhow!("inventory batch was lost (actor restarted)"))
            })?
        })
    }

    /// Runs a batch soon (after `max_wait_us`, so that it has company) when
    /// there is work and room for it: no batch still waiting for its locks,
    /// fewer than `max_in_flight` running. With two in flight, the second
    /// batch's BEGIN and locking statement already wait in Postgres while the
    /// first writes and commits: the row lock passes to it at the commit,
    /// without a round trip to the actor in between.
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight == 0 && self.queue.is_empty() {
            for tx in self.flushed.drain(..) {
                let _ = tx.send(());
            }
        }
        if self.scheduled || self.queue.is_empty() {
            return;
        }
        self.scheduled = true;
        ctx.run_later(Duration::from_micros(self.settings.max_wait_us), |act, ctx| {
            act.scheduled = false;
            act.run_batch(ctx)
        });
    }

    fn run_batch(&mut self, ctx: &mut Context<Self>) {
        if self.queue.is_empty() || self.locking || self.in_flight >= self.settings.max_in_flight.max(1) {
            return;
        }
        // An expiry runs in a batch of its own: its hundreds of holds never
        // keep the requests of a batch waiting.
        let is_expiry = |(op, _): &(Op, Responder)| matches!(op, Op::Expire { .. });
        let n = if self.queue.front().is_some_and(is_expiry) {
            1
        } else {
            let requests = self.queue.iter().position(is_expiry).unwrap_or(self.queue.len());
            requests.min(self.settings.max_batch.max(1))
        };
        let (ops, responders): (Vec<Op>, Vec<Responder>) = self.queue.drain(..n).unzip();
        self.in_flight += 1;
        self.locking = true;
        self.metrics.inventory_batches.inc();
        self.metrics.inventory_batch_size.observe(n as f64);
        self.metrics.inventory_queue_depth.set(self.queue.len() as i64);
        let places: Vec<bool> = ops.iter().map(|op| matches!(op, Op::Place { .. })).collect();
        let (pool, cache, outbox) = (self.pool.clone(), self.cache.clone(), self.outbox.clone());
        // The injected panic hits a batch with a request in it, not a
        // background expiry.
        let inject_panic = self.panic_next_batch && ops.iter().any(|op| !matches!(op, Op::Expire { .. }));
        self.panic_next_batch &= !inject_panic;

        let (locked_tx, locked_rx) = oneshot::channel::<()>();
        // Locks held (or the batch failed first): the next batch may start.
        ctx.spawn(locked_rx.into_actor(self).map(|_, act, ctx| {
            act.locking = false;
            act.schedule(ctx);
        }));
        let started = Instant::now();
        let fut = AssertUnwindSafe(async move {
            let done = batch::execute(pool, ops, locked_tx, outbox.sink(), inject_panic).await?;
            outbox.committed(done.events);
            // Committed: invalidate before anyone is answered, so no client
            // reads a stock figure older than its own order.
            invalidate(&cache, &done.changed).await;
            Ok::<_, AppError>(done)
        })
        .catch_unwind();
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            act.in_flight -= 1;
            act.metrics
                .inventory_batch_duration
                .observe(started.elapsed().as_secs_f64());
            match result {
                Ok(Ok(done)) => act.answer(responders, done.outcomes, places),
                Ok(Err(e)) => fail_all(responders, &e),
                Err(_) => {
                    // Dropping the responders answers every waiting request
                    // with an error; the transaction was never committed.
                    tracing::error!(
                        batch = n,
                        "inventory batch panicked; rolled back, restarting the actor"
                    );
                    drop(responders);
                    ctx.stop();
                    return;
                }
            }
            act.schedule(ctx);
        }));
    }

    fn answer(
        &self,
        responders: Vec<Responder>,
        outcomes: Vec<Result<Outcome, AppError>>,
        places: Vec<bool>,
    ) {
        for ((tx, outcome), place) in responders.into_iter().zip(outcomes).zip(places) {
            if place {
                self.count_order(&outcome);
            }
            self.count_hold(&outcome);
            let _ = tx.send(outcome);
        }
    }

    fn count_hold(&self, outcome: &Result<Outcome, AppError>) {
        let (event, n) = match outcome {
            Ok(Outcome::Reserved(_)) => ("created", 1),
            Ok(Outcome::Confirmed { created: true, .. }) => ("confirmed", 1),
            Ok(Outcome::Released { hold, ended: true }) => (hold.status.as_str(), 1),
            Ok(Outcome::Expired(n)) => ("expired", *n as u64),
            _ => return,
        };
        self.metrics.reservations.with_label_values(&[event]).inc_by(n);
    }

    /// Queues an expiry op unless one is queued or running; a full claim
    /// queues the next one as soon as it is answered.
    fn expire_due(&mut self, ctx: &mut Context<Self>) {
        if self.expiring {
            return;
        }
        self.expiring = true;
        let limit = self.holds.expiry_batch.max(1) as i64;
        let fut = self.submit(Op::Expire { limit }, ctx);
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            act.expiring = false;
            match result {
                Ok(outcome) => {
                    if std::mem::take(&mut act.expiry_failing) {
                        tracing::info!("expiring due reservations works again");
                    }
                    if matches!(outcome, Outcome::Expired(n) if n as i64 >= limit) {
                        act.expire_due(ctx);
                    }
                }
                Err(e) => {
                    if !std::mem::replace(&mut act.expiry_failing, true) {
                        tracing::warn!(error = %e, "expiring due reservations failed; retrying every interval");
                    }
                }
            }
        }));
    }

    fn count_order(&self, outcome: &Result<Outcome, AppError>) {
        let reason = match outcome {
            Ok(_) => return self.metrics.orders_placed.inc(),
            Err(AppError::Conflict { .. }) => "insufficient_stock",
            Err(AppError::Unprocessable { .. }) => "invalid_product",
            Err(_) => "error",
        };
        self.metrics.orders_rejected.with_label_values(&[reason]).inc();
    }
}

async fn invalidate(cache: &Cache, changed: &[i64]) {
    if !changed.is_empty() {
        let mut families: Vec<Family> = changed.iter().copied().map(Family::Product).collect();
        families.push(Family::Products);
        cache.invalidate(&families).await;
    }
}

/// Answers every request of a failed batch with a copy of its error.
fn fail_all(responders: Vec<Responder>, e: &AppError) {
    tracing::warn!(error = %e, batch = responders.len(), "inventory batch failed; rolled back");
    let message = format!("{e:#}");
    for tx in responders {
        let copy = match e {
            AppError::Unavailable(_) => AppError::Unavailable(anyhow::anyhow!("{message}")),
            _ => AppError::Internal(anyhow::anyhow!("{message}")),
        };
        let _ = tx.send(Err(copy));
    }
}

impl Actor for InventoryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        // After a restart, requests queued before the failure still run.
        self.in_flight = 0;
        self.locking = false;
        self.scheduled = false;
        self.expiring = false;
        self.schedule(ctx);
        // Holds that expired while no instance ran go first.
        self.expire_due(ctx);
        let every = Duration::from_millis(self.holds.expiry_interval_ms.max(10));
        ctx.run_interval(every, |act, ctx| act.expire_due(ctx));
    }
}

impl Supervised for InventoryActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!(
            actor = "InventoryActor",
            queued = self.queue.len(),
            "restarting after a failure"
        );
    }
}

/// Places an order: the new order, or 409 (short stock) / 422 (unknown or
/// inactive product). With `idempotency_key`, the key's row is completed in
/// the same transaction.
#[derive(Message)]
#[rtype(result = "Result<OrderView, AppError>")]
pub struct PlaceOrder {
    pub user_id: i64,
    pub lines: Vec<Line>,
    pub idempotency_key: Option<crate::models::idempotency::Owned>,
}

/// Cancels an order and restocks its items in the same transaction.
#[derive(Message)]
#[rtype(result = "Result<OrderView, AppError>")]
pub struct CancelOrder {
    pub order_id: i64,
    pub caller: AuthUser,
}

/// Moves a product's stock by `delta`; below zero is a 409.
#[derive(Message)]
#[rtype(result = "Result<StockLevel, AppError>")]
pub struct AdjustStock {
    pub product_id: i64,
    pub delta: i32,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct StockLevel {
    pub product_id: i64,
    pub stock_quantity: i32,
}

/// Holds `lines` for `ttl_secs`: the new `active` reservation, or 409 (short
/// stock, or the caller's active holds at the limit) / 422 (unknown or
/// inactive product). With `idempotency_key`, the key's row is completed in
/// the same transaction.
#[derive(Message)]
#[rtype(result = "Result<ReservationView, AppError>")]
pub struct Reserve {
    pub user_id: i64,
    pub lines: Vec<Line>,
    pub ttl_secs: i64,
    pub idempotency_key: Option<crate::models::idempotency::Owned>,
}

/// Turns the caller's active hold into a pending order. `created` is false
/// when an earlier confirm already made the order (which is returned).
#[derive(Message)]
#[rtype(result = "Result<Confirmation, AppError>")]
pub struct ConfirmReservation {
    pub id: Uuid,
    pub caller: AuthUser,
}

#[derive(Debug)]
pub struct Confirmation {
    pub order: OrderView,
    pub created: bool,
}

/// Releases a hold (owner or admin): its units go back to stock.
#[derive(Message)]
#[rtype(result = "Result<ReservationView, AppError>")]
pub struct ReleaseReservation {
    pub id: Uuid,
    pub caller: AuthUser,
}

/// Resolves once every queued request has been decided and answered
/// (graceful shutdown waits for it before closing the pools).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

/// Test hook: the next batch panics after locking its rows, mid-transaction.
#[doc(hidden)]
#[derive(Message)]
#[rtype(result = "()")]
pub struct PanicNextBatch;

/// Queues `op`; `pick` takes the handler's answer out of its outcome.
fn handle_op<T: 'static>(
    actor: &mut InventoryActor,
    op: Op,
    ctx: &mut Context<InventoryActor>,
    pick: fn(Outcome) -> Option<T>,
) -> ResponseFuture<Result<T, AppError>> {
    let fut = actor.submit(op, ctx);
    Box::pin(async move {
        pick(fut.await?).ok_or_else(|| AppError::internal(anyhow::anyhow!("unexpected inventory outcome")))
    })
}

impl Handler<PlaceOrder> for InventoryActor {
    type Result = ResponseFuture<Result<OrderView, AppError>>;

    fn handle(&mut self, msg: PlaceOrder, ctx: &mut Context<Self>) -> Self::Result {
        let op = Op::Place {
            user_id: msg.user_id,
            lines: msg.lines,
            idempotency_key: msg.idempotency_key,
        };
        handle_op(self, op, ctx, |o| match o {
            Outcome::Placed(order) => Some(order),
            _ => None,
        })
    }
}

impl Handler<CancelOrder> for InventoryActor {
    type Result = ResponseFuture<Result<OrderView, AppError>>;

    fn handle(&mut self, msg: CancelOrder, ctx: &mut Context<Self>) -> Self::Result {
        let op = Op::Cancel {
            order_id: msg.order_id,
            caller: msg.caller,
        };
        handle_op(self, op, ctx, |o| match o {
            Outcome::Cancelled(order) => Some(order),
            _ => None,
        })
    }
}

impl Handler<AdjustStock> for InventoryActor {
    type Result = ResponseFuture<Result<StockLevel, AppError>>;

    fn handle(&mut self, msg: AdjustStock, ctx: &mut Context<Self>) -> Self::Result {
        let op = Op::Adjust {
            product_id: msg.product_id,
            delta: msg.delta,
        };
        handle_op(self, op, ctx, |o| match o {
            Outcome::Adjusted {
                product_id,
                stock_quantity,
            } => Some(StockLevel {
                product_id,
                stock_quantity,
            }),
            _ => None,
        })
    }
}

impl Handler<Reserve> for InventoryActor {
    type Result = ResponseFuture<Result<ReservationView, AppError>>;

    fn handle(&mut self, msg: Reserve, ctx: &mut Context<Self>) -> Self::Result {
        let op = Op::Reserve(NewHold {
            id: Uuid::new_v4(),
            user_id: msg.user_id,
            lines: msg.lines,
            ttl_secs: msg.ttl_secs,
            max_active: self.holds.max_active_per_user,
            idempotency_key: msg.idempotency_key,
        });
        handle_op(self, op, ctx, |o| match o {
            Outcome::Reserved(hold) => Some(hold),
            _ => None,
        })
    }
}

impl Handler<ConfirmReservation> for InventoryActor {
    type Result = ResponseFuture<Result<Confirmation, AppError>>;

    fn handle(&mut self, msg: ConfirmReservation, ctx: &mut Context<Self>) -> Self::Result {
        let op = Op::Confirm {
            id: msg.id,
            caller: msg.caller,
        };
        handle_op(self, op, ctx, |o| match o {
            Outcome::Confirmed { order, created } => Some(Confirmation { order, created }),
            _ => None,
        })
    }
}

impl Handler<ReleaseReservation> for InventoryActor {
    type Result = ResponseFuture<Result<ReservationView, AppError>>;

    fn handle(&mut self, msg: ReleaseReservation, ctx: &mut Context<Self>) -> Self::Result {
        let op = Op::Release {
            id: msg.id,
            caller: msg.caller,
        };
        handle_op(self, op, ctx, |o| match o {
            Outcome::Released { hold, .. } => Some(hold),
            _ => None,
        })
    }
}

impl Handler<Flush> for InventoryActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.flushed.push(tx);
        self.schedule(ctx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<PanicNextBatch> for InventoryActor {
    type Result = ();

    fn handle(&mut self, _: PanicNextBatch, _: &mut Context<Self>) {
        self.panic_next_batch = true;
    }
}
