//! The batch's statements. Each is a type with a static `QueryId` and constant
//! SQL text (arrays instead of variable placeholder lists), so diesel-async
//! keeps them as prepared statements: no parse round trip per batch.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::{
    pg::Pg,
    query_builder::{AstPass, Query, QueryFragment, QueryId},
    sql_types::{
        Array, BigInt, Bool, Int2, Int4, Int8, Nullable, Numeric, Text, Timestamptz, Uuid as SqlUuid,
    },
    QueryResult,
};
use uuid::Uuid;

/// Locks the rows of the users who create holds in this batch (id order),
/// before `LockProducts` counts their active holds: that count then sees
/// every hold committed by a batch that held one of these rows before, on
/// any instance, so the per-user limit holds across instances. `FOR NO KEY
/// UPDATE` leaves the rows' foreign-key checks (new orders, holds) unblocked.
#[derive(QueryId)]
pub struct LockHolders {
    pub user_ids: Vec<i64>,
}

impl QueryFragment<Pg> for LockHolders {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("SELECT count(*) FROM (SELECT id FROM users WHERE id = ANY(");
        out.push_bind_param::<Array<Int8>, _>(&self.user_ids)?;
        out.push_sql(") ORDER BY id FOR NO KEY UPDATE) held");
        Ok(())
    }
}

impl diesel::query_dsl::RunQueryDslSupport for LockHolders {}

impl Query for LockHolders {
    type SqlType = BigInt;
}

/// Locks the batch's product rows in id order (no deadlocks with other
/// instances) and, in the same round trip, takes the transaction timestamp,
/// enough order and item ids for every order of the batch, which of the
/// batch's callers are deactivated (their access tokens may still be valid),
/// and the owners of the active, unexpired holds of `holders` (one entry per
/// hold, at most `max_active` per holder), the event types that active
/// webhook endpoints subscribe to, and which of the batch's Idempotency-Key
/// claims (numbered from 1 in the order of `key_*`) are still held with
/// their tokens, their rows locked until the batch commits: a retry cannot
/// take one over meanwhile, and a claim already taken over creates nothing.
#[derive(QueryId)]
pub struct LockProducts {
    pub product_ids: Vec<i64>,
    pub orders: i64,
    pub items: i64,
    pub callers: Vec<i64>,
    pub holders: Vec<i64>,
    pub max_active: i64,
    pub key_users: Vec<i64>,
    pub key_scopes: Vec<&'static str>,
    pub key_names: Vec<String>,
    pub key_tokens: Vec<Uuid>,
}

pub type LockedRow = (
    Option<i64>,
    Option<BigDecimal>,
    Option<i32>,
    Option<i32>,
    Option<bool>,
    DateTime<Utc>,
    Vec<i64>,
    Vec<i64>,
    Vec<i64>,
    Vec<i64>,
    Vec<String>,
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
        // Each holder's active holds, counted up to the limit: a user at
        // the limit costs `max_active` index entries, not all their holds.
        out.push_sql(")) AS inactive, ARRAY(SELECT h.user_id FROM unnest(");
        out.push_bind_param::<Array<Int8>, _>(&self.holders)?;
        out.push_sql(
            ") AS u(id), LATERAL (SELECT user_id FROM reservations WHERE user_id = u.id \
               AND status = 'active' AND expires_at > now() LIMIT ",
        );
        out.push_bind_param::<BigInt, _>(&self.max_active)?;
        out.push_sql(") h) AS holds, ");
        out.push_sql(crate::models::event::SUBSCRIBED_SQL);
        out.push_sql(" AS subscribed, ARRAY(SELECT v.n FROM unnest(");
        out.push_bind_param::<Array<Int8>, _>(&self.key_users)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.key_scopes)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.key_names)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.key_tokens)?;
        out.push_sql(
            ") WITH ORDINALITY AS v(user_id, scope, key, token, n) \
               JOIN idempotency_keys k ON k.user_id = v.user_id AND k.scope = v.scope AND k.key = v.key \
               AND k.claim_token = v.token AND k.response_status IS NULL \
               ORDER BY k.user_id, k.scope, k.key FOR NO KEY UPDATE OF k) AS owned), \
             locked AS MATERIALIZED (SELECT id, price, stock_quantity, reserved_quantity, is_active \
               FROM products WHERE id = ANY(",
        );
        out.push_bind_param::<Array<Int8>, _>(&self.product_ids)?;
        out.push_sql(
            ") ORDER BY id FOR UPDATE) \
             SELECT l.id, l.price, l.stock_quantity, l.reserved_quantity, l.is_active, seq.ts, \
                    seq.order_ids, seq.item_ids, seq.inactive, seq.holds, seq.subscribed, seq.owned \
             FROM seq LEFT JOIN locked l ON true",
        );
        Ok(())
    }
}

