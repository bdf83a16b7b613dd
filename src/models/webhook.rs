//! `webhook_endpoints`, `webhook_deliveries` and `webhook_attempts`: who
//! receives which events, what is still to deliver, and every attempt.

use chrono::{DateTime, Utc};
use diesel::{
    prelude::*,
    sql_types::{Array, BigInt, Bool, Int2, Int4, Int8, Nullable, Text, Timestamptz, Uuid as SqlUuid},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    db::schema::{webhook_attempts, webhook_endpoints},
    domain::EventType,
};

#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_endpoints, check_for_backend(diesel::pg::Pg))]
pub struct EndpointRow {
    pub id: i64,
    pub url: String,
    pub events: Vec<Option<String>>,
    pub description: Option<String>,
    pub secret: String,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A webhook endpoint as admins see it: never its secret.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EndpointView {
    pub id: i64,
    #[schema(example = "https://erp.example.com/hooks/storefront")]
    pub url: String,
    pub events: Vec<EventType>,
    pub description: Option<String>,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<EndpointRow> for EndpointView {
    fn from(r: EndpointRow) -> Self {
        Self {
            id: r.id,
            url: r.url,
            events: r.events.iter().flatten().filter_map(|t| t.parse().ok()).collect(),
            description: r.description,
            is_active: r.is_active,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// The answer to a creation: the endpoint and its secret, shown only here.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedEndpoint {
    #[serde(flatten)]
    pub endpoint: EndpointView,
    /// `whsec_` + base64 of 32 random bytes: verify signatures with it.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
}

/// A new signing secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Secret {
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
}

#[derive(Insertable)]
#[diesel(table_name = webhook_endpoints)]
pub struct NewEndpoint {
    pub url: String,
    pub events: Vec<Option<String>>,
    pub description: Option<String>,
    pub secret: String,
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = webhook_endpoints)]
pub struct EndpointChanges {
    pub url: Option<String>,
    pub events: Option<Vec<Option<String>>>,
    pub description: Option<Option<String>>,
    pub is_active: Option<bool>,
}

impl EndpointChanges {
    pub fn is_empty(&self) -> bool {
        self.url.is_none() && self.events.is_none() && self.description.is_none() && self.is_active.is_none()
    }
}

/// The signing secrets never print.
macro_rules! redacted_debug {
    ($t:ty, $($field:ident),+) => {
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($t))
                    $(.field(stringify!($field), &self.$field))+
                    .field("secret", &"[REDACTED]")
                    .finish()
            }
        }
    };
}

redacted_debug!(EndpointRow, id, url, events, is_active);
redacted_debug!(NewEndpoint, url, events);
redacted_debug!(Claimed, event_id, endpoint_id, attempt, event_type, url);

pub fn type_names(types: &[EventType]) -> Vec<Option<String>> {
    types.iter().map(|t| Some(t.as_str().to_owned())).collect()
}

pub async fn create(conn: &mut AsyncPgConnection, new: NewEndpoint) -> QueryResult<EndpointRow> {
    diesel::insert_into(webhook_endpoints::table)
        .values(new)
        .returning(EndpointRow::as_returning())
        .get_result(conn)
        .await
}

pub async fn find(conn: &mut AsyncPgConnection, id: i64) -> QueryResult<Option<EndpointRow>> {
    webhook_endpoints::table
        .find(id)
        .select(EndpointRow::as_select())
        .first(conn)
        .await
        .optional()
}

pub async fn update(
    conn: &mut AsyncPgConnection,
    id: i64,
    changes: EndpointChanges,
) -> QueryResult<Option<EndpointRow>> {
    if changes.is_empty() {
        return find(conn, id).await;
    }
    diesel::update(webhook_endpoints::table.find(id))
        .set(changes)
        .returning(EndpointRow::as_returning())
        .get_result(conn)
        .await
        .optional()
}

pub async fn set_secret(conn: &mut AsyncPgConnection, id: i64, secret: &str) -> QueryResult<bool> {
    let n = diesel::update(webhook_endpoints::table.find(id))
        .set(webhook_endpoints::secret.eq(secret))
        .execute(conn)
        .await?;
    Ok(n == 1)
}

/// Deletes the endpoint with its deliveries and attempts.
pub async fn delete(conn: &mut AsyncPgConnection, id: i64) -> QueryResult<bool> {
    let n = diesel::delete(webhook_endpoints::table.find(id))
        .execute(conn)
        .await?;
    Ok(n == 1)
}

