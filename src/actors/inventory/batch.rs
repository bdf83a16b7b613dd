//! One batch, one transaction: lock the batch's product rows in id order,
//! decide every request (`allocate`), write everything in one statement,
//! commit once.
//!
//! The transaction is driven by hand so that BEGIN travels with the locking
//! statement and COMMIT with the writing one: two round trips per batch.

use std::collections::HashMap;

use diesel::connection::TransactionManagerStatus;
use diesel::prelude::*;
use diesel_async::{
    pooled_connection::bb8::PooledConnection, AsyncConnection, AsyncPgConnection, RunQueryDsl,
    SimpleAsyncConnection, TransactionManager,
};
use tokio::sync::oneshot;

use super::{
    allocate::{allocate, Locked, Locks, Op, Outcome, Writes},
    sql,
};
use crate::{
    db::{schema::orders, DbPool},
    error::AppError,
    models::{
        event,
        idempotency::{Owned, Scope},
        order::{self, OrderRow, OrderView},
        reservation,
    },
};

/// A committed batch.
pub struct Done {
    pub outcomes: Vec<Result<Outcome, AppError>>,
    /// Products whose stock changed.
    pub changed: Vec<i64>,
    /// Events written.
    pub events: usize,
}

/// Runs one batch in one transaction. `locked` fires once the batch holds
/// its row locks (or failed before), so the next batch may start.
pub async fn execute(
    pool: DbPool,
    ops: Vec<Op>,
    locked: oneshot::Sender<()>,
    sink: bool,
    inject_panic: bool,
) -> Result<Done, AppError> {
    let mut tx = Tx {
        conn: Some(pool.get_owned().await?),
        open: false,
    };
    let result = decide(&mut tx, &ops, locked, sink, inject_panic).await;
    if result.is_err() && tx.open {
        tx.rollback().await;
    }
    result
}

/// A batch's connection and whether its transaction is open. Dropped while
/// open (a panic or a cancellation mid-batch), it rolls the connection back
/// before it can be reused, or has the pool discard it.
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

    /// BEGIN (unless open), `holders` (if any) and `lock`, in one round
    /// trip: the statements run one after the other, each with a fresh
    /// snapshot, so `lock` sees what committed before `holders` got its rows.
    async fn lock(
        &mut self,
        holders: Option<sql::LockHolders>,
        lock: sql::LockProducts,
    ) -> Result<Vec<sql::LockedRow>, AppError> {
        let begin = !self.open;
        self.open = true;
        let conn: &AsyncPgConnection = self.conn()?;
        let (mut a, mut b, mut c) = (conn, conn, conn);
        let begun = async {
            if begin {
                sql::Begin.execute(&mut a).await?;
            }
            Ok::<_, diesel::result::Error>(())
        };
        let held = async {
            if let Some(h) = holders {
                h.get_result::<i64>(&mut b).await?;
            }
            Ok::<_, diesel::result::Error>(())
        };
        let (begun, held, rows) =
            futures_util::future::join3(begun, held, lock.load::<sql::LockedRow>(&mut c)).await;
        begun?;
        held?;
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
                let (written, committed) =
                    futures_util::future::join(stmt.get_result::<i64>(&mut a), sql::Commit.execute(&mut b))
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
    /// An open transaction is rolled back by a task on the current runtime
    /// before the connection returns to the pool. The connection is marked
    /// broken first, so that should the rollback never run (no runtime, or a
    /// runtime shutting down drops the task) or fail, the pool discards it:
    /// Postgres then ends the transaction with the session, and no caller is
    /// ever handed a connection inside a batch's transaction. `spawn` rather
    /// than `spawn_local`: a drop outside a `LocalSet` must not panic.
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        status(&mut conn).set_in_error();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if conn.batch_execute("ROLLBACK").await.is_ok() {
                    *status(&mut conn) = TransactionManagerStatus::default();
                }
            });
        }
    }
}

/// The status the pool reads to decide whether a returned connection is
/// broken. The batch drives its transaction by hand, so the status says "no
/// transaction" unless `Tx` sets it.
fn status(conn: &mut AsyncPgConnection) -> &mut TransactionManagerStatus {
    <AsyncPgConnection as AsyncConnection>::TransactionManager::transaction_manager_status_mut(conn)
}

/// A batch's transaction, opened and left unfinished, for tests of what
/// dropping it does.
#[doc(hidden)]
pub struct OpenTransaction {
    _tx: Tx,
}