impl diesel::query_dsl::RunQueryDslSupport for LockProducts {}

impl Query for LockProducts {
    type SqlType = (
        Nullable<Int8>,
        Nullable<Numeric>,
        Nullable<Int4>,
        Nullable<Int4>,
        Nullable<Bool>,
        Timestamptz,
        Array<Int8>,
        Array<Int8>,
        Array<Int8>,
        Array<Int8>,
        Array<Text>,
        Array<Int8>,
    );
}

/// Every write of a batch in one statement: new stock figures, new orders and
/// their items (multi-row), cancelled orders, new holds and their items,
/// holds that ended, completed idempotency keys, and the events of all that
/// with their webhook deliveries. Foreign keys between
/// the new rows (an item and its order, a confirmed hold and its order) are
/// checked at the end of the statement, when all exist. Returns the number of
/// rows written.
#[derive(QueryId, Default)]
pub struct WriteBatch {
    pub stock_ids: Vec<i64>,
    pub stock_values: Vec<i32>,
    pub reserved_values: Vec<i32>,
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
    pub hold_ids: Vec<Uuid>,
    pub hold_users: Vec<i64>,
    pub hold_totals: Vec<BigDecimal>,
    pub hold_expiries: Vec<DateTime<Utc>>,
    pub hold_item_holds: Vec<Uuid>,
    pub hold_item_products: Vec<i64>,
    pub hold_item_positions: Vec<i16>,
    pub hold_item_quantities: Vec<i32>,
    pub hold_item_prices: Vec<BigDecimal>,
    /// Row addresses (`ctid` as text) of the holds that ended.
    pub ended_tids: Vec<String>,
    pub ended_statuses: Vec<crate::domain::ReservationStatus>,
    pub ended_orders: Vec<Option<i64>>,
    pub key_users: Vec<i64>,
    pub key_scopes: Vec<&'static str>,
    pub key_names: Vec<String>,
    pub key_tokens: Vec<Uuid>,
    pub key_orders: Vec<Option<i64>>,
    /// The JSON of each key's 201 data (the order or the reservation).
    pub key_data: Vec<String>,
    pub events: crate::models::event::NewEvents,
}

