//! `idempotency_keys`: one row per (user, scope, Idempotency-Key). The row is
//! claimed before an order or reservation is attempted and completed in the
//! same transaction that creates it, so an acknowledged order and its stored
//! response are never apart.
//!
//! A claim carries a token. A retry that takes over a stale claim (its
//! request looked dead) writes a new one, and only the holder of the current
//! token may complete or release the key: the inventory batch locks the key
//! rows of its requests with their tokens (`sql::LockProducts`) before it
//! decides, so a request that lost its claim creates nothing.

use std::time::Duration;

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::db::schema::idempotency_keys;

/// Orders and reservations have separate key spaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Orders,
    Reservations,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Orders => "orders",
            Self::Reservations => "reservations",
        }
    }
}

/// A claimed key: what the request that owns it passes on to complete it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    pub key: String,
    pub token: uuid::Uuid,
}

pub enum Claim {
    /// This request owns the key now; go ahead.
    Fresh(Owned),
    /// The key already produced this response.
    Replay(Stored),
    /// The key was used with another body.
    Mismatch,
    /// The first request with this key has not finished.
    InFlight,
}

/// The first response to a key: its status, the JSON of its data and the
/// envelope's timestamp, from which the same body is rebuilt.
#[derive(Debug)]
pub struct Stored {
    pub status: u16,
    pub data: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

#[derive(Queryable)]
struct Existing {
    request_hash: Vec<u8>,
    response_status: Option<i16>,
    response_data: Option<String>,
    responded_at: Option<chrono::DateTime<chrono::Utc>>,
    fresh: bool,
    stale: bool,
}

/// The instant `d` ago.
fn ago(d: Duration) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Claims `key` for `user_id` with the request's body hash. Keys older than
/// `ttl` are forgotten; an unfinished claim older than `stale` (its request
/// died) may be taken over.
pub async fn claim(
    conn: &mut AsyncPgConnection,
    user_id: i64,
    scope: Scope,
    key: &str,
    hash: &[u8],
    ttl: Duration,
    stale: Duration,
) -> QueryResult<Claim> {
    use idempotency_keys as k;
    let owned = Owned {
        key: key.to_owned(),
        token: uuid::Uuid::new_v4(),
    };
    for _ in 0..3 {
        let inserted = diesel::insert_into(k::table)
            .values((
                k::user_id.eq(user_id),
                k::scope.eq(scope.as_str()),
                k::key.eq(key),
                k::request_hash.eq(hash),
                k::claim_token.eq(owned.token),
            ))
            .on_conflict_do_nothing()
            .execute(conn)
            .await?;
        if inserted == 1 {
            return Ok(Claim::Fresh(owned));
        }
        let existing: Option<Existing> = k::table
            .find((user_id, scope.as_str(), key))
            .select((
                k::request_hash,
                k::response_status,
                k::response_data,
                k::responded_at,
                k::created_at.gt(ago(ttl)),
                k::created_at.lt(ago(stale)),
            ))
            .first(conn)
            .await
            .optional()?;
        let Some(e) = existing else { continue };
        if !e.fresh {
            // Expired: forget it and claim again.
            diesel::delete(
                k::table
                    .find((user_id, scope.as_str(), key))
                    .filter(k::created_at.le(ago(ttl))),
            )
            .execute(conn)
            .await?;
            continue;
        }
        if e.request_hash != hash {
            return Ok(Claim::Mismatch);
        }
        match (e.response_status, e.response_data, e.responded_at) {
            (Some(status), Some(data), Some(at)) => {
                return Ok(Claim::Replay(Stored {
                    status: status as u16,
                    data,
                    at,
                }))
            }
            _ if e.stale => {
                let taken = diesel::update(
                    k::table
                        .find((user_id, scope.as_str(), key))
                        .filter(k::response_status.is_null())
                        .filter(k::created_at.lt(ago(stale))),
                )
                .set((k::created_at.eq(diesel::dsl::now), k::claim_token.eq(owned.token)))
                .execute(conn)
                .await?;
                if taken == 1 {
                    return Ok(Claim::Fresh(owned));
                }
            }
            _ => return Ok(Claim::InFlight),
        }
    }
    Ok(Claim::InFlight)
}

/// Releases an unfinished claim (the request was refused), so a retry runs
/// again; a claim taken over by a retry is not this request's to release.
pub async fn release(
    conn: &mut AsyncPgConnection,
    user_id: i64,
    scope: Scope,
    owned: &Owned,
) -> QueryResult<usize> {
    use idempotency_keys as k;
    diesel::delete(
        k::table
            .find((user_id, scope.as_str(), &owned.key))
            .filter(k::response_status.is_null())
            .filter(k::claim_token.eq(owned.token)),
    )
    .execute(conn)
    .await
}

/// Deletes keys older than `ttl`.
pub async fn purge(conn: &mut AsyncPgConnection, ttl: Duration) -> QueryResult<usize> {
    use idempotency_keys as k;
    diesel::delete(k::table.filter(k::created_at.lt(ago(ttl))))
        .execute(conn)
        .await
}
