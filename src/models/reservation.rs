//! `reservations` and `reservation_items`: checkout holds. Rows, the view
//! clients see and read queries; holds are created, confirmed, released and
//! expired only by the InventoryActor's batches.

use std::collections::HashMap;

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::{
    prelude::*,
    sql_types::{Bool, Text, Timestamptz},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    db::schema::{reservation_items, reservations},
    domain::{money, ReservationStatus},
};

#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = reservations, check_for_backend(diesel::pg::Pg))]
pub struct ReservationRow {
    pub id: Uuid,
    pub user_id: i64,
    pub status: ReservationStatus,
    pub total_amount: BigDecimal,
    pub expires_at: DateTime<Utc>,
    pub order_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = reservation_items, check_for_backend(diesel::pg::Pg))]
pub struct ReservationItem {
    #[serde(skip)]
    pub reservation_id: Uuid,
    pub product_id: i64,
    #[serde(skip)]
    pub position: i16,
    pub quantity: i32,
    /// The product's price when the hold was made; its order keeps it.
    #[serde(serialize_with = "money::serialize")]
    #[schema(value_type = String, example = "19.99")]
    pub unit_price: BigDecimal,
}

/// A reservation as clients see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReservationView {
    pub id: Uuid,
    pub user_id: i64,
    #[schema(value_type = String, example = "active", pattern = "^(active|confirmed|released|expired)$")]
    pub status: ReservationStatus,
    pub items: Vec<ReservationItem>,
    #[serde(serialize_with = "money::serialize")]
    #[schema(value_type = String, example = "39.98")]
    pub total_amount: BigDecimal,
    pub expires_at: DateTime<Utc>,
    /// The order it became (confirmed holds only).
    pub order_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ReservationView {
    pub fn new(r: ReservationRow, items: Vec<ReservationItem>) -> Self {
        Self {
            id: r.id,
            user_id: r.user_id,
            status: r.status,
            items,
            total_amount: r.total_amount,
            expires_at: r.expires_at,
            order_id: r.order_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Attaches items to reservations (one query for all of them), keeping order.
pub async fn with_items(
    conn: &mut AsyncPgConnection,
    rows: Vec<ReservationRow>,
) -> QueryResult<Vec<ReservationView>> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let items: Vec<ReservationItem> = reservation_items::table
        .filter(reservation_items::reservation_id.eq_any(&ids))
        .select(ReservationItem::as_select())
        .order((reservation_items::reservation_id, reservation_items::position))
        .load(conn)
        .await?;
    let mut by_hold: HashMap<Uuid, Vec<ReservationItem>> = HashMap::new();
    for item in items {
        by_hold.entry(item.reservation_id).or_default().push(item);
    }
    Ok(rows
        .into_iter()
        .map(|r| {
            let items = by_hold.remove(&r.id).unwrap_or_default();
            ReservationView::new(r, items)
        })
        .collect())
}

pub async fn find(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<ReservationView>> {
    let Some(row) = reservations::table
        .find(id)
        .select(ReservationRow::as_select())
        .first(conn)
        .await
        .optional()?
    else {
        return Ok(None);
    };
    Ok(with_items(conn, vec![row]).await?.pop())
}

/// Holds locked by a batch.
#[derive(Debug, Default)]
pub struct LockedHolds {
    pub holds: Vec<ReservationView>,
    /// The due holds among them that the batch claimed for expiry.
    pub claimed: Vec<Uuid>,
    /// Each locked hold's row address (`ctid`), stable while the lock is
    /// held: the batch updates the rows by address, a plan that no table
    /// statistics can turn into a scan.
    pub tids: HashMap<Uuid, String>,
}

/// Locks the holds `ids` (in id order: no deadlocks between batches) and,
/// with `claim_due > 0`, claims up to that many active holds past their
/// `expires_at` that no other transaction holds (`SKIP LOCKED`: with several
/// instances each due hold is claimed by exactly one).
pub async fn lock(conn: &mut AsyncPgConnection, ids: &[Uuid], claim_due: i64) -> QueryResult<LockedHolds> {
    let tid = || diesel::dsl::sql::<Text>("reservations.ctid::text");
    let mut rows: Vec<(ReservationRow, String)> = if ids.is_empty() {
        Vec::new()
    } else {
        reservations::table
            .filter(reservations::id.eq_any(ids))
            .order(reservations::id)
            .select((ReservationRow::as_select(), tid()))
            .for_update()
            .load(conn)
            .await?
    };
    let mut claimed = Vec::new();
    if claim_due > 0 {
        // `status = 'active'` as a literal: a bound status would hide the
        // partial index `reservations_due_idx` from the generic plan.
        let due: Vec<(ReservationRow, String)> = reservations::table
            .filter(diesel::dsl::sql::<Bool>("reservations.status = 'active'"))
            .filter(reservations::expires_at.le(diesel::dsl::now))
            .order(reservations::expires_at)
            .limit(claim_due)
            .select((ReservationRow::as_select(), tid()))
            .for_update()
            .skip_locked()
            .load(conn)
            .await?;
        for r in due {
            claimed.push(r.0.id);
            if !rows.iter().any(|l| l.0.id == r.0.id) {
                rows.push(r);
            }
        }
    }
    if rows.is_empty() {
        return Ok(LockedHolds {
            claimed,
            ..Default::default()
        });
    }
    let tids = rows.iter().map(|(r, t)| (r.id, t.clone())).collect();
    let holds = with_items(conn, rows.into_iter().map(|(r, _)| r).collect()).await?;
    Ok(LockedHolds { holds, claimed, tids })
}

#[derive(Debug, Clone, Default)]
pub struct ReservationFilter {
    pub user_id: Option<i64>,
    pub status: Option<ReservationStatus>,
}

/// Keyset position: (created_at in microseconds, id), newest first.
pub type ReservationCursor = (i64, Uuid);

fn filtered(f: &ReservationFilter) -> reservations::BoxedQuery<'static, diesel::pg::Pg> {
    let mut q = reservations::table.into_boxed();
    if let Some(u) = f.user_id {
        q = q.filter(reservations::user_id.eq(u));
    }
    if let Some(s) = f.status {
        q = q.filter(reservations::status.eq(s));
    }
    q
}

pub async fn list_offset(
    conn: &mut AsyncPgConnection,
    filter: &ReservationFilter,
    offset: i64,
    limit: i64,
) -> QueryResult<(Vec<ReservationView>, i64)> {
    let total = filtered(filter).count().get_result(conn).await?;
    let rows = filtered(filter)
        .select(ReservationRow::as_select())
        .order((reservations::created_at.desc(), reservations::id.desc()))
        .offset(offset)
        .limit(limit)
        .load(conn)
        .await?;
    Ok((with_items(conn, rows).await?, total))
}

pub async fn list_keyset(
    conn: &mut AsyncPgConnection,
    filter: &ReservationFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> QueryResult<Vec<ReservationView>> {
    let mut q = filtered(filter);
    if let Some((ts, id)) = after {
        q = q.filter(
            diesel::dsl::sql::<Bool>("(reservations.created_at, reservations.id) < (")
                .bind::<Timestamptz, _>(ts)
                .sql(", ")
                .bind::<diesel::sql_types::Uuid, _>(id)
                .sql(")"),
        );
    }
    let rows = q
        .select(ReservationRow::as_select())
        .order((reservations::created_at.desc(), reservations::id.desc()))
        .limit(limit)
        .load(conn)
        .await?;
    with_items(conn, rows).await
}
