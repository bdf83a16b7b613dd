//! InventoryActor: the only writer of `products.stock_quantity`.
//!
//! Handles: `PlaceOrder`, `CancelOrder`, `AdjustStock` (and, for tests,
//! `PanicNextBatch`).
//!
//! Requests queue up; the actor drains the queue into a batch (at most
//! `inventory.max_batch`, after waiting `inventory.max_wait_us` for company)
//! and runs one transaction for it: lock the product rows in id order,
//! allocate in arrival order (all-or-nothing per order), write everything in
//! one multi-row statement, commit once, then answer every waiting request.
//! While a batch is in the database the mailbox keeps filling the next one.
//!
//! The fast path (`inventory.fast_path`): orders for products the actor
//! knows from its last locked read are decided at once and written by one
//! compare-and-set statement, pipelined on one connection; if any row
//! changed behind the actor's back the statement writes nothing and the
//! requests are decided again on the locking path (`run_fast`).
//!
//! A panic inside a batch is caught: its transaction is never committed, its
//! requests get 503, and the actor stops so its Supervisor restarts it; the
//! requests already queued for the next batch are kept.

mod allocate;
mod sql;

use std::{
    collections::{HashMap, VecDeque},
    panic::AssertUnwindSafe,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use actix::prelude::*;
use bigdecimal::BigDecimal;
use chrono::{DateTime, SubsecRound, Utc};
use diesel::prelude::*;
use diesel_async::{
    pooled_connection::bb8::PooledConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
};
use futures_util::FutureExt;
use tokio::sync::oneshot;

use self::allocate::{allocate, Locked, Op, Outcome, Writes};
pub use self::allocate::{Line, Placed};
use crate::{
    auth::AuthUser,
    cache::{Cache, Family},
    config::InventorySettings,
    db::{
        schema::{order_items, orders},
        DbPool,
    },
    error::AppError,
    metrics::Metrics,
    models::order::{OrderItem, OrderRow, OrderView},
};

pub const ORDER_CREATED: &str = "Order created successfully";

/// Session settings of the InventoryActor's connections. Everything it runs
/// reads and writes rows by key, including the foreign-key checks Postgres
/// runs for each new order and item. Those checks' plans are cached per
/// connection; planned while `orders` was empty (as on a fresh shop, or where
/// autovacuum is off), they scan the whole table for every row once it fills:
/// a flash sale on a fresh database ran at 2,000 orders/s instead of 11,000.
/// Without sequential scans every plan is an index lookup.
///
/// Generic plans: the batch statements and those foreign-key checks are
/// prepared, and with the default `plan_cache_mode` Postgres planned the
/// write statement again for every batch (its array parameters make the
/// custom plan look cheaper): a fifth of the fast-path backend's time with
/// one instance, a third with two (smaller batches). Every statement here
/// looks rows up by key, so the one plan serves every batch.
pub const SESSION_SETUP: &str = "SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan";

type Responder = oneshot::Sender<Result<Outcome, AppError>>;

pub struct InventoryActor {
    pool: DbPool,
    cache: Cache,
    metrics: Arc<Metrics>,
    settings: InventorySettings,
    queue: VecDeque<(Op, Responder)>,
    /// Batches started and not yet answered (at most `max_in_flight`).
    in_flight: usize,
    /// A batch has started but does not hold its row locks yet: the next one
    /// waits, so batches take the locks in the order they started.
    locking: bool,
    panic_next_batch: bool,
    /// `Flush` callers waiting for the queue to empty.
    flushed: Vec<oneshot::Sender<()>>,
    /// A `run_batch` is due (after `max_wait_us`).
    scheduled: bool,
    /// The fast path's view of the products: the last locked read, minus
    /// what batches decided since. Emptied on any doubt.
    known: HashMap<i64, Locked>,
    /// Sequence values fetched ahead for fast-path orders and items.
    spare_orders: VecDeque<i64>,
    spare_items: VecDeque<i64>,
    /// The fast path's own connection: its batches run back to back on it.
    fast: FastConn,
    fast_in_flight: usize,
    /// After a failed compare-and-set, the locking path only, until then.
    fast_paused_until: Option<Instant>,
    /// Which connection `fast` is (answers of batches sent on an earlier
    /// one do not move the fence).
    fast_generation: u64,
    /// The fence (`sql::WriteBatch::fence`) the next fast batch requires,
    /// the last one a batch confirmed, and the last one handed out.
    fast_fence: Option<i64>,
    fast_confirmed: Option<i64>,
    fast_seq: i64,
    /// Per known product, how far the rows were found off from what the
    /// actor expected (sold or restocked elsewhere), summed: fast batches
    /// still in flight were decided before the latest corrections.
    drift: HashMap<i64, i64>,
    /// Until when another writer counts as selling the same products
    /// (`correct` saw a row off from what this actor expected).
    contended_until: Option<Instant>,
    /// A `refill_ids` statement is in flight.
    refilling: bool,
    /// Requests of failed fast batches, in arrival order: they go back to
    /// the head of the queue once no fast batch is in flight.
    retry: Vec<(Op, Responder)>,
}

/// Whether the next batch can take the fast path.
enum Fast {
    Ready(Rc<PooledConnection<'static, AsyncPgConnection>>),
    /// It could, with more spare ids.
    NeedsIds,
    /// It could once the locked batch in flight is done.
    AfterLocked,
    No,
}

enum FastConn {
    None,
    Connecting,
    Ready(Rc<PooledConnection<'static, AsyncPgConnection>>),
}

/// Fast batches in flight at once on the fast connection.
const FAST_MAX_IN_FLIGHT: usize = 4;
/// ...and while another writer (another instance) was seen moving the same
/// rows in the last `CONTENDED_FOR`: then every batch waits for the other
/// writer's row lock anyway, so pipelining gains nothing, and more batches
/// in flight only cut the same orders into smaller batches, each paying the
/// per-batch cost. Two instances sold 10-15% more with one in flight than
/// with four (BENCHMARKS.md, session 6); one instance alone sells more with
/// four.
const CONTENDED_MAX_IN_FLIGHT: usize = 1;
const CONTENDED_FOR: Duration = Duration::from_secs(1);
/// When fewer than `SPARE_LOW` spare order or item ids are left, this many
/// more are fetched: on the fast connection, pipelined with its batches
/// (`refill_ids`), or by the locking statement when there is no fast path
/// yet. (Fetched by the locking path only, every 1,024 orders, the fast
/// path had to drain and wait for a locked batch ~10 times a second.)
const SPARE_BATCH: i64 = 2048;
const SPARE_LOW: usize = 1024;
/// How long the fast path stays off after a compare-and-set failed (another
/// instance selling the same product would otherwise fail it again and again).
const FAST_PAUSE: Duration = Duration::from_secs(1);

impl InventoryActor {
    pub fn new(pool: DbPool, cache: Cache, settings: InventorySettings, metrics: Arc<Metrics>) -> Self {
        Self {
            pool,
            cache,
            metrics,
            settings,
            queue: VecDeque::new(),
            in_flight: 0,
            locking: false,
            panic_next_batch: false,
            flushed: Vec::new(),
            scheduled: false,
            known: HashMap::new(),
            spare_orders: VecDeque::new(),
            spare_items: VecDeque::new(),
            fast: FastConn::None,
            fast_in_flight: 0,
            fast_paused_until: None,
            fast_generation: 0,
            fast_fence: None,
            fast_confirmed: None,
            fast_seq: 0,
            drift: HashMap::new(),
            contended_until: None,
            refilling: false,
            retry: Vec::new(),
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

    fn count_order(&self, outcome: &Result<Outcome, AppError>) {
        let reason = match outcome {
            Ok(_) => return self.metrics.orders_placed.inc(),
            Err(AppError::Conflict { .. }) => "insufficient_stock",
            Err(AppError::Unprocessable { .. }) => "invalid_product",
            Err(_) => "error",
        };
        self.metrics.orders_rejected.with_label_values(&[reason]).inc();
    }

    /// Runs a batch soon (after `max_wait_us`, so that it has company) when
    /// there is work; `run_batch` picks the path.
    ///
    /// Locking path: a batch starts when no batch is still waiting for its
    /// locks and fewer than `max_in_flight` are running. With two in flight,
    /// the second batch's BEGIN and locking statement are already waiting in
    /// Postgres while the first writes and commits: the row lock passes to it
    /// at the commit, without a round trip to the actor in between.
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight == 0 && self.fast_in_flight == 0 && self.queue.is_empty() && self.retry.is_empty() {
            for tx in self.flushed.drain(..) {
                let _ = tx.send(());
            }
        }
        if self.scheduled || self.queue.is_empty() || !self.retry.is_empty() {
            return;
        }
        self.connect_fast(ctx);
        self.scheduled = true;
        ctx.run_later(Duration::from_micros(self.settings.max_wait_us), |act, ctx| {
            act.scheduled = false;
            act.run_batch(ctx)
        });
    }

    fn run_batch(&mut self, ctx: &mut Context<Self>) {
        if self.queue.is_empty() || !self.retry.is_empty() {
            return self.schedule(ctx);
        }
        let n = self.queue.len().min(self.settings.max_batch.max(1));
        match self.fast_ready(n) {
            Fast::Ready(conn) => {
                self.run_fast(n, conn, ctx);
                return self.schedule(ctx);
            }
            // Spare ids are on their way, or the locked batch in flight is
            // about to tell what the fast path needs: wait for it rather than
            // start another locked batch (under a steady queue, pipelined
            // locked batches would otherwise keep each other going).
            Fast::NeedsIds if self.refilling => return,
            Fast::AfterLocked => return,
            Fast::NeedsIds | Fast::No => {}
        }
        // The locking path waits for fast batches (and they for it): each
        // decides from what the other left.
        if self.fast_in_flight > 0 || self.locking || self.in_flight >= self.settings.max_in_flight.max(1) {
            return;
        }
        self.in_flight += 1;
        self.locking = true;
        self.metrics
            .inventory_batches
            .with_label_values(&["locked"])
            .inc();
        self.run_locked(n, ctx);
    }

    /// The locking path: lock the rows, decide, write, commit.
    fn run_locked(&mut self, n: usize, ctx: &mut Context<Self>) {
        let (ops, responders): (Vec<Op>, Vec<Responder>) = self.queue.drain(..n).unzip();
        self.metrics.inventory_batch_size.observe(n as f64);
        let places: Vec<bool> = ops.iter().map(|op| matches!(op, Op::Place { .. })).collect();
        self.metrics.inventory_queue_depth.set(self.queue.len() as i64);
        let (pool, cache) = (self.pool.clone(), self.cache.clone());
        let inject_panic = std::mem::take(&mut self.panic_next_batch);
        let spare = if self.settings.fast_path && self.spare_orders.len() < SPARE_LOW {
            SPARE_BATCH
        } else {
            0
        };
        let (locked_tx, locked_rx) = oneshot::channel::<()>();
        // Locks held (or the batch failed first): the next batch may start.
        ctx.spawn(locked_rx.into_actor(self).map(|_, act, ctx| {
            act.locking = false;
            act.schedule(ctx);
        }));
        let started = Instant::now();
        let fut = AssertUnwindSafe(async move {
            let done = execute(pool, ops, locked_tx, inject_panic, spare).await?;
            let changed = &done.changed;
            // Committed: invalidate before anyone is answered, so no client
            // reads a stock figure older than its own order.
            invalidate(&cache, changed).await;
            Ok::<_, AppError>(done)
        })
        .catch_unwind();
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            act.in_flight -= 1;
            act.batch_done("locked", started);
            match result {
                Ok(Ok(done)) => {
                    act.known.extend(done.known);
                    act.spare_orders.extend(done.spare_orders);
                    act.spare_items.extend(done.spare_items);
                    act.answer(responders, done.outcomes, places);
                }
                Ok(Err(e)) => {
                    act.forget();
                    fail_all(responders, &e, "inventory batch failed; rolled back");
                }
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

    /// Records a batch's time from its first statement to its answer here.
    fn batch_done(&self, path: &str, started: Instant) {
        self.metrics
            .inventory_batch_duration
            .with_label_values(&[path])
            .observe(started.elapsed().as_secs_f64());
    }

    fn answer(&self, responders: Vec<Responder>, outcomes: Outcomes, places: Vec<bool>) {
        for ((tx, outcome), place) in responders.into_iter().zip(outcomes).zip(places) {
            if place {
                self.count_order(&outcome);
            }
            let _ = tx.send(outcome);
        }
    }

    /// Drops everything the fast path knew.
    fn forget(&mut self) {
        self.known.clear();
        self.drift.clear();
    }

    /// A fast batch was written: where a row held more or less than the
    /// actor expected (another instance sold, an admin restocked), `known`
    /// moves by the difference not yet accounted for.
    fn correct(&mut self, sent: &[(i64, i32, i64)], rows: &[(i64, i32)]) {
        for ((id, expected, drift_then), (_, actual)) in
            sent.iter().zip(rows).filter(|((a, ..), (b, _))| a == b)
        {
            let drift = self.drift.entry(*id).or_insert(0);
            let delta = drift_correction(*expected, *actual, *drift_then, *drift);
            if delta == 0 {
                continue;
            }
            *drift += delta;
            self.contended_until = Some(Instant::now() + CONTENDED_FOR);
            self.metrics.inventory_foreign_writes.inc();
            if let Some(p) = self.known.get_mut(id) {
                p.stock = i32::try_from((i64::from(p.stock) - delta).max(0)).unwrap_or(i32::MAX);
            }
        }
    }

    /// Fetches spare ids on the fast connection when they run low, behind
    /// the batches already sent (ids only need to be unique, not ordered).
    fn refill_ids(
        &mut self,
        conn: &Rc<PooledConnection<'static, AsyncPgConnection>>,
        ctx: &mut Context<Self>,
    ) {
        if self.refilling || (self.spare_orders.len() >= SPARE_LOW && self.spare_items.len() >= SPARE_LOW) {
            return;
        }
        self.refilling = true;
        let conn = Rc::clone(conn);
        let fut = async move {
            let c: &AsyncPgConnection = &conn;
            let mut c = c;
            sql::NextIds {
                orders: SPARE_BATCH,
                items: SPARE_BATCH,
            }
            .get_result::<(Vec<i64>, Vec<i64>)>(&mut c)
            .await
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            act.refilling = false;
            match result {
                Ok((orders, items)) => {
                    act.spare_orders.extend(orders);
                    act.spare_items.extend(items);
                }
                // The locking path fetches them instead.
                Err(e) => tracing::warn!(error = %e, "inventory fast path: could not fetch spare ids"),
            }
            act.schedule(ctx);
        }));
    }

    /// Takes the fast path's connection from the pool when it has none.
    fn connect_fast(&mut self, ctx: &mut Context<Self>) {
        if !self.settings.fast_path || !matches!(self.fast, FastConn::None) {
            return;
        }
        self.fast = FastConn::Connecting;
        let pool = self.pool.clone();
        ctx.spawn(async move { pool.get_owned().await }.into_actor(self).map(|conn, act, ctx| {
            act.fast = match conn {
                Ok(conn) => {
                    act.fast_generation += 1;
                    act.fast_fence = None;
                    act.fast_confirmed = None;
                    FastConn::Ready(Rc::new(conn))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "inventory fast path: no connection; locking path only");
                    FastConn::None
                }
            };
            act.schedule(ctx);
        }));
    }

    fn fast_max_in_flight(&self) -> usize {
        if self.contended_until.is_some_and(|t| Instant::now() < t) {
            CONTENDED_MAX_IN_FLIGHT
        } else {
            FAST_MAX_IN_FLIGHT
        }
    }

    /// The fast path's connection, when the next `n` requests can take it:
    /// only orders, for products known to be active, no locking batch in
    /// flight (its decisions are not in `known` yet), ids to spare.
    fn fast_ready(&self, n: usize) -> Fast {
        let FastConn::Ready(conn) = &self.fast else {
            return Fast::No;
        };
        if !self.settings.fast_path
            || self.panic_next_batch
            || self.fast_in_flight >= self.fast_max_in_flight()
            || self.fast_paused_until.is_some_and(|t| Instant::now() < t)
        {
            return Fast::No;
        }
        let (mut orders, mut items) = (0, 0);
        for (op, _) in self.queue.iter().take(n) {
            let Op::Place { lines, .. } = op else {
                return Fast::No;
            };
            if !lines
                .iter()
                .all(|l| self.known.get(&l.product_id).is_some_and(|p| p.is_active))
            {
                return Fast::No;
            }
            orders += 1;
            items += lines.len();
        }
        if self.in_flight > 0 {
            Fast::AfterLocked
        } else if self.spare_orders.len() >= orders && self.spare_items.len() >= items {
            Fast::Ready(Rc::clone(conn))
        } else {
            Fast::NeedsIds
        }
    }

    /// The fast path: decide now from `known`, then send one statement that
    /// writes everything only if every product row still holds the stock,
    /// price and activity the decision assumed (else it fails whole, and the
    /// requests go back to the head of the queue for the locking path).
    /// Autocommit: the statement is its own transaction. Batches follow each
    /// other on one connection without waiting for replies, so the row lock
    /// is held only while Postgres executes one of them.
    fn run_fast(
        &mut self,
        n: usize,
        conn: Rc<PooledConnection<'static, AsyncPgConnection>>,
        ctx: &mut Context<Self>,
    ) {
        let (ops, responders): (Vec<Op>, Vec<Responder>) = self.queue.drain(..n).unzip();
        self.metrics.inventory_batch_size.observe(n as f64);
        self.metrics.inventory_queue_depth.set(self.queue.len() as i64);
        let places = vec![true; ops.len()];
        let (n_orders, n_items) = placed_counts(&ops);
        let mut product_ids: Vec<i64> = ops.iter().flat_map(placed_lines).map(|l| l.product_id).collect();
        product_ids.sort_unstable();
        product_ids.dedup();
        let order_ids: Vec<i64> = self.spare_orders.drain(..n_orders).collect();
        let item_ids: Vec<i64> = self.spare_items.drain(..n_items).collect();
        self.refill_ids(&conn, ctx);
        let before: HashMap<i64, Locked> = product_ids
            .iter()
            .filter_map(|id| self.known.get(id).map(|p| (*id, p.clone())))
            .collect();
        // Postgres keeps microseconds: the 201 body must show what a later
        // read returns.
        let now = Utc::now().trunc_subsecs(6);
        let allocation = allocate(&ops, before.clone(), HashMap::new(), &order_ids, &item_ids, now);
        let changed: Vec<i64> = allocation.writes.stock.keys().copied().collect();
        // A product that turned an order away must hold exactly what the
        // actor believed (else the 409 could be wrong); the others need only
        // enough for what was sold.
        let exact: Vec<i64> = ops
            .iter()
            .zip(&allocation.outcomes)
            .filter(|(_, outcome)| outcome.is_err())
            .flat_map(|(op, _)| placed_lines(op))
            .map(|l| l.product_id)
            .collect();
        let mut expect: Vec<Expect> = before
            .iter()
            .map(|(id, b)| Expect {
                id: *id,
                stock: allocation.writes.stock.get(id).copied().unwrap_or(b.stock),
                expected: b.stock,
                exact: exact.contains(id),
                price: b.price.clone(),
            })
            .collect();
        // Rows are updated (locked) in id order, as on the locking path.
        expect.sort_unstable_by_key(|e| e.id);
        // Each product's expected stock after this batch, and the drift
        // already accounted for when it was decided.
        let sent: Vec<(i64, i32, i64)> = expect
            .iter()
            .map(|e| (e.id, e.stock, self.drift.get(&e.id).copied().unwrap_or(0)))
            .collect();
        for e in &expect {
            if let Some(p) = self.known.get_mut(&e.id) {
                p.stock = e.stock;
            }
        }
        self.fast_seq += 1;
        let seq = self.fast_seq;
        let generation = self.fast_generation;
        let fence = self.fast_fence.replace(seq);
        let stmt = cas_statement(allocation.writes, expect, now, fence, seq);
        let outcomes = allocation.outcomes;
        self.fast_in_flight += 1;
        let cache = self.cache.clone();
        let started = Instant::now();
        let fut = async move {
            let c: &AsyncPgConnection = &conn;
            let mut c = c;
            match stmt.get_result::<sql::Written>(&mut c).await {
                Ok((ids, stocks, ..)) => {
                    invalidate(&cache, &changed).await;
                    Ok(ids.into_iter().zip(stocks).collect::<Vec<(i64, i32)>>())
                }
                Err(diesel::result::Error::DatabaseError(_, info))
                    if info.message().starts_with(STALE) || info.message().starts_with(DEADLOCK) =>
                {
                    Err(FastFailure::Stale)
                }
                Err(e) => Err(FastFailure::Failed(AppError::from(e))),
            }
        };
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            act.fast_in_flight -= 1;
            act.batch_done("fast", started);
            let current = act.fast_generation == generation;
            match result {
                Ok(rows) => {
                    act.metrics.inventory_batches.with_label_values(&["fast"]).inc();
                    if current {
                        act.fast_confirmed = Some(seq);
                    }
                    act.correct(&sent, &rows);
                    act.answer(responders, outcomes, places)
                }
                Err(FastFailure::Stale) => {
                    act.metrics
                        .inventory_batches
                        .with_label_values(&["fast_retried"])
                        .inc();
                    tracing::info!(
                        batch = n,
                        "inventory fast path: stock changed under the batch; retrying it locked"
                    );
                    // Every later batch on the connection fails at the fence
                    // too; the next one requires what the last success set.
                    if current {
                        act.fast_fence = act.fast_confirmed;
                    }
                    act.forget();
                    act.fast_paused_until = Some(Instant::now() + FAST_PAUSE);
                    act.retry.extend(ops.into_iter().zip(responders));
                }
                Err(FastFailure::Failed(e)) => {
                    act.metrics
                        .inventory_batches
                        .with_label_values(&["fast_failed"])
                        .inc();
                    act.forget();
                    if current {
                        act.fast = FastConn::None;
                    }
                    fail_all(responders, &e, "inventory fast batch failed; nothing written");
                }
            }
            if act.fast_in_flight == 0 && !act.retry.is_empty() {
                for item in std::mem::take(&mut act.retry).into_iter().rev() {
                    act.queue.push_front(item);
                }
            }
            act.schedule(ctx);
        }));
    }
}

