//! The batch's statements. Each is a type with a static `QueryId` and constant
//! SQL text (arrays instead of variable placeholder lists), so diesel-async
//! keeps them as prepared statements: no parse round trip per batch.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::{
    pg::Pg,
    query_builder::{AstPass, Query, QueryFragment, QueryId},
    sql_types::{Array, BigInt, Bool, Int4, Int8, Nullable, Numeric, Text, Timestamptz},
    QueryResult,
};

/// Locks the batch's product rows in id order (no deadlocks with other
/// instances) and, in the same round trip, takes the transaction timestamp
/// and enough order and item ids for every order of the batch.
#[derive(QueryId)]
pub struct LockProducts {
    pub product_ids: Vec<i64>,
    pub orders: i64,
    pub items: i64,
}

pub type LockedRow = (
    Option<i64>,
    Option<BigDecimal>,
    Option<i32>,
    Option<bool>,
    DateTime<Utc>,
    Vec<i64>,
    Vec<i64>,
);

impl QueryFragment<Pg> for LockProducts {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "WITH seq AS MATERIALIZED (SELECT now() AS ts, \
               ARRAY(SELECT nextval('orders_id_seq') FROM generate_series(1, ",
        );
        out.push_bind_param::<BigInt, _>(&self.orders)?;
        out.push_sql(")) AS order_ids, ARRAY(SELECT nextval('order_items_id_seq') FROM generate_series(1, ");
        out.push_bind_param::<BigInt, _>(&self.items)?;
        out.push_sql(
            ")) AS item_ids), \
             locked AS MATERIALIZED (SELECT id, price, stock_quantity, is_active FROM products \
               WHERE id = ANY(",
        );
        out.push_bind_param::<Array<Int8>, _>(&self.product_ids)?;
        out.push_sql(
            ") ORDER BY id FOR UPDATE) \
             SELECT l.id, l.price, l.stock_quantity, l.is_active, seq.ts, seq.order_ids, seq.item_ids \
             FROM seq LEFT JOIN locked l ON true",
        );
        Ok(())
    }
}

impl Query for LockProducts {
    type SqlType = (
        Nullable<Int8>,
        Nullable<Numeric>,
        Nullable<Int4>,
        Nullable<Bool>,
        Timestamptz,
        Array<Int8>,
        Array<Int8>,
    );
}

/// Every write of a batch in one statement: new stock figures, new orders and
/// their items (multi-row), cancelled orders and completed idempotency keys.
/// Foreign keys between the new orders and items are checked at the end of
/// the statement, when both exist.
///
/// The inserts run first and the stock update last (the main query reads
/// `w.written` before `s`), so the product rows are locked only for the end
/// of the statement and the commit: another instance's batch for the same
/// product waits that long, not for the inserts too. If the update does not
/// match every row, the whole statement fails and the inserts with it.
#[derive(QueryId, Default)]
pub struct WriteBatch {
    pub stock_ids: Vec<i64>,
    pub stock_values: Vec<i32>,
    /// Compare-and-set (the fast path, see `mod.rs`): the stock, price and
    /// activity each row must still have. Empty when the rows are locked.
    pub expect_stock: Vec<i32>,
    pub expect_prices: Vec<BigDecimal>,
    /// Per row: the batch was decided from exactly `expect_stock` (it turned
    /// an order away for short stock), so the row must still hold exactly
    /// that; otherwise it must hold at least what the batch sold.
    pub expect_exact: Vec<bool>,
    /// The fast connection's batch sequence (`storefront.fast_batch`, a
    /// session setting): the value the previous batch on this connection
    /// set, which this one requires (so a batch never commits after its
    /// predecessor failed: allocation stays in arrival order), and the
    /// value it sets. `None` on the locking path and for the first batch of
    /// a connection.
    pub fence: Option<i64>,
    pub next_fence: Option<i64>,
    /// `stock_ids.len()`: the rows the stock update must have changed.
    pub stock_rows: i64,
    /// The orders' created_at / updated_at.
    pub now: DateTime<Utc>,
    pub order_ids: Vec<i64>,
    pub order_users: Vec<i64>,
    pub order_totals: Vec<BigDecimal>,
    pub item_ids: Vec<i64>,
    pub item_orders: Vec<i64>,
    pub item_products: Vec<i64>,
    pub item_quantities: Vec<i32>,
    pub item_prices: Vec<BigDecimal>,
    pub cancelled: Vec<i64>,
    pub key_users: Vec<i64>,
    pub key_names: Vec<String>,
    pub key_orders: Vec<i64>,
    pub key_bodies: Vec<String>,
}

