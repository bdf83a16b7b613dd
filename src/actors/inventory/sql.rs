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
/// instances) and, in the same round trip, takes the transaction timestamp,
/// enough order and item ids for every order of the batch, and which of the
/// batch's callers are deactivated (their access tokens may still be valid).
#[derive(QueryId)]
pub struct LockProducts {
    pub product_ids: Vec<i64>,
    pub orders: i64,
    pub items: i64,
    pub callers: Vec<i64>,
}

pub type LockedRow = (
    Option<i64>,
    Option<BigDecimal>,
    Option<i32>,
    Option<bool>,
    DateTime<Utc>,
    Vec<i64>,
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
        out.push_sql(")) AS item_ids, ARRAY(SELECT id FROM users WHERE NOT is_active AND id = ANY(");
        out.push_bind_param::<Array<Int8>, _>(&self.callers)?;
        out.push_sql(
            ")) AS inactive), \
             locked AS MATERIALIZED (SELECT id, price, stock_quantity, is_active FROM products \
               WHERE id = ANY(",
        );
        out.push_bind_param::<Array<Int8>, _>(&self.product_ids)?;
        out.push_sql(
            ") ORDER BY id FOR UPDATE) \
             SELECT l.id, l.price, l.stock_quantity, l.is_active, seq.ts, seq.order_ids, seq.item_ids, \
                    seq.inactive \
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
        Array<Int8>,
    );
}

/// Every write of a batch in one statement: new stock figures, new orders and
/// their items (multi-row), cancelled orders and completed idempotency keys.
/// Foreign keys between the new orders and items are checked at the end of
/// the statement, when both exist. Returns the number of rows written.
#[derive(QueryId, Default)]
pub struct WriteBatch {
    pub stock_ids: Vec<i64>,
    pub stock_values: Vec<i32>,
    /// The orders' created_at / updated_at, and the idempotency keys'
    /// responded_at: the transaction's timestamp.
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
    /// The JSON of each key's order, as its 201 response showed it.
    pub key_data: Vec<String>,
}

impl QueryFragment<Pg> for WriteBatch {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH s AS (UPDATE products p SET stock_quantity = v.stock FROM unnest(");
        out.push_bind_param::<Array<Int8>, _>(&self.stock_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Int4>, _>(&self.stock_values)?;
        out.push_sql(
            ") AS v(id, stock) WHERE p.id = v.id RETURNING 1), \
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
             k AS (UPDATE idempotency_keys k SET response_status = 201, response_data = v.data, \
               responded_at = ",
        );
        out.push_bind_param::<Timestamptz, _>(&self.now)?;
        out.push_sql(", order_id = v.order_id FROM unnest(");
        out.push_bind_param::<Array<Int8>, _>(&self.key_users)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.key_names)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Int8>, _>(&self.key_orders)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.key_data)?;
        out.push_sql(
            ") AS v(user_id, key, order_id, data) WHERE k.user_id = v.user_id AND k.key = v.key RETURNING 1) \
             SELECT (SELECT count(*) FROM s) + (SELECT count(*) FROM o) + (SELECT count(*) FROM i) \
                  + (SELECT count(*) FROM c) + (SELECT count(*) FROM k)",
        );
        Ok(())
    }
}

impl Query for WriteBatch {
    type SqlType = BigInt;
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