pub async fn list_offset(
    conn: &mut AsyncPgConnection,
    offset: i64,
    limit: i64,
) -> QueryResult<(Vec<EndpointRow>, i64)> {
    let total = webhook_endpoints::table.count().get_result(conn).await?;
    let rows = webhook_endpoints::table
        .select(EndpointRow::as_select())
        .order((webhook_endpoints::created_at.desc(), webhook_endpoints::id.desc()))
        .offset(offset)
        .limit(limit)
        .load(conn)
        .await?;
    Ok((rows, total))
}

pub async fn list_keyset(
    conn: &mut AsyncPgConnection,
    after: Option<(DateTime<Utc>, i64)>,
    limit: i64,
) -> QueryResult<Vec<EndpointRow>> {
    let mut q = webhook_endpoints::table.into_boxed();
    if let Some((ts, id)) = after {
        q = q.filter(
            diesel::dsl::sql::<Bool>("(webhook_endpoints.created_at, webhook_endpoints.id) < (")
                .bind::<Timestamptz, _>(ts)
                .sql(", ")
                .bind::<Int8, _>(id)
                .sql(")"),
        );
    }
    q.select(EndpointRow::as_select())
        .order((webhook_endpoints::created_at.desc(), webhook_endpoints::id.desc()))
        .limit(limit)
        .load(conn)
        .await
}

/// One delivery attempt as the deliveries list shows it.
#[derive(Debug, Clone, QueryableByName, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    /// The `webhook-id` header of the attempt.
    #[diesel(sql_type = SqlUuid)]
    pub event_id: Uuid,
    #[diesel(sql_type = Text)]
    #[schema(value_type = EventType)]
    pub event_type: String,
    /// 1 for the first attempt of this event to this endpoint.
    #[diesel(sql_type = Int4)]
    pub attempt: i32,
    /// `null` when no response came (network error, timeout, refused target).
    #[diesel(sql_type = Nullable<Int2>)]
    pub status_code: Option<i16>,
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
    #[diesel(sql_type = Int4)]
    pub duration_ms: i32,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

/// Keyset position of the deliveries list: (created_at in microseconds,
/// event id, attempt), newest first.
pub type AttemptCursor = (i64, Uuid, i32);

const ATTEMPTS: &str = "SELECT a.event_id, e.type AS event_type, a.attempt, a.status_code, a.error, \
    a.duration_ms, a.created_at FROM webhook_attempts a JOIN events e ON e.id = a.event_id \
    WHERE a.endpoint_id = $1";
const NEWEST_FIRST: &str = " ORDER BY a.created_at DESC, a.event_id DESC, a.attempt DESC";

pub async fn attempts_offset(
    conn: &mut AsyncPgConnection,
    endpoint: i64,
    offset: i64,
    limit: i64,
) -> QueryResult<(Vec<AttemptView>, i64)> {
    let total = webhook_attempts::table
        .filter(webhook_attempts::endpoint_id.eq(endpoint))
        .count()
        .get_result(conn)
        .await?;
    let rows = diesel::sql_query(format!("{ATTEMPTS}{NEWEST_FIRST} OFFSET $2 LIMIT $3"))
        .bind::<Int8, _>(endpoint)
        .bind::<BigInt, _>(offset)
        .bind::<BigInt, _>(limit)
        .load(conn)
        .await?;
    Ok((rows, total))
}

pub async fn attempts_keyset(
    conn: &mut AsyncPgConnection,
    endpoint: i64,
    after: Option<(DateTime<Utc>, (Uuid, i32))>,
    limit: i64,
) -> QueryResult<Vec<AttemptView>> {
    match after {
        None => {
            diesel::sql_query(format!("{ATTEMPTS}{NEWEST_FIRST} LIMIT $2"))
                .bind::<Int8, _>(endpoint)
                .bind::<BigInt, _>(limit)
                .load(conn)
                .await
        }
        Some((ts, (event, attempt))) => {
            diesel::sql_query(format!(
                "{ATTEMPTS} AND (a.created_at, a.event_id, a.attempt) < ($2, $3, $4){NEWEST_FIRST} LIMIT $5"
            ))
            .bind::<Int8, _>(endpoint)
            .bind::<Timestamptz, _>(ts)
            .bind::<SqlUuid, _>(event)
            .bind::<Int4, _>(attempt)
            .bind::<BigInt, _>(limit)
            .load(conn)
            .await
        }
    }
}

/// A delivery claimed for one attempt, with what the attempt needs.
#[derive(Clone, QueryableByName)]
pub struct Claimed {
    #[diesel(sql_type = SqlUuid)]
    pub event_id: Uuid,
    #[diesel(sql_type = Int8)]
    pub endpoint_id: i64,
    /// The number of this attempt (1 for the first).
    #[diesel(sql_type = Int4)]
    pub attempt: i32,
    #[diesel(sql_type = Text)]
    pub event_type: String,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub data: String,
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = Text)]
    pub secret: String,
}