/// The message `storefront_expect_rows` (migration 000007) fails with.
const STALE: &str = "storefront: stock changed";
/// Postgres broke a lock cycle with another instance's batch by failing this
/// one: nothing was written, the locking path decides it again.
const DEADLOCK: &str = "deadlock detected";

/// One product row of a fast batch: its new stock, and what it must still
/// hold for the batch to be written.
struct Expect {
    id: i64,
    stock: i32,
    expected: i32,
    exact: bool,
    price: BigDecimal,
}

async fn invalidate(cache: &Cache, changed: &[i64]) {
    if !changed.is_empty() {
        let mut families: Vec<Family> = changed.iter().copied().map(Family::Product).collect();
        families.push(Family::Products);
        cache.invalidate(&families).await;
    }
}

/// Why a fast batch wrote nothing.
enum FastFailure {
    /// A compare-and-set did not match: retry on the locking path.
    Stale,
    Failed(AppError),
}

/// Answers every request of a failed batch with a copy of its error.
fn fail_all(responders: Vec<Responder>, e: &AppError, what: &str) {
    let status = actix_web::ResponseError::status_code(e);
    tracing::warn!(error = %e, %status, batch = responders.len(), "{what}");
    let message = format!("{e:#}");
    for tx in responders {
        let _ = tx.send(Err(same_error(e, &message)));
    }
}