impl OpenTransaction {
    /// Takes a connection of `pool` and opens a transaction on it as a batch
    /// does; returns it with the transaction's id (`txid_current()`).
    pub async fn begin(pool: &DbPool) -> Result<(Self, i64), AppError> {
        let mut tx = Tx {
            conn: Some(pool.get_owned().await?),
            open: false,
        };
        tx.begin().await?;
        let xid = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>("txid_current()"))
            .get_result(tx.conn()?)
            .await?;
        Ok((Self { _tx: tx }, xid))
    }
}

/// Locks, decides and writes one batch inside `tx`. Locks are taken in one
/// order by every batch (orders, holds, users, products; each in id order),
/// so batches of several instances never deadlock.
async fn decide(
    tx: &mut Tx,
    ops: &[Op],
    locked: oneshot::Sender<()>,
    sink: bool,
    inject_panic: bool,
) -> Result<Done, AppError> {
    let cancels = sorted(ops.iter().filter_map(|op| match op {
        Op::Cancel { order_id, .. } => Some(*order_id),
        _ => None,
    }));
    let holds = sorted(ops.iter().filter_map(Op::hold));
    let claim_due: i64 = ops
        .iter()
        .map(|op| match op {
            Op::Expire { limit } => *limit,
            _ => 0,
        })
        .sum();
    let mut locks = Locks::default();
    let mut hold_tids = HashMap::new();
    // Rows that lead to products: the cancelled orders and the held ones.
    if !cancels.is_empty() || !holds.is_empty() || claim_due > 0 {
        tx.begin().await?;
        let conn = tx.conn()?;
        if !cancels.is_empty() {
            locks.orders = load_orders(conn, &cancels, true).await?;
        }
        if !holds.is_empty() || claim_due > 0 {
            let locked = reservation::lock(conn, &holds, claim_due).await?;
            let confirmed: Vec<i64> = locked
                .holds
                .iter()
                .filter_map(|h| h.order_id)
                .filter(|id| !locks.orders.contains_key(id))
                .collect();
            // A confirmed hold's order, read to answer a repeated confirm.
            locks.orders.extend(load_orders(conn, &confirmed, false).await?);
            locks.holds = locked.holds.into_iter().map(|h| (h.id, h)).collect();
            locks.claimed = locked.claimed;
            hold_tids = locked.tids;
        }
    }
    let product_ids = sorted(
        ops.iter()
            .flat_map(Op::products)
            .chain(
                locks
                    .orders
                    .values()
                    .flat_map(|o| o.items.iter().map(|i| i.product_id)),
            )
            .chain(
                locks
                    .holds
                    .values()
                    .flat_map(|h| h.items.iter().map(|i| i.product_id)),
            ),
    );
    let (n_orders, n_items) = ops.iter().fold((0, 0), |(o, i), op| match op {
        Op::Place { lines, .. } => (o + 1, i + lines.len() as i64),
        Op::Confirm { id, .. } => (o + 1, i + locks.holds.get(id).map_or(0, |h| h.items.len() as i64)),
        _ => (o, i),
    });
    let holders = sorted(ops.iter().filter_map(|op| match op {
        Op::Reserve(h) => Some(h.user_id),
        _ => None,
    }));
    let claims: Vec<(usize, (i64, Scope, &Owned))> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| Some((i, op.claim()?)))
        .collect();
    let lock = sql::LockProducts {
        product_ids,
        orders: n_orders,
        items: n_items,
        callers: sorted(ops.iter().filter_map(Op::caller)),
        holders: holders.clone(),
        max_active: ops
            .iter()
            .map(|op| match op {
                Op::Reserve(h) => h.max_active as i64,
                _ => 0,
            })
            .max()
            .unwrap_or(0),
        key_users: claims.iter().map(|(_, (user, ..))| *user).collect(),
        key_scopes: claims.iter().map(|(_, (_, scope, _))| scope.as_str()).collect(),
        key_names: claims.iter().map(|(_, (.., owned))| owned.key.clone()).collect(),
        key_tokens: claims.iter().map(|(_, (.., owned))| owned.token).collect(),
    };
    let holders = (!holders.is_empty()).then_some(sql::LockHolders { user_ids: holders });
    let rows = tx.lock(holders, lock).await?;
    let _ = locked.send(());
    if inject_panic {
        panic!("injected panic in the middle of an inventory batch");
    }
    let Some((_, _, _, _, _, now, order_ids, item_ids, inactive, active_holds, subscribed, owned)) =
        <[sql::LockedRow]>::first(&rows).cloned()
    else {
        return Err(AppError::internal(anyhow::anyhow!(
            "lock statement returned no row"
        )));
    };
    locks.products = rows
        .into_iter()
        .filter_map(|(id, price, stock, reserved, active, ..)| {
            Some((
                id?,
                Locked {
                    price: price?,
                    stock: stock?,
                    reserved: reserved?,
                    is_active: active?,
                },
            ))
        })
        .collect();
    // `owned` numbers the claims still held from 1.
    locks.lost_claims = claims
        .iter()
        .enumerate()
        .filter(|(n, _)| !owned.contains(&(*n as i64 + 1)))
        .map(|(_, (i, _))| *i)
        .collect();
    for user in active_holds {
        *locks.active_holds.entry(user).or_default() += 1;
    }
    (locks.now, locks.order_ids, locks.item_ids, locks.inactive) = (now, order_ids, item_ids, inactive);
    (locks.receivers, locks.sink) = (event::receivers(&subscribed, sink), sink);
    let allocation = allocate(ops, locks);
    let changed: Vec<i64> = allocation.writes.stock.keys().copied().collect();
    let events = allocation.writes.events.len();
    tx.commit_with(write_statement(allocation.writes, now, &hold_tids)?)
        .await?;
    Ok(Done {
        outcomes: allocation.outcomes,
        changed,
        events,
    })
}