/// Claims due deliveries of active endpoints: for each, at most
/// `max_in_flight` minus what this instance already has in flight to it
/// (`busy`: endpoint ids and counts). `FOR UPDATE SKIP LOCKED` leaves rows
/// another instance is claiming to it; the claimed rows are updated by row
/// address (they are locked, so it cannot change) and leased for
/// `lease_ms`, so nobody else attempts them while this instance does, and
/// somebody does if this instance dies.
pub async fn claim(
    conn: &mut AsyncPgConnection,
    max_in_flight: i32,
    busy: (Vec<i64>, Vec<i32>),
    lease_ms: i64,
) -> QueryResult<Vec<Claimed>> {
    diesel::sql_query(
        "WITH due AS (\
           SELECT d.tid FROM webhook_endpoints w CROSS JOIN LATERAL (\
             SELECT ctid AS tid FROM webhook_deliveries \
             WHERE endpoint_id = w.id AND status = 'pending' AND next_attempt_at <= now() \
               AND leased_until < now() \
             ORDER BY next_attempt_at \
             LIMIT greatest($1 - coalesce(($3::int4[])[array_position($2::int8[], w.id)], 0), 0) \
             FOR UPDATE SKIP LOCKED) d \
           WHERE w.is_active), \
         claimed AS (UPDATE webhook_deliveries d SET attempts = d.attempts + 1, \
           leased_until = now() + make_interval(secs => $4 / 1000.0) \
           WHERE d.ctid = ANY(ARRAY(SELECT tid FROM due)) \
           RETURNING d.event_id, d.endpoint_id, d.attempts) \
         SELECT c.event_id, c.endpoint_id, c.attempts AS attempt, e.type AS event_type, e.created_at, \
           e.data::text AS data, w.url, w.secret \
         FROM claimed c JOIN events e ON e.id = c.event_id JOIN webhook_endpoints w ON w.id = c.endpoint_id",
    )
    .bind::<Int4, _>(max_in_flight)
    .bind::<Array<Int8>, _>(busy.0)
    .bind::<Array<Int4>, _>(busy.1)
    .bind::<BigInt, _>(lease_ms)
    .load(conn)
    .await
}

/// What became of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Pending again, tried next at this time.
    Retry(DateTime<Utc>),
    /// Given up.
    Failed,
}

#[derive(Debug, Clone)]
pub struct Attempt {
    pub event_id: Uuid,
    pub endpoint_id: i64,
    pub attempt: i32,
    pub status_code: Option<i16>,
    pub error: Option<String>,
    pub duration_ms: i32,
    pub started_at: DateTime<Utc>,
    pub verdict: Verdict,
    /// When the event was written (not stored with the attempt).
    pub event_created_at: DateTime<Utc>,
}

/// Records finished attempts and their deliveries' new state, in one
/// statement: a delivered one is deleted, a failed one waits for its next
/// attempt or is given up. A delivery changes only if it is still at the
/// attempt recorded (a lease that ran out meanwhile let another instance
/// claim it again).
pub async fn record(conn: &mut AsyncPgConnection, attempts: &[Attempt]) -> QueryResult<()> {
    if attempts.is_empty() {
        return Ok(());
    }
    let mut event_ids = Vec::with_capacity(attempts.len());
    let mut endpoint_ids = Vec::with_capacity(attempts.len());
    let mut numbers = Vec::with_capacity(attempts.len());
    let mut codes = Vec::with_capacity(attempts.len());
    let mut errors = Vec::with_capacity(attempts.len());
    let mut durations = Vec::with_capacity(attempts.len());
    let mut started = Vec::with_capacity(attempts.len());
    let mut statuses = Vec::with_capacity(attempts.len());
    let mut next = Vec::with_capacity(attempts.len());
    for a in attempts {
        event_ids.push(a.event_id);
        endpoint_ids.push(a.endpoint_id);
        numbers.push(a.attempt);
        codes.push(a.status_code);
        errors.push(a.error.clone());
        durations.push(a.duration_ms);
        started.push(a.started_at);
        let (status, at) = match a.verdict {
            Verdict::Delivered => ("delivered", None),
            Verdict::Retry(at) => ("pending", Some(at)),
            Verdict::Failed => ("failed", None),
        };
        statuses.push(status);
        next.push(at);
    }
    diesel::sql_query(
        "WITH v AS (SELECT * FROM unnest($1::uuid[], $2::int8[], $3::int4[], $4::int2[], $5::text[], \
           $6::int4[], $7::timestamptz[], $8::text[], $9::timestamptz[]) \
           AS v(event_id, endpoint_id, attempt, status_code, error, duration_ms, started_at, status, next_at)), \
         a AS (INSERT INTO webhook_attempts (event_id, endpoint_id, attempt, status_code, error, duration_ms, \
           created_at) SELECT event_id, endpoint_id, attempt, status_code, error, duration_ms, started_at FROM v \
           WHERE EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.id = v.endpoint_id) \
           ON CONFLICT DO NOTHING RETURNING 1), \
         done AS (DELETE FROM webhook_deliveries d USING v WHERE v.status = 'delivered' \
           AND d.event_id = v.event_id AND d.endpoint_id = v.endpoint_id AND d.attempts = v.attempt RETURNING 1) \
         UPDATE webhook_deliveries d SET status = v.status, \
           next_attempt_at = coalesce(v.next_at, d.next_attempt_at), leased_until = '-infinity', updated_at = now() \
         FROM v WHERE v.status <> 'delivered' \
           AND d.event_id = v.event_id AND d.endpoint_id = v.endpoint_id AND d.attempts = v.attempt",
    )
    .bind::<Array<SqlUuid>, _>(event_ids)
    .bind::<Array<Int8>, _>(endpoint_ids)
    .bind::<Array<Int4>, _>(numbers)
    .bind::<Array<Nullable<Int2>>, _>(codes)
    .bind::<Array<Nullable<Text>>, _>(errors)
    .bind::<Array<Int4>, _>(durations)
    .bind::<Array<Timestamptz>, _>(started)
    .bind::<Array<Text>, _>(statuses)
    .bind::<Array<Nullable<Timestamptz>>, _>(next)
    .execute(conn)
    .await?;
    Ok(())
}

