//! `events`: the transactional outbox. Every change that somebody listens
//! to writes its event row in the change's own transaction, together with
//! one `webhook_deliveries` row per endpoint that is active and subscribed
//! to the event's type at that moment. Deliveries and the JetStream sink
//! read the rows from here, at least once.

use chrono::{DateTime, SecondsFormat, Utc};
use diesel::{
    pg::Pg,
    query_builder::{AstPass, Query, QueryFragment, QueryId},
    sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamptz, Uuid as SqlUuid},
    QueryResult,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    domain::{EventType, EventTypes},
    error::AppError,
};

/// Events to write in one transaction, as column arrays.
#[derive(Debug, Default)]
pub struct NewEvents {
    /// Who receives which types: only those events are kept.
    pub receivers: EventTypes,
    /// A JetStream sink is configured: the events (but pings) wait for it.
    pub sink: bool,
    /// Deliver to this endpoint alone, whatever it subscribes to (pings).
    pub endpoint: Option<i64>,
    pub ids: Vec<Uuid>,
    pub types: Vec<EventType>,
    /// The JSON of each event's `data`.
    pub data: Vec<String>,
}

impl NewEvents {
    pub fn new(receivers: EventTypes, sink: bool) -> Self {
        Self {
            receivers,
            sink,
            ..Default::default()
        }
    }

    /// Adds an event of type `t`, unless nobody receives that type.
    pub fn push(&mut self, t: EventType, data: &impl Serialize) -> Result<(), AppError> {
        if self.receivers.contains(t) || self.endpoint.is_some() {
            self.data
                .push(serde_json::to_string(data).map_err(AppError::internal)?);
            self.types.push(t);
            // Time-ordered ids keep the primary key's inserts at its end.
            self.ids.push(Uuid::now_v7());
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// `ev` (the events) and `wd` (their deliveries) as common table
    /// expressions of a larger statement, stamped `now`.
    pub fn walk_ctes<'b>(&'b self, now: &'b DateTime<Utc>, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "ev AS (INSERT INTO events (id, type, data, created_at, unpublished) \
             SELECT v.id, v.type, v.data::json, ",
        );
        out.push_bind_param::<Timestamptz, _>(now)?;
        out.push_sql(", ");
        out.push_bind_param::<Bool, _>(&self.sink)?;
        out.push_sql(" AND v.type <> 'ping' FROM unnest(");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.types)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.data)?;
        out.push_sql(
            ") AS v(id, type, data) RETURNING id, type), \
             wd AS (INSERT INTO webhook_deliveries (event_id, endpoint_id, next_attempt_at, updated_at) \
             SELECT ev.id, w.id, ",
        );
        out.push_bind_param::<Timestamptz, _>(now)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamptz, _>(now)?;
        out.push_sql(" FROM ev JOIN webhook_endpoints w ON CASE WHEN ");
        out.push_bind_param::<Nullable<BigInt>, _>(&self.endpoint)?;
        out.push_sql("::int8 IS NULL THEN w.is_active AND ev.type = ANY(w.events) ELSE w.id = ");
        out.push_bind_param::<Nullable<BigInt>, _>(&self.endpoint)?;
        out.push_sql(" END RETURNING 1)");
        Ok(())
    }
}

/// The types some active endpoint subscribes to (SQL, for statements that
/// read it along with other values).
pub const SUBSCRIBED_SQL: &str =
    "ARRAY(SELECT DISTINCT unnest(events) FROM webhook_endpoints WHERE is_active)";

/// Parses the result of [`SUBSCRIBED_SQL`]; `sink` adds every type but
/// `ping`.
pub fn receivers(subscribed: &[String], sink: bool) -> EventTypes {
    let endpoints: EventTypes = subscribed.iter().filter_map(|t| t.parse().ok()).collect();
    if sink {
        endpoints.union(EventTypes::ALL_BUT_PING)
    } else {
        endpoints
    }
}

