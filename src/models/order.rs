//! `orders` and `order_items`: rows, the order view and read queries. Orders
//! are created and cancelled only by the InventoryActor's batches.

use std::collections::HashMap;

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::{
    prelude::*,
    sql_types::{Bool, Int8, Timestamptz},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;

use crate::{
    db::schema::{order_items, orders},
    domain::{money, OrderStatus},
};

#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = orders, check_for_backend(diesel::pg::Pg))]
pub struct OrderRow {
    pub id: i64,
    pub user_id: i64,
    pub status: OrderStatus,
    pub total_amount: BigDecimal,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = order_items, check_for_backend(diesel::pg::Pg))]
pub struct OrderItem {
    pub id: i64,
    #[serde(skip)]
    pub order_id: i64,
    pub product_id: i64,
    pub quantity: i32,
    #[serde(serialize_with = "money::serialize")]
    #[schema(value_type = String, example = "19.99")]
    pub unit_price: BigDecimal,
}

/// An order as clients see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    pub id: i64,
    pub user_id: i64,
    #[schema(value_type = String, example = "pending", pattern = "^(pending|paid|shipped|delivered|cancelled)$")]
    pub status: OrderStatus,
    #[serde(serialize_with = "money::serialize")]
    #[schema(value_type = String, example = "39.98")]
    pub total_amount: BigDecimal,
    pub items: Vec<OrderItem>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl OrderView {
    pub fn new(o: OrderRow, items: Vec<OrderItem>) -> Self {
        Self {
            id: o.id,
            user_id: o.user_id,
            status: o.status,
            total_amount: o.total_amount,
            items,
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
}

/// Attaches items to orders (one query for all of them), keeping order.
pub async fn with_items(conn: &mut AsyncPgConnection, rows: Vec<OrderRow>) -> QueryResult<Vec<OrderView>> {
    let ids: Vec<i64> = rows.iter().map(|o| o.id).collect();
    let items: Vec<OrderItem> = order_items::table
        .filter(order_items::order_id.eq_any(&ids))
        .select(OrderItem::as_select())
        .order(order_items::id)
        .load(conn)
        .await?;
    let mut by_order: HashMap<i64, Vec<OrderItem>> = HashMap::new();
    for item in items {
        by_order.entry(item.order_id).or_default().push(item);
    }
    Ok(rows
        .into_iter()
        .map(|o| {
            let items = by_order.remove(&o.id).unwrap_or_default();
            OrderView::new(o, items)
        })
        .collect())
}

pub async fn find(conn: &mut AsyncPgConnection, id: i64) -> QueryResult<Option<OrderView>> {
    let Some(row) = orders::table
        .find(id)
        .select(OrderRow::as_select())
        .first(conn)
        .await
        .optional()?
    else {
        return Ok(None);
    };
    Ok(with_items(conn, vec![row]).await?.pop())
}

/// Moves an order from `from` to `to` if it is still in `from`; `None` when it
/// was not (a concurrent change won).
pub async fn transition(
    conn: &mut AsyncPgConnection,
    id: i64,
    from: OrderStatus,
    to: OrderStatus,
) -> QueryResult<Option<OrderView>> {
    let row = diesel::update(orders::table.find(id).filter(orders::status.eq(from)))
        .set(orders::status.eq(to))
        .returning(OrderRow::as_returning())
        .get_result(conn)
        .await
        .optional()?;
    match row {
        Some(row) => Ok(with_items(conn, vec![row]).await?.pop()),
        None => Ok(None),
    }
}

#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub user_id: Option<i64>,
    pub status: Option<OrderStatus>,
}

/// Keyset position: (created_at in microseconds, id), newest first.
pub type OrderCursor = (i64, i64);

fn filtered(f: &OrderFilter) -> orders::BoxedQuery<'static, diesel::pg::Pg> {
    let mut q = orders::table.into_boxed();
    if let Some(u) = f.user_id {
        q = q.filter(orders::user_id.eq(u));
    }
    if let Some(s) = f.status {
        q = q.filter(orders::status.eq(s));
    }
    q
}

pub async fn list_offset(
    conn: &mut AsyncPgConnection,
    filter: &OrderFilter,
    offset: i64,
    limit: i64,
) -> QueryResult<(Vec<OrderView>, i64)> {
    let total = filtered(filter).count().get_result(conn).await?;
    let rows = filtered(filter)
        .select(OrderRow::as_select())
        .order((orders::created_at.desc(), orders::id.desc()))
        .offset(offset)
        .limit(limit)
        .load(conn)
        .await?;
    Ok((with_items(conn, rows).await?, total))
}

pub async fn list_keyset(
    conn: &mut AsyncPgConnection,
    filter: &OrderFilter,
    after: Option<(DateTime<Utc>, i64)>,
    limit: i64,
) -> QueryResult<Vec<OrderView>> {
    let mut q = filtered(filter);
    if let Some((ts, id)) = after {
        q = q.filter(
            diesel::dsl::sql::<Bool>("(orders.created_at, orders.id) < (")
                .bind::<Timestamptz, _>(ts)
                .sql(", ")
                .bind::<Int8, _>(id)
                .sql(")"),
        );
    }
    let rows = q
        .select(OrderRow::as_select())
        .order((orders::created_at.desc(), orders::id.desc()))
        .limit(limit)
        .load(conn)
        .await?;
    with_items(conn, rows).await
}