/// The smallest UUIDv7 of `at`'s millisecond: every event id below it was
/// written before.
fn first_id_at(at: DateTime<Utc>) -> Uuid {
    let ms = u128::try_from(at.timestamp_millis().max(0)).unwrap_or(0);
    Uuid::from_u128(ms << 80)
}

/// When a UUIDv7 event id was written.
pub fn written_at(id: Uuid) -> Option<DateTime<Utc>> {
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    DateTime::from_timestamp(i64::try_from(secs).ok()?, nanos)
}

/// Deletes up to `limit` events written before `before` that nothing waits
/// for any more (no pending delivery, published), with their deliveries
/// and attempts. Returns how many.
pub async fn prune(conn: &mut AsyncPgConnection, before: DateTime<Utc>, limit: i64) -> QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE e.id < $1 \
           AND NOT e.unpublished AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d \
             WHERE d.event_id = e.id AND d.status = 'pending') \
           ORDER BY e.id LIMIT $2)",
    )
    .bind::<SqlUuid, _>(first_id_at(before))
    .bind::<BigInt, _>(limit)
    .execute(conn)
    .await
}

/// What `/metrics` reports about the outbox: pending counts and the oldest
/// pending event ids (UUIDv7, so their time is known).
#[derive(Debug, QueryableByName)]
pub struct Backlog {
    #[diesel(sql_type = BigInt)]
    pub deliveries: i64,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub oldest_delivery: Option<Uuid>,
    #[diesel(sql_type = BigInt)]
    pub unpublished: i64,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub oldest_unpublished: Option<Uuid>,
}

pub async fn backlog(conn: &mut AsyncPgConnection) -> QueryResult<Backlog> {
    diesel::sql_query(
        "SELECT (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending') AS deliveries, \
           (SELECT event_id FROM webhook_deliveries WHERE status = 'pending' ORDER BY event_id LIMIT 1) \
             AS oldest_delivery, \
           (SELECT count(*) FROM events WHERE unpublished) AS unpublished, \
           (SELECT id FROM events WHERE unpublished ORDER BY id LIMIT 1) AS oldest_unpublished",
    )
    .get_result(conn)
    .await
}

/// Marks pending deliveries of events written before `written_before`
/// failed without another attempt: those of endpoints that stayed
/// deactivated past `webhooks.max_age_secs`.
pub async fn fail_expired(conn: &mut AsyncPgConnection, written_before: DateTime<Utc>) -> QueryResult<usize> {
    diesel::sql_query(
        "UPDATE webhook_deliveries SET status = 'failed', updated_at = now() \
         WHERE status = 'pending' AND event_id < $1",
    )
    .bind::<SqlUuid, _>(first_id_at(written_before))
    .execute(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_order_by_time_and_tell_it() {
        let now = Utc::now();
        let id = Uuid::now_v7();
        let cut = first_id_at(now - chrono::Duration::seconds(1));
        assert!(cut < id);
        assert!(first_id_at(now + chrono::Duration::seconds(1)) > id);
        let at = written_at(id).expect("v7 timestamp");
        assert!((at - now).num_milliseconds().abs() < 1000);
        assert_eq!(written_at(Uuid::new_v4()), None);
    }
}
