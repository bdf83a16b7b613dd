//! `oauth_states`: single-use OAuth login attempts.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::db::schema::oauth_states;

pub async fn insert(conn: &mut AsyncPgConnection, state_hash: &[u8], verifier: &str) -> QueryResult<()> {
    diesel::insert_into(oauth_states::table)
        .values((
            oauth_states::state_hash.eq(state_hash),
            oauth_states::pkce_verifier.eq(verifier),
        ))
        .execute(conn)
        .await
        .map(drop)
}

pub enum Taken {
    /// First use: the verifier and when the attempt started.
    Fresh {
        verifier: String,
        created_at: DateTime<Utc>,
    },
    /// The state was used before.
    Reused,
    /// No such state.
    Unknown,
}

/// Marks the state used, atomically: of two uses only one is `Fresh`.
pub async fn take(conn: &mut AsyncPgConnection, state_hash: &[u8]) -> QueryResult<Taken> {
    let fresh: Option<(String, DateTime<Utc>)> = diesel::update(
        oauth_states::table
            .find(state_hash)
            .filter(oauth_states::used_at.is_null()),
    )
    .set(oauth_states::used_at.eq(diesel::dsl::now))
    .returning((oauth_states::pkce_verifier, oauth_states::created_at))
    .get_result(conn)
    .await
    .optional()?;
    if let Some((verifier, created_at)) = fresh {
        return Ok(Taken::Fresh { verifier, created_at });
    }
    let exists: i64 = oauth_states::table
        .find(state_hash)
        .count()
        .get_result(conn)
        .await?;
    Ok(if exists > 0 { Taken::Reused } else { Taken::Unknown })
}

/// Removes attempts older than a day.
pub async fn purge(conn: &mut AsyncPgConnection) -> QueryResult<usize> {
    diesel::delete(
        oauth_states::table.filter(oauth_states::created_at.lt(Utc::now() - chrono::Duration::days(1))),
    )
    .execute(conn)
    .await
}