/// The types somebody receives now.
pub async fn current_receivers(conn: &mut AsyncPgConnection, sink: bool) -> QueryResult<EventTypes> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Array<Text>)]
        types: Vec<String>,
    }
    let row: Row = diesel::sql_query(format!("SELECT {SUBSCRIBED_SQL} AS types"))
        .get_result(conn)
        .await?;
    Ok(receivers(&row.types, sink))
}

/// Writes `events` (a statement of its own, inside the caller's
/// transaction). Returns how many were written.
#[derive(QueryId)]
pub struct InsertEvents {
    pub events: NewEvents,
    pub now: DateTime<Utc>,
}

impl QueryFragment<Pg> for InsertEvents {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH ");
        self.events.walk_ctes(&self.now, &mut out)?;
        out.push_sql(" SELECT count(*) FROM ev");
        Ok(())
    }
}

impl diesel::query_dsl::RunQueryDslSupport for InsertEvents {}

impl Query for InsertEvents {
    type SqlType = BigInt;
}

impl InsertEvents {
    pub async fn run(self, conn: &mut AsyncPgConnection) -> QueryResult<i64> {
        if self.events.is_empty() {
            return Ok(0);
        }
        self.get_result(conn).await
    }
}

/// The body of an event as receivers get it: `{"type", "timestamp", "data"}`,
/// the same bytes on every attempt.
pub fn body(event_type: &str, created_at: DateTime<Utc>, data: &str) -> String {
    format!(
        r#"{{"type":"{event_type}","timestamp":"{}","data":{data}}}"#,
        created_at.to_rfc3339_opts(SecondsFormat::Micros, true)
    )
}

/// An event waiting for the JetStream sink.
#[derive(Debug, diesel::QueryableByName)]
pub struct Unpublished {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub event_type: String,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub data: String,
}

/// Locks up to `limit` unpublished events, oldest first, skipping those
/// another instance is publishing (inside the caller's transaction). `NO
/// KEY`: rows that reference an event (attempts, deliveries) can still be
/// written while it is being published.
pub async fn lock_unpublished(conn: &mut AsyncPgConnection, limit: i64) -> QueryResult<Vec<Unpublished>> {
    diesel::sql_query(
        "SELECT id, type AS event_type, created_at, data::text AS data FROM events WHERE unpublished \
         ORDER BY id LIMIT $1 FOR NO KEY UPDATE SKIP LOCKED",
    )
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

pub async fn mark_published(conn: &mut AsyncPgConnection, ids: &[Uuid]) -> QueryResult<usize> {
    diesel::sql_query("UPDATE events SET unpublished = false WHERE id = ANY($1)")
        .bind::<Array<SqlUuid>, _>(ids)
        .execute(conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_received_types_are_kept() {
        let mut events = NewEvents::new([EventType::OrderCreated].into_iter().collect(), false);
        events.push(EventType::OrderCreated, &1).ok();
        events.push(EventType::ProductSoldOut, &2).ok();
        assert_eq!(events.types, vec![EventType::OrderCreated]);
        assert_eq!(events.data, vec!["1".to_owned()]);

        let mut sink = NewEvents::new(receivers(&[], true), true);
        sink.push(EventType::ProductSoldOut, &2).ok();
        sink.push(EventType::Ping, &3).ok();
        assert_eq!(sink.types, vec![EventType::ProductSoldOut]);
    }

    #[test]
    fn receivers_ignore_unknown_names() {
        let r = receivers(&["order.created".into(), "nonsense".into()], false);
        assert!(r.contains(EventType::OrderCreated));
        assert!(!r.contains(EventType::ReservationCreated));
    }

    #[test]
    fn the_body_is_valid_json_with_the_data_verbatim() {
        let at = DateTime::parse_from_rfc3339("2026-12-04T10:00:00.5Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let b = body("order.created", at, r#"{"id":7}"#);
        assert_eq!(
            b,
            r#"{"type":"order.created","timestamp":"2026-12-04T10:00:00.500000Z","data":{"id":7}}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&b).unwrap_or_default();
        assert_eq!(parsed["data"]["id"], 7);
    }
}