fn sorted<T: Ord>(ids: impl Iterator<Item = T>) -> Vec<T> {
    let mut v: Vec<T> = ids.collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The orders `ids` with their items, locked (`FOR UPDATE`, id order) or
/// just read.
async fn load_orders(
    conn: &mut AsyncPgConnection,
    ids: &[i64],
    lock: bool,
) -> Result<HashMap<i64, OrderView>, AppError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let query = orders::table
        .filter(orders::id.eq_any(ids))
        .order(orders::id)
        .select(OrderRow::as_select());
    let rows: Vec<OrderRow> = if lock {
        query.for_update().load(conn).await?
    } else {
        query.load(conn).await?
    };
    Ok(order::with_items(conn, rows)
        .await?
        .into_iter()
        .map(|o| (o.id, o))
        .collect())
}

/// The batch's single writing statement, or `None` when nothing changed.
/// `hold_tids` are the row addresses of the holds the batch locked.
fn write_statement(
    w: Writes,
    now: chrono::DateTime<chrono::Utc>,
    hold_tids: &HashMap<uuid::Uuid, String>,
) -> Result<Option<sql::WriteBatch>, AppError> {
    if w.stock.is_empty() && w.orders.is_empty() && w.cancelled.is_empty() && w.hold_changes.is_empty() {
        return Ok(None);
    }
    let mut stmt = sql::WriteBatch {
        now,
        ..Default::default()
    };
    for (id, (stock, reserved)) in w.stock {
        stmt.stock_ids.push(id);
        stmt.stock_values.push(stock);
        stmt.reserved_values.push(reserved);
    }
    for o in w.orders {
        stmt.order_ids.push(o.id);
        stmt.order_users.push(o.user_id);
        stmt.order_totals.push(o.total_amount);
        for i in o.items {
            stmt.item_ids.push(i.id);
            stmt.item_orders.push(o.id);
            stmt.item_products.push(i.product_id);
            stmt.item_quantities.push(i.quantity);
            stmt.item_prices.push(i.unit_price);
        }
    }
    stmt.cancelled = w.cancelled;
    for h in w.holds {
        stmt.hold_ids.push(h.id);
        stmt.hold_users.push(h.user_id);
        stmt.hold_totals.push(h.total_amount);
        stmt.hold_expiries.push(h.expires_at);
        for i in h.items {
            stmt.hold_item_holds.push(h.id);
            stmt.hold_item_products.push(i.product_id);
            stmt.hold_item_positions.push(i.position);
            stmt.hold_item_quantities.push(i.quantity);
            stmt.hold_item_prices.push(i.unit_price);
        }
    }
    for (id, status, order_id) in w.hold_changes {
        let tid = hold_tids
            .get(&id)
            .ok_or_else(|| AppError::internal(anyhow::anyhow!("an ended hold was not locked")))?;
        stmt.ended_tids.push(tid.clone());
        stmt.ended_statuses.push(status);
        stmt.ended_orders.push(order_id);
    }
    for k in w.keys {
        stmt.key_users.push(k.user_id);
        stmt.key_scopes.push(k.scope.as_str());
        stmt.key_names.push(k.key);
        stmt.key_tokens.push(k.token);
        stmt.key_orders.push(k.order_id);
        stmt.key_data.push(k.data);
    }
    stmt.events = w.events;
    Ok(Some(stmt))
}