impl QueryFragment<Pg> for WriteBatch {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        // Locked rows get their new figure; compare-and-set rows lose what
        // the batch sold (v.expected - v.stock), so two instances selling the
        // same product both succeed while the row has enough.
        out.push_sql(
            "WITH s AS (UPDATE products p SET stock_quantity = CASE WHEN v.expected IS NULL THEN v.stock \
               ELSE p.stock_quantity - (v.expected - v.stock) END FROM unnest(",
        );
        out.push_bind_param::<Array<Int8>, _>(&self.stock_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Int4>, _>(&self.stock_values)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Int4>, _>(&self.expect_stock)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Numeric>, _>(&self.expect_prices)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Bool>, _>(&self.expect_exact)?;
        out.push_sql(
            ") AS v(id, stock, expected, price, exact) WHERE p.id = v.id AND (v.expected IS NULL \
               OR (p.price = v.price AND p.is_active AND p.stock_quantity >= v.expected - v.stock \
                   AND (NOT v.exact OR p.stock_quantity = v.expected) \
                   AND (",
        );
        out.push_bind_param::<Nullable<BigInt>, _>(&self.fence)?;
        out.push_sql("::bigint IS NULL OR current_setting('storefront.fast_batch', true) = ");
        out.push_bind_param::<Nullable<BigInt>, _>(&self.fence)?;
        out.push_sql(
            "::text))) \
             RETURNING p.id, p.stock_quantity), \
             o AS (INSERT INTO orders (id, user_id, status, total_amount, created_at, updated_at) \
               SELECT id, user_id, 'pending', total, ",
        );
        out.push_bind_param::<Timestamptz, _>(&self.now)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamptz, _>(&self.now)?;
        out.push_sql(" FROM unnest(");
        out.push_bind_param::<Array<Int8>, _>(&self.order_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Int8>, _>(&self.order_users)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Numeric>, _>(&self.order_totals)?;
        out.push_sql(
            ") AS v(id, user_id, total) RETURNING 1), \
             i AS (INSERT INTO order_items (id, order_id, product_id, quantity, unit_price) \
               SELECT * FROM unnest(",
        );
        out.push_bind_param::<Array<Int8>, _>(&self.item_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Int8>, _>(&self.item_orders)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Int8>, _>(&self.item_products)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Int4>, _>(&self.item_quantities)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Numeric>, _>(&self.item_prices)?;
        out.push_sql(
            ") RETURNING 1), \
             c AS (UPDATE orders SET status = 'cancelled' WHERE id = ANY(",
        );
        out.push_bind_param::<Array<Int8>, _>(&self.cancelled)?;
        out.push_sql(
            ") RETURNING 1), \
             k AS (UPDATE idempotency_keys k SET response_status = 201, response_body = v.body, \
               order_id = v.order_id FROM unnest(",
        );
        out.push_bind_param::<Array<Int8>, _>(&self.key_users)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.key_names)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Int8>, _>(&self.key_orders)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.key_bodies)?;
        out.push_sql(
            ") AS v(user_id, key, order_id, body) WHERE k.user_id = v.user_id AND k.key = v.key RETURNING 1) \
             SELECT g.ids, g.stocks, CASE WHEN ",
        );
        // The guard runs in the subquery (OFFSET 0 keeps it there), so the
        // fence moves only once every row matched.
        out.push_bind_param::<Nullable<BigInt>, _>(&self.next_fence)?;
        out.push_sql("::bigint IS NOT NULL THEN set_config('storefront.fast_batch', ");
        out.push_bind_param::<Nullable<BigInt>, _>(&self.next_fence)?;
        out.push_sql(
            "::text, false) END, g.written \
             FROM (SELECT w.written, storefront_expect_rows((SELECT count(*) FROM s), ",
        );
        out.push_bind_param::<BigInt, _>(&self.stock_rows)?;
        out.push_sql(
            ") AS matched, ARRAY(SELECT id FROM s ORDER BY id) AS ids, \
                    ARRAY(SELECT stock_quantity FROM s ORDER BY id) AS stocks \
                FROM (SELECT (SELECT count(*) FROM o) + (SELECT count(*) FROM i) \
                           + (SELECT count(*) FROM c) + (SELECT count(*) FROM k) AS written \
                      OFFSET 0) w \
                OFFSET 0) g",
        );
        Ok(())
    }
}

/// What a batch statement returns: the products it updated (id order) and
/// their stock after it (then the fence setting and the rows inserted or
/// updated, which are only there to run the inserts first).
pub type Written = (Vec<i64>, Vec<i32>, Option<String>, i64);

impl Query for WriteBatch {
    type SqlType = (Array<Int8>, Array<Int4>, Nullable<Text>, BigInt);
}

/// Order and item ids for the fast path, fetched ahead on its connection.
#[derive(QueryId)]
pub struct NextIds {
    pub orders: i64,
    pub items: i64,
}

impl QueryFragment<Pg> for NextIds {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("SELECT ARRAY(SELECT nextval('orders_id_seq') FROM generate_series(1, ");
        out.push_bind_param::<BigInt, _>(&self.orders)?;
        out.push_sql(")), ARRAY(SELECT nextval('order_items_id_seq') FROM generate_series(1, ");
        out.push_bind_param::<BigInt, _>(&self.items)?;
        out.push_sql("))");
        Ok(())
    }
}

impl Query for NextIds {
    type SqlType = (Array<Int8>, Array<Int8>);
}

/// `BEGIN` and `COMMIT` as cached prepared statements, pipelined with the
/// batch's statements. Not `diesel::sql_query`: diesel never caches those, so
/// each would wait for a Parse round trip first (COMMIT's inside the lock
/// hold). Not `batch_execute` either: the simple protocol bypasses
/// diesel-async's statement-cache lock, and that lock is what keeps
/// statements issued together on one connection in their order: a COMMIT
/// sent that way overtook a write that was still being prepared, and the
/// write ran outside the transaction (caught by the oversell tests).
macro_rules! control_statement {
    ($name:ident, $sql:literal) => {
        #[derive(QueryId)]
        pub struct $name;

        impl QueryFragment<Pg> for $name {
            fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
                out.push_sql($sql);
                Ok(())
            }
        }
    };
}

control_statement!(Begin, "BEGIN");
control_statement!(Commit, "COMMIT");
