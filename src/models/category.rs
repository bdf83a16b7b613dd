//! `categories`: rows, forms and queries.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;

use crate::db::schema::categories;

#[derive(Debug, Clone, Queryable, Selectable, Identifiable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = categories, check_for_backend(diesel::pg::Pg))]
pub struct Category {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Insertable)]
#[diesel(table_name = categories)]
pub struct NewCategory {
    pub name: String,
    pub description: Option<String>,
}

#[derive(AsChangeset, Default)]
#[diesel(table_name = categories)]
pub struct CategoryChanges {
    pub name: Option<String>,
    /// `Some(None)` clears the description.
    pub description: Option<Option<String>>,
}

pub async fn insert(conn: &mut AsyncPgConnection, new: &NewCategory) -> QueryResult<Category> {
    diesel::insert_into(categories::table)
        .values(new)
        .returning(Category::as_returning())
        .get_result(conn)
        .await
}

pub async fn find(conn: &mut AsyncPgConnection, id: i64) -> QueryResult<Option<Category>> {
    categories::table
        .find(id)
        .select(Category::as_select())
        .first(conn)
        .await
        .optional()
}

pub async fn update(
    conn: &mut AsyncPgConnection,
    id: i64,
    changes: &CategoryChanges,
) -> QueryResult<Option<Category>> {
    if changes.name.is_none() && changes.description.is_none() {
        return find(conn, id).await;
    }
    diesel::update(categories::table.find(id))
        .set(changes)
        .returning(Category::as_returning())
        .get_result(conn)
        .await
        .optional()
}

pub async fn delete(conn: &mut AsyncPgConnection, id: i64) -> QueryResult<usize> {
    diesel::delete(categories::table.find(id)).execute(conn).await
}

/// Keyset position: (name, id), in name order.
pub type CategoryCursor = (String, i64);

/// Categories in name order (offset page + total).
pub async fn list_offset(
    conn: &mut AsyncPgConnection,
    offset: i64,
    limit: i64,
) -> QueryResult<(Vec<Category>, i64)> {
    let total = categories::table.count().get_result(conn).await?;
    let rows = categories::table
        .select(Category::as_select())
        .order((categories::name.asc(), categories::id.asc()))
        .offset(offset)
        .limit(limit)
        .load(conn)
        .await?;
    Ok((rows, total))
}

pub async fn list_keyset(
    conn: &mut AsyncPgConnection,
    after: Option<CategoryCursor>,
    limit: i64,
) -> QueryResult<Vec<Category>> {
    let mut q = categories::table.into_boxed();
    if let Some((name, id)) = after {
        q = q.filter(
            diesel::dsl::sql::<diesel::sql_types::Bool>("(categories.name, categories.id) > (")
                .bind::<diesel::sql_types::Text, _>(name)
                .sql(", ")
                .bind::<diesel::sql_types::Int8, _>(id)
                .sql(")"),
        );
    }
    q.select(Category::as_select())
        .order((categories::name.asc(), categories::id.asc()))
        .limit(limit)
        .load(conn)
        .await
}
