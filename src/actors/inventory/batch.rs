//! One batch, one transaction: lock the batch's product rows in id order,
//! decide every request (`allocate`), write everything in one statement,
//! commit once.
//!
//! The transaction is driven by hand so that BEGIN travels with the locking
//! statement and COMMIT with the writing one: two round trips per batch.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel_async::{
    pooled_connection::bb8::PooledConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
};
use tokio::sync::oneshot;

use super::{
    allocate::{allocate, Locked, Op, Outcome, Writes},
    sql,
};
use crate::{
    db::{
        schema::{order_items, orders},
        DbPool,
    },
    error::AppError,
    models::order::{OrderItem, OrderRow, OrderView},
};

/// A committed batch.
pub struct Done {
    pub outcomes: Vec<Result<Outcome, AppError>>,
    /// Products whose stock changed.
    pub changed: Vec<i64>,
}

/// Runs one batch in one transaction. `locked` fires once the batch holds
/// its row locks (or failed before), so the next batch may start.
pub async fn execute(
    pool: DbPool,
    ops: Vec<Op>,
    locked: oneshot::Sender<()>,
    inject_panic: bool,
) -> Result<Done, AppError> {
    let mut tx = Tx {
        conn: Some(pool.get_owned().await?),
        open: false,
    };
    let result = decide(&mut tx, &ops, locked, inject_panic).await;
    if result.is_err() && tx.open {
        tx.rollback().await;
    }
    result
}

/// A batch's connection and whether its transaction is open. Dropped while
/// open (a panic mid-batch), it rolls the connection back before it can be
/// reused.
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
    let (n_orders, n_items) = ops.iter().fold((0, 0), |(o, i), op| match op {
        Op::Place { lines, .. } => (o + 1, i + lines.len() as i64),
        _ => (o, i),
    });
    let mut callers: Vec<i64> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Place { user_id, .. } => Some(*user_id),
            Op::Cancel { caller, .. } => Some(caller.id),
            Op::Adjust { .. } => None,
        })
        .collect();
    callers.sort_unstable();
    callers.dedup();
    let lock = sql::LockProducts {
        product_ids,
        orders: n_orders,
        items: n_items,
        callers,
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
    let Some((_, _, _, _, now, order_ids, item_ids, inactive)) = <[sql::LockedRow]>::first(&rows).cloned()
    else {
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
    let allocation = allocate(ops, products, orders, &inactive, &order_ids, &item_ids, now);
    let changed: Vec<i64> = allocation.writes.stock.keys().copied().collect();
    tx.commit_with(write_statement(allocation.writes, now)?).await?;
    Ok(Done {
        outcomes: allocation.outcomes,
        changed,
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

/// The batch's single writing statement, or `None` when nothing changed.
fn write_statement(
    w: Writes,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<sql::WriteBatch>, AppError> {
    if w.stock.is_empty() && w.orders.is_empty() && w.cancelled.is_empty() {
        return Ok(None);
    }
    let mut stmt = sql::WriteBatch {
        now,
        ..Default::default()
    };
    for (id, stock) in &w.stock {
        stmt.stock_ids.push(*id);
        stmt.stock_values.push(*stock);
    }
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
    for (user, key, at) in w.idempotency {
        let order = w
            .orders
            .get(at)
            .ok_or_else(|| AppError::internal(anyhow::anyhow!("idempotency key without its order")))?;
        stmt.key_users.push(user);
        stmt.key_names.push(key);
        stmt.key_orders.push(order.id);
        stmt.key_data
            .push(serde_json::to_string(order).map_err(AppError::internal)?);
    }
    Ok(Some(stmt))
}