/// How much lower than `known` the real stock is, newly found by a fast
/// batch that expected to leave `expected` and left `actual`: batches decided
/// after the drift grew from `drift_then` to `drift_now` already had that
/// part taken off.
fn drift_correction(expected: i32, actual: i32, drift_then: i64, drift_now: i64) -> i64 {
    (i64::from(expected) - i64::from(actual)) - (drift_now - drift_then)
}

/// The lines of an order to place; none for other ops.
fn placed_lines(op: &Op) -> &[Line] {
    match op {
        Op::Place { lines, .. } => lines,
        _ => &[],
    }
}

/// Orders and order lines among `ops` (the ids a batch needs).
fn placed_counts(ops: &[Op]) -> (usize, usize) {
    ops.iter().fold((0, 0), |(o, i), op| match op {
        Op::Place { lines, .. } => (o + 1, i + lines.len()),
        _ => (o, i),
    })
}

/// A copy of a batch-wide error for each of its requests.
fn same_error(e: &AppError, message: &str) -> AppError {
    match e {
        AppError::Unavailable(_) => AppError::Unavailable(anyhow::anyhow!("{message}")),
        _ => AppError::Internal(anyhow::anyhow!("{message}")),
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
        self.fast_in_flight = 0;
        self.refilling = false;
        self.fast = FastConn::None;
        self.forget();
        for item in std::mem::take(&mut self.retry).into_iter().rev() {
            self.queue.push_front(item);
        }
        self.schedule(ctx);
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

/// Places an order: 201 with the order, 409 (short stock) or 422 (unknown or
/// inactive product). `body` is the exact 201 response body, also stored for
/// the idempotency key when there is one.
#[derive(Message)]
#[rtype(result = "Result<Placed, AppError>")]
pub struct PlaceOrder {
    pub user_id: i64,
    pub lines: Vec<Line>,
    pub idempotency_key: Option<String>,
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

/// Resolves once every queued request has been decided and answered
/// (graceful shutdown waits for it before closing the pools).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

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

/// Test hook: the next batch panics after locking its rows, mid-transaction.
#[doc(hidden)]
#[derive(Message)]
#[rtype(result = "()")]
pub struct PanicNextBatch;

fn unexpected() -> AppError {
    AppError::internal(anyhow::anyhow!("unexpected inventory outcome"))
}

impl Handler<PlaceOrder> for InventoryActor {
    type Result = ResponseFuture<Result<Placed, AppError>>;

    fn handle(&mut self, msg: PlaceOrder, ctx: &mut Context<Self>) -> Self::Result {
        let fut = self.submit(
            Op::Place {
                user_id: msg.user_id,
                lines: msg.lines,
                idempotency_key: msg.idempotency_key,
            },
            ctx,
        );
        Box::pin(async move {
            match fut.await? {
                Outcome::Placed(placed) => Ok(placed),
                _ => Err(unexpected()),
            }
        })
    }
}

impl Handler<CancelOrder> for InventoryActor {
    type Result = ResponseFuture<Result<OrderView, AppError>>;

    fn handle(&mut self, msg: CancelOrder, ctx: &mut Context<Self>) -> Self::Result {
        let fut = self.submit(
            Op::Cancel {
                order_id: msg.order_id,
                caller: msg.caller,
            },
            ctx,
        );
        Box::pin(async move {
            match fut.await? {
                Outcome::Cancelled(order) => Ok(order),
                _ => Err(unexpected()),
            }
        })
    }
}

impl Handler<AdjustStock> for InventoryActor {
    type Result = ResponseFuture<Result<StockLevel, AppError>>;

    fn handle(&mut self, msg: AdjustStock, ctx: &mut Context<Self>) -> Self::Result {
        let fut = self.submit(
            Op::Adjust {
                product_id: msg.product_id,
                delta: msg.delta,
            },
            ctx,
        );
        Box::pin(async move {
            match fut.await? {
                Outcome::Adjusted {
                    product_id,
                    stock_quantity,
                } => Ok(StockLevel {
                    product_id,
                    stock_quantity,
                }),
                _ => Err(unexpected()),
            }
        })
    }
}

impl Handler<PanicNextBatch> for InventoryActor {
    type Result = ();

    fn handle(&mut self, _: PanicNextBatch, _: &mut Context<Self>) {
        self.panic_next_batch = true;
    }
}

type Outcomes = Vec<Result<Outcome, AppError>>;

/// A locked batch, committed.
struct Done {
    outcomes: Outcomes,
    /// Products whose stock changed.
    changed: Vec<i64>,
    /// Every locked product as the batch left it (for the fast path).
    known: HashMap<i64, Locked>,
    /// Sequence values fetched and not used.
    spare_orders: Vec<i64>,
    spare_items: Vec<i64>,
}

/// Runs one batch in one transaction; `spare` extra order and item ids are
/// fetched for the fast path.
async fn execute(
    pool: DbPool,
    ops: Vec<Op>,
    locked: oneshot::Sender<()>,
    inject_panic: bool,
    spare: i64,
) -> Result<Done, AppError> {
    let mut tx = Tx {
        conn: Some(pool.get_owned().await?),
        open: false,
    };
    let result = decide(&mut tx, &ops, locked, inject_panic, spare).await;
    if result.is_err() && tx.open {
        tx.rollback().await;
    }
    result
}

/// One batch's transaction, driven by hand so that BEGIN travels with the
/// locking statement and COMMIT with the writing one (pipelined: two round
/// trips per batch; BEGIN and COMMIT are cached prepared statements, see
/// `sql::Commit`). If it is dropped while open (a panic mid-batch), the
/// connection is rolled back before it can be reused.
struct Tx {
    conn: Option<PooledConnection<'static, AsyncPgConnection>>,
    open: bool,
}

impl Tx {
    fn conn(&mut self) -> Result<&mut AsyncPgConnection, AppError> {
        self.conn
            .as_deref_mut()
            .ok_or_else(|| AppError::internal(anyhow::anyhow!("batch connection already released")))
    }

    async fn begin(&mut self) -> Result<(), AppError> {
        self.open = true;
        sql::Begin.execute(self.conn()?).await?;
        Ok(())
    }

    /// BEGIN and `lock`, in one round trip.
    async fn begin_with(&mut self, lock: sql::LockProducts) -> Result<Vec<sql::LockedRow>, AppError> {
        self.open = true;
        let conn: &AsyncPgConnection = self.conn()?;
        let (mut a, mut b) = (conn, conn);
        let (begun, rows) =
            futures_util::future::join(sql::Begin.execute(&mut a), lock.load::<sql::LockedRow>(&mut b)).await;
        begun?;
        Ok(rows?)
    }

    /// `write` (if any) and COMMIT, in one round trip. A failed write turns
    /// the COMMIT into a rollback on the server.
    async fn commit_with(&mut self, write: Option<sql::WriteBatch>) -> Result<(), AppError> {
        let conn: &AsyncPgConnection = self.conn()?;
        let (mut a, mut b) = (conn, conn);
        let result = match write {
            None => sql::Commit
                .execute(&mut a)
                .await
                .map(drop)
                .map_err(AppError::from),
            Some(stmt) => {
                let (written, committed) = futures_util::future::join(
                    stmt.get_result::<sql::Written>(&mut a),
                    sql::Commit.execute(&mut b),
                )
                .await;
                written
                    .map_err(AppError::from)
                    .and(committed.map(drop).map_err(AppError::from))
            }
        };
        if result.is_ok() {
            self.open = false;
        }
        result
    }

    async fn rollback(&mut self) {
        if let Ok(conn) = self.conn() {
            let _ = conn.batch_execute("ROLLBACK").await;
        }
        self.open = false;
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        if let Some(mut conn) = self.conn.take() {
            tokio::task::spawn_local(async move {
                let _ = conn.batch_execute("ROLLBACK").await;
            });
        }
    }
}

/// Locks, decides and writes one batch inside `tx`.
async fn decide(
    tx: &mut Tx,
    ops: &[Op],
    locked: oneshot::Sender<()>,
    inject_panic: bool,
    spare: i64,
) -> Result<Done, AppError> {
    let has_cancels = ops.iter().any(|op| matches!(op, Op::Cancel { .. }));
    let orders = if has_cancels {
        tx.begin().await?;
        lock_orders(tx.conn()?, ops).await?
    } else {
        HashMap::new()
    };
    let mut product_ids: Vec<i64> = ops
        .iter()
        .flat_map(|op| match op {
            Op::Place { lines, .. } => lines.iter().map(|l| l.product_id).collect::<Vec<_>>(),
            Op::Adjust { product_id, .. } => vec![*product_id],
            Op::Cancel { .. } => Vec::new(),
        })
        .chain(orders.values().flat_map(|o| o.items.iter().map(|i| i.product_id)))
        .collect();
    product_ids.sort_unstable();
    product_ids.dedup();
    let (n_orders, n_items) = placed_counts(ops);
    let lock = sql::LockProducts {
        product_ids,
        orders: n_orders as i64 + spare,
        items: n_items as i64 + spare,
    };
    let rows: Vec<sql::LockedRow> = if tx.open {
        lock.load(tx.conn()?).await?
    } else {
        tx.begin_with(lock).await?
    };
    let _ = locked.send(());
    if inject_panic {
        panic!("injected panic in the middle of an inventory batch");
    }
    let Some((_, _, _, _, now, order_ids, item_ids)) = <[sql::LockedRow]>::first(&rows).cloned() else {
        return Err(AppError::internal(anyhow::anyhow!(
            "lock statement returned no row"
        )));
    };
    let products: HashMap<i64, Locked> = rows
        .into_iter()
        .filter_map(|(id, price, stock, active, ..)| {
            Some((
                id?,
                Locked {
                    price: price?,
                    stock: stock?,
                    is_active: active?,
                },
            ))
        })
        .collect();
    let mut known = products.clone();
    let allocation = allocate(ops, products, orders, &order_ids, &item_ids, now);
    let changed: Vec<i64> = allocation.writes.stock.keys().copied().collect();
    for (id, stock) in &allocation.writes.stock {
        if let Some(p) = known.get_mut(id) {
            p.stock = *stock;
        }
    }
    // allocate takes ids in order, only for the orders it places.
    let used_orders = allocation.writes.orders.len();
    let used_items: usize = allocation.writes.orders.iter().map(|o| o.items.len()).sum();
    let spare_orders = order_ids.get(used_orders..).unwrap_or_default().to_vec();
    let spare_items = item_ids.get(used_items..).unwrap_or_default().to_vec();
    tx.commit_with(write_statement(allocation.writes, now)).await?;
    Ok(Done {
        outcomes: allocation.outcomes,
        changed,
        known,
        spare_orders,
        spare_items,
    })
}

/// Locks the orders that the batch's cancels refer to, with their items.
async fn lock_orders(conn: &mut AsyncPgConnection, ops: &[Op]) -> Result<HashMap<i64, OrderView>, AppError> {
    let mut ids: Vec<i64> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Cancel { order_id, .. } => Some(*order_id),
            _ => None,
        })
        .collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    ids.sort_unstable();
    ids.dedup();
    let rows: Vec<OrderRow> = orders::table
        .filter(orders::id.eq_any(&ids))
        .order(orders::id)
        .select(OrderRow::as_select())
        .for_update()
        .load(conn)
        .await?;
    let items: Vec<OrderItem> = order_items::table
        .filter(order_items::order_id.eq_any(&ids))
        .order(order_items::id)
        .select(OrderItem::as_select())
        .load(conn)
        .await?;
    let mut views: HashMap<i64, OrderView> = rows
        .into_iter()
        .map(|o| (o.id, OrderView::new(o, Vec::new())))
        .collect();
    for item in items {
        if let Some(v) = views.get_mut(&item.order_id) {
            v.items.push(item);
        }
    }
    Ok(views)
}

/// The locked batch's single writing statement, or `None` when nothing
/// changed.
fn write_statement(w: Writes, now: DateTime<Utc>) -> Option<sql::WriteBatch> {
    if w.stock.is_empty() && w.orders.is_empty() && w.cancelled.is_empty() {
        return None;
    }
    let mut stmt = sql::WriteBatch {
        now,
        ..Default::default()
    };
    for (id, stock) in &w.stock {
        stmt.stock_ids.push(*id);
        stmt.stock_values.push(*stock);
    }
    Some(rows_of(stmt, w))
}

/// A fast batch's statement: every product it read is compared and set;
/// it requires `fence` and sets `seq`.
fn cas_statement(
    w: Writes,
    expect: Vec<Expect>,
    now: DateTime<Utc>,
    fence: Option<i64>,
    seq: i64,
) -> sql::WriteBatch {
    let mut stmt = sql::WriteBatch {
        now,
        fence,
        next_fence: Some(seq),
        ..Default::default()
    };
    for e in expect {
        stmt.stock_ids.push(e.id);
        stmt.stock_values.push(e.stock);
        stmt.expect_stock.push(e.expected);
        stmt.expect_exact.push(e.exact);
        stmt.expect_prices.push(e.price);
    }
    rows_of(stmt, w)
}

/// Fills the statement's order, item, cancel and idempotency columns.
fn rows_of(mut stmt: sql::WriteBatch, w: Writes) -> sql::WriteBatch {
    stmt.stock_rows = stmt.stock_ids.len() as i64;
    for o in &w.orders {
        stmt.order_ids.push(o.id);
        stmt.order_users.push(o.user_id);
        stmt.order_totals.push(o.total_amount.clone());
        for i in &o.items {
            stmt.item_ids.push(i.id);
            stmt.item_orders.push(o.id);
            stmt.item_products.push(i.product_id);
            stmt.item_quantities.push(i.quantity);
            stmt.item_prices.push(i.unit_price.clone());
        }
    }
    stmt.cancelled = w.cancelled;
    for (user, key, order, body) in w.idempotency {
        stmt.key_users.push(user);
        stmt.key_names.push(key);
        stmt.key_orders.push(order);
        stmt.key_bodies.push(body);
    }
    stmt
}

#[cfg(test)]
mod tests {
    use super::drift_correction;

    #[test]
    fn drift_is_counted_once_across_batches_in_flight() {
        // known 100; batch 1 sells 10 (expects 90), batch 2 sells 10 (expects
        // 80), both sent before either returns; 5 were sold elsewhere first.
        let first = drift_correction(90, 85, 0, 0);
        assert_eq!(first, 5);
        // Batch 2 was decided before that correction: only what is new counts.
        assert_eq!(drift_correction(80, 75, 0, first), 0);
        // Two more sold elsewhere between the batches.
        assert_eq!(drift_correction(80, 73, 0, first), 2);
    }

    #[test]
    fn a_restock_elsewhere_raises_what_is_known() {
        assert_eq!(drift_correction(0, 20, 0, 0), -20);
        // A batch decided after the correction expected the new figure.
        assert_eq!(drift_correction(19, 19, -20, -20), 0);
    }
}