impl QueryFragment<Pg> for WriteBatch {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "WITH s AS (UPDATE products p SET stock_quantity = v.stock, reserved_quantity = v.reserved \
             FROM unnest(",
        );
        out.push_bind_param::<Array<Int8>, _>(&self.stock_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Int4>, _>(&self.stock_values)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Int4>, _>(&self.reserved_values)?;
        out.push_sql(
            ") AS v(id, stock, reserved) WHERE p.id = v.id RETURNING 1), \
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
             r AS (INSERT INTO reservations (id, user_id, status, total_amount, expires_at, created_at, \
               updated_at) SELECT id, user_id, 'active', total, expires_at, ",
        );
        out.push_bind_param::<Timestamptz, _>(&self.now)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamptz, _>(&self.now)?;
        out.push_sql(" FROM unnest(");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.hold_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Int8>, _>(&self.hold_users)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Numeric>, _>(&self.hold_totals)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Timestamptz>, _>(&self.hold_expiries)?;
        out.push_sql(
            ") AS v(id, user_id, total, expires_at) RETURNING 1), \
             ri AS (INSERT INTO reservation_items (reservation_id, product_id, position, quantity, unit_price) \
               SELECT * FROM unnest(",
        );
        out.push_bind_param::<Array<SqlUuid>, _>(&self.hold_item_holds)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Int8>, _>(&self.hold_item_products)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Int2>, _>(&self.hold_item_positions)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Int4>, _>(&self.hold_item_quantities)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Numeric>, _>(&self.hold_item_prices)?;
        out.push_sql(
            ") RETURNING 1), \
             re AS (UPDATE reservations h SET status = (",
        );
        // By row address (the batch holds the rows' locks, so the addresses
        // cannot change): a TID scan, whatever the statistics say. Joined to
        // `unnest` by id, a plan cached while `reservations` was analyzed
        // empty read the whole table's index for every batch.
        out.push_bind_param::<Array<Text>, _>(&self.ended_statuses)?;
        out.push_sql(")[array_position(");
        out.push_bind_param::<Array<Text>, _>(&self.ended_tids)?;
        out.push_sql("::tid[], h.ctid)], order_id = (");
        out.push_bind_param::<Array<Nullable<Int8>>, _>(&self.ended_orders)?;
        out.push_sql(")[array_position(");
        out.push_bind_param::<Array<Text>, _>(&self.ended_tids)?;
        out.push_sql("::tid[], h.ctid)], updated_at = ");
        out.push_bind_param::<Timestamptz, _>(&self.now)?;
        out.push_sql(" WHERE h.ctid = ANY(");
        out.push_bind_param::<Array<Text>, _>(&self.ended_tids)?;
        out.push_sql(
            "::tid[]) RETURNING 1), \
             k AS (UPDATE idempotency_keys k SET response_status = 201, response_data = v.data, \
               responded_at = ",
        );
        out.push_bind_param::<Timestamptz, _>(&self.now)?;
        out.push_sql(", order_id = v.order_id FROM unnest(");
        out.push_bind_param::<Array<Int8>, _>(&self.key_users)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.key_scopes)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.key_names)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.key_tokens)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Int8>>, _>(&self.key_orders)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.key_data)?;
        out.push_sql(
            ") AS v(user_id, scope, key, token, order_id, data) \
               WHERE k.user_id = v.user_id AND k.scope = v.scope AND k.key = v.key \
               AND k.claim_token = v.token RETURNING 1), ",
        );
        self.events.walk_ctes(&self.now, &mut out)?;
        out.push_sql(
            " SELECT (SELECT count(*) FROM s) + (SELECT count(*) FROM o) + (SELECT count(*) FROM i) \
                  + (SELECT count(*) FROM c) + (SELECT count(*) FROM r) + (SELECT count(*) FROM ri) \
                  + (SELECT count(*) FROM re) + (SELECT count(*) FROM k)",
        );
        Ok(())
    }
}

impl diesel::query_dsl::RunQueryDslSupport for WriteBatch {}

impl Query for WriteBatch {
    type SqlType = BigInt;
}

/// `BEGIN` and `COMMIT` as cached prepared statements, pipelined with the
/// batch's statements. Not `diesel::sql_query`: diesel never caches those, so
/// each would wait for a Parse round trip first (COMMIT's inside the lock
/// hold). Not `batch_execute` either: the simple protocol bypasses
/// diesel-async's statement-cache lock, and that lock is what keeps
/// statements issued together on one connection in their order: a COMMIT
/// sent that way can overtake a write that is still being prepared, and the
/// write then runs outside the transaction. The API test
/// `each_pipelined_batch_reaches_postgres_as_one_transaction_in_order`
/// checks on the server that every batch is one transaction.
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

        impl diesel::query_dsl::RunQueryDslSupport for $name {}
    };
}

control_statement!(Begin, "BEGIN");
control_statement!(Commit, "COMMIT");
