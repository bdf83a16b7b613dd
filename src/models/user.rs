//! `users`: rows, forms and queries.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;

use crate::{db::schema::users, domain::Role};

#[derive(Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
pub struct UserRow {
    pub id: i64,
    pub email: String,
    pub password_hash: Option<String>,
    pub name: String,
    pub role: Role,
    pub is_active: bool,
    pub google_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the hash.
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("is_active", &self.is_active)
            .finish_non_exhaustive()
    }
}

/// What clients see of a user: never the hash or the Google id.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[cfg_attr(test, derive(serde::Deserialize))]
pub struct UserView {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<UserRow> for UserView {
    fn from(u: UserRow) -> Self {
        Self {
            id: u.id,
            email: u.email,
            name: u.name,
            role: u.role,
            is_active: u.is_active,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    pub email: &'a str,
    pub password_hash: Option<&'a str>,
    pub name: &'a str,
    pub role: Role,
    pub google_id: Option<&'a str>,
}

#[derive(AsChangeset, Default)]
#[diesel(table_name = users)]
pub struct UserChanges {
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub name: Option<String>,
    pub role: Option<Role>,
    pub is_active: Option<bool>,
}

impl UserChanges {
    pub fn is_empty(&self) -> bool {
        self.email.is_none()
            && self.password_hash.is_none()
            && self.name.is_none()
            && self.role.is_none()
            && self.is_active.is_none()
    }
}

pub async fn insert(conn: &mut AsyncPgConnection, new: &NewUser<'_>) -> QueryResult<UserRow> {
    diesel::insert_into(users::table)
        .values(new)
        .returning(UserRow::as_returning())
        .get_result(conn)
        .await
}

pub async fn find(conn: &mut AsyncPgConnection, id: i64) -> QueryResult<Option<UserRow>> {
    users::table
        .find(id)
        .select(UserRow::as_select())
        .first(conn)
        .await
        .optional()
}

pub async fn find_by_email(conn: &mut AsyncPgConnection, email: &str) -> QueryResult<Option<UserRow>> {
    users::table
        .filter(users::email.eq(email))
        .select(UserRow::as_select())
        .first(conn)
        .await
        .optional()
}

pub async fn update(conn: &mut AsyncPgConnection, id: i64, changes: &UserChanges) -> QueryResult<UserRow> {
    if changes.is_empty() {
        return users::table
            .find(id)
            .select(UserRow::as_select())
            .first(conn)
            .await;
    }
    diesel::update(users::table.find(id))
        .set(changes)
        .returning(UserRow::as_returning())
        .get_result(conn)
        .await
}

/// Locks the rows of `ids` and, with `super_admins`, of every active super
/// admin, in id order, for the rest of the transaction, and returns them.
/// Every account change locks this way, so two of them never deadlock
/// (two admins deleting each other) and a check made on the returned rows
/// (roles, the last super admin, a password) still holds at commit.
/// `FOR NO KEY UPDATE`: orders and holds that reference these users are not
/// blocked.
pub async fn lock_accounts(
    conn: &mut AsyncPgConnection,
    ids: &[i64],
    super_admins: bool,
) -> QueryResult<Vec<UserRow>> {
    let listed = users::id.eq_any(ids);
    let query = users::table
        .select(UserRow::as_select())
        .order(users::id)
        .for_no_key_update();
    if super_admins {
        query
            .filter(listed.or(users::role.eq(Role::SuperAdmin).and(users::is_active.eq(true))))
            .load(conn)
            .await
    } else {
        query.filter(listed).load(conn).await
    }
}

/// Escapes `%`, `_` and `\` so a search term matches literally inside ILIKE.
pub fn like_pattern(term: &str) -> String {
    let mut out = String::with_capacity(term.len() + 2);
    out.push('%');
    for c in term.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// A page of users, newest first, filtered by a case-insensitive substring of
/// name or email; returns the rows and the total matching count.
pub async fn list_offset(
    conn: &mut AsyncPgConnection,
    search: Option<&str>,
    offset: i64,
    limit: i64,
) -> QueryResult<(Vec<UserRow>, i64)> {
    let filtered = || {
        let mut q = users::table.into_boxed();
        if let Some(term) = search {
            let pattern = like_pattern(term);
            q = q.filter(users::name.ilike(pattern.clone()).or(users::email.ilike(pattern)));
        }
        q
    };
    let total: i64 = filtered().count().get_result(conn).await?;
    let rows = filtered()
        .select(UserRow::as_select())
        .order((users::created_at.desc(), users::id.desc()))
        .offset(offset)
        .limit(limit)
        .load(conn)
        .await?;
    Ok((rows, total))
}

/// Keyset page: rows strictly after `(created_at, id)` in newest-first order.
pub async fn list_keyset(
    conn: &mut AsyncPgConnection,
    search: Option<&str>,
    after: Option<(DateTime<Utc>, i64)>,
    limit: i64,
) -> QueryResult<Vec<UserRow>> {
    let mut q = users::table.into_boxed();
    if let Some(term) = search {
        let pattern = like_pattern(term);
        q = q.filter(users::name.ilike(pattern.clone()).or(users::email.ilike(pattern)));
    }
    if let Some((ts, id)) = after {
        q = q.filter(
            users::created_at
                .lt(ts)
                .or(users::created_at.eq(ts).and(users::id.lt(id))),
        );
    }
    q.select(UserRow::as_select())
        .order((users::created_at.desc(), users::id.desc()))
        .limit(limit)
        .load(conn)
        .await
}

pub async fn find_by_google_id(
    conn: &mut AsyncPgConnection,
    google_id: &str,
) -> QueryResult<Option<UserRow>> {
    users::table
        .filter(users::google_id.eq(google_id))
        .select(UserRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Links a Google account to a local one and clears its password: the local
/// email was never verified, the provider's was, so whoever set the password
/// may not be the email's owner.
pub async fn link_google(conn: &mut AsyncPgConnection, id: i64, google_id: &str) -> QueryResult<UserRow> {
    diesel::update(users::table.find(id))
        .set((
            users::google_id.eq(google_id),
            users::password_hash.eq(None::<String>),
        ))
        .returning(UserRow::as_returning())
        .get_result(conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn like_metacharacters_are_escaped() {
        assert_eq!(like_pattern("a%b_c\\"), "%a\\%b\\_c\\\\%");
    }
}
