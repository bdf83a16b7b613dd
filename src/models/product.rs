//! `products`: rows, forms and queries. Stock is only changed by the
//! InventoryActor (see `crate::actors::inventory`).

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::{
    pg::Pg,
    prelude::*,
    query_builder::{AstPass, Query, QueryFragment, QueryId},
    sql_types::{BigInt, Bool, Int8, Numeric, Text, Timestamptz},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;

use crate::{
    db::schema::{product_search, products},
    domain::money,
};

#[derive(Debug, Clone, Queryable, Selectable, Identifiable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = products, check_for_backend(diesel::pg::Pg))]
pub struct Product {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    #[serde(serialize_with = "money::serialize")]
    #[schema(value_type = String, example = "19.99")]
    pub price: BigDecimal,
    pub stock_quantity: i32,
    pub category_id: Option<i64>,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Insertable)]
#[diesel(table_name = products)]
pub struct NewProduct {
    pub name: String,
    pub description: Option<String>,
    pub price: BigDecimal,
    pub stock_quantity: i32,
    pub category_id: Option<i64>,
}

/// Everything but stock, which moves only through the InventoryActor.
#[derive(AsChangeset, Default)]
#[diesel(table_name = products)]
pub struct ProductChanges {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub price: Option<BigDecimal>,
    pub category_id: Option<Option<i64>>,
    pub is_active: Option<bool>,
}

impl ProductChanges {
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.description.is_none()
            && self.price.is_none()
            && self.category_id.is_none()
            && self.is_active.is_none()
    }
}

pub async fn insert(conn: &mut AsyncPgConnection, new: &NewProduct) -> QueryResult<Product> {
    diesel::insert_into(products::table)
        .values(new)
        .returning(Product::as_returning())
        .get_result(conn)
        .await
}

pub async fn find(conn: &mut AsyncPgConnection, id: i64) -> QueryResult<Option<Product>> {
    products::table
        .find(id)
        .select(Product::as_select())
        .first(conn)
        .await
        .optional()
}

pub async fn update(
    conn: &mut AsyncPgConnection,
    id: i64,
    changes: &ProductChanges,
) -> QueryResult<Option<Product>> {
    if changes.is_empty() {
        return find(conn, id).await;
    }
    diesel::update(products::table.find(id))
        .set(changes)
        .returning(Product::as_returning())
        .get_result(conn)
        .await
        .optional()
}

/// The column the trigram index covers (`lower(name || ' ' || description)`,
/// generated); search filters with `SEARCH_EXPR LIKE lower(pattern)` so the
/// planner can use `products_search_text_trgm_idx`.
pub const SEARCH_EXPR: &str = "products.search_text";

/// `sort` values of the products listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProductSort {
    #[default]
    NewestFirst,
    OldestFirst,
    PriceAsc,
    PriceDesc,
    Name,
}

impl ProductSort {
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        match s {
            "-created_at" => Ok(Self::NewestFirst),
            "created_at" => Ok(Self::OldestFirst),
            "price" => Ok(Self::PriceAsc),
            "-price" => Ok(Self::PriceDesc),
            "name" => Ok(Self::Name),
            _ => Err("must be one of -created_at, created_at, price, -price, name"),
        }
    }

    /// Names the listing in cursors, so a cursor only works with its sort.
    pub fn scope(self) -> &'static str {
        match self {
            Self::NewestFirst => "products:-created_at",
            Self::OldestFirst => "products:created_at",
            Self::PriceAsc => "products:price",
            Self::PriceDesc => "products:-price",
            Self::Name => "products:name",
        }
    }

    /// The sort key of a row, as carried in a cursor.
    pub fn key_of(self, p: &Product) -> ProductCursor {
        let value = match self {
            Self::NewestFirst | Self::OldestFirst => p.created_at.timestamp_micros().to_string(),
            Self::PriceAsc | Self::PriceDesc => p.price.to_plain_string(),
            Self::Name => p.name.clone(),
        };
        (value, p.id)
    }
}

/// Keyset position: the sort column's value (as text) and the id.
pub type ProductCursor = (String, i64);

#[derive(Debug, Clone, Default)]
pub struct ProductFilter {
    pub search: Option<String>,
    pub category_id: Option<i64>,
    pub min_price: Option<BigDecimal>,
    pub max_price: Option<BigDecimal>,
    pub in_stock: bool,
    /// Admins see inactive products too.
    pub include_inactive: bool,
}

type Boxed<'a> = products::BoxedQuery<'a, Pg>;

fn filtered(f: &ProductFilter) -> Boxed<'static> {
    let mut q = products::table.into_boxed();
    if !f.include_inactive {
        q = q.filter(products::is_active.eq(true));
    }
    if let Some(term) = &f.search {
        q = q.filter(
            diesel::dsl::sql::<Bool>(SEARCH_EXPR)
                .sql(" LIKE lower(")
                .bind::<Text, _>(super::user::like_pattern(term))
                .sql(")"),
        );
    }
    if let Some(c) = f.category_id {
        q = q.filter(products::category_id.eq(c));
    }
    if let Some(min) = &f.min_price {
        q = q.filter(products::price.ge(min.clone()));
    }
    if let Some(max) = &f.max_price {
        q = q.filter(products::price.le(max.clone()));
    }
    if f.in_stock {
        q = q.filter(products::stock_quantity.gt(0));
    }
    q
}

fn ordered(q: Boxed<'static>, sort: ProductSort) -> Boxed<'static> {
    match sort {
        ProductSort::NewestFirst => q.order((products::created_at.desc(), products::id.desc())),
        ProductSort::OldestFirst => q.order((products::created_at.asc(), products::id.asc())),
        ProductSort::PriceAsc => q.order((products::price.asc(), products::id.asc())),
        ProductSort::PriceDesc => q.order((products::price.desc(), products::id.desc())),
        ProductSort::Name => q.order((products::name.asc(), products::id.asc())),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid cursor")]
pub struct BadCursor;

/// Row-value comparison `(col, id) > / < (v, id)`: one index range scan, so a
/// deep page costs what the first does.
fn after(
    q: Boxed<'static>,
    sort: ProductSort,
    (value, id): ProductCursor,
) -> Result<Boxed<'static>, BadCursor> {
    let (col, op) = match sort {
        ProductSort::NewestFirst => ("products.created_at", "<"),
        ProductSort::OldestFirst => ("products.created_at", ">"),
        ProductSort::PriceAsc => ("products.price", ">"),
        ProductSort::PriceDesc => ("products.price", "<"),
        ProductSort::Name => ("products.name", ">"),
    };
    let head = format!("({col}, products.id) {op} (");
    let q = match sort {
        ProductSort::NewestFirst | ProductSort::OldestFirst => {
            let micros: i64 = value.parse().map_err(|_| BadCursor)?;
            let ts = DateTime::<Utc>::from_timestamp_micros(micros).ok_or(BadCursor)?;
            q.filter(
                diesel::dsl::sql::<Bool>(&head)
                    .bind::<Timestamptz, _>(ts)
                    .sql(", ")
                    .bind::<Int8, _>(id)
                    .sql(")"),
            )
        }
        ProductSort::PriceAsc | ProductSort::PriceDesc => {
            let price: BigDecimal = value.parse().map_err(|_| BadCursor)?;
            q.filter(
                diesel::dsl::sql::<Bool>(&head)
                    .bind::<Numeric, _>(price)
                    .sql(", ")
                    .bind::<Int8, _>(id)
                    .sql(")"),
            )
        }
        ProductSort::Name => q.filter(
            diesel::dsl::sql::<Bool>(&head)
                .bind::<Text, _>(value)
                .sql(", ")
                .bind::<Int8, _>(id)
                .sql(")"),
        ),
    };
    Ok(q)
}

diesel::define_sql_function!(fn lower(x: Text) -> Text);

/// The public search term whose `total` can be counted from
/// `product_search` (migration 000008): a search of active products with no
/// other filter, and a term with a run of three letters or digits, so that
/// the trigram index narrows it (without one, the one cached plan would read
/// the whole index; such terms are counted on `products`, planned for them).
fn narrow_count_term(f: &ProductFilter) -> Option<&str> {
    let term = f.search.as_deref()?;
    let plain = !f.include_inactive
        && f.category_id.is_none()
        && f.min_price.is_none()
        && f.max_price.is_none()
        && !f.in_stock;
    let mut run = 0;
    let trigram = term.chars().any(|c| {
        run = if c.is_alphanumeric() { run + 1 } else { 0 };
        run >= 3
    });
    (plain && trigram).then_some(term)
}

/// Exact `total`s of plain public searches (`narrow_count_term`), kept in
/// memory per term with the `product_search_version` they were counted at
/// (migration 000009: every transaction that changes `product_search`
/// bumps it). A search asks only for the version, in one statement with
/// the count, which Postgres runs only when the version moved; so a
/// repeated term costs a one-row read instead of rechecking its thousands
/// of matches, and a catalog change on any instance (or in plain SQL)
/// makes every instance count again. Bounded (least recently used go).
#[derive(Clone)]
pub struct SearchTotals(Option<moka::future::Cache<String, (i64, i64)>>);

impl SearchTotals {
    /// Remembers up to `capacity` terms; 0 counts every time.
    pub fn new(capacity: u64) -> Self {
        Self((capacity > 0).then(|| moka::future::Cache::new(capacity)))
    }

    /// How many products the filter matches (the v1 `total`).
    pub async fn count(&self, mut conn: &AsyncPgConnection, filter: &ProductFilter) -> QueryResult<i64> {
        let Some(term) = narrow_count_term(filter) else {
            return filtered(filter).count().get_result(&mut conn).await;
        };
        let pattern = super::user::like_pattern(term);
        let Some(memo) = &self.0 else {
            // A static query: prepared once per connection, its plan cached.
            return product_search::table
                .filter(product_search::search_text.like(lower(pattern)))
                .count()
                .get_result(&mut conn)
                .await;
        };
        let known = memo.get(term).await;
        let (version, counted) = CountSearch {
            known: known.map_or(0, |(version, _)| version),
            pattern,
        }
        .get_result::<(i64, Option<i64>)>(&mut conn)
        .await?;
        match (counted, known) {
            (Some(total), _) => {
                memo.insert(term.to_owned(), (version, total)).await;
                Ok(total)
            }
            (None, Some((_, total))) => Ok(total),
            // The version matched the 0 sent for "nothing known": versions
            // start at 1, so only a corrupted row gets here.
            (None, None) => Err(diesel::result::Error::NotFound),
        }
    }
}

/// `product_search_version`, and in the same statement (one snapshot) the
/// count of a search's matches unless the version is still `known`: an
/// uncorrelated subquery in a CASE branch not taken is never run.
#[derive(QueryId)]
struct CountSearch {
    known: i64,
    pattern: String,
}

impl QueryFragment<Pg> for CountSearch {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("SELECT v.version, CASE WHEN v.version = ");
        out.push_bind_param::<BigInt, _>(&self.known)?;
        out.push_sql(
            " THEN NULL ELSE (SELECT count(*) FROM product_search s WHERE s.search_text LIKE lower(",
        );
        out.push_bind_param::<Text, _>(&self.pattern)?;
        out.push_sql(")) END FROM product_search_version v");
        Ok(())
    }
}

impl Query for CountSearch {
    type SqlType = (BigInt, diesel::sql_types::Nullable<BigInt>);
}

/// A v1 page and its `total`, pipelined on the connection (one round trip).
pub async fn list_offset(
    conn: &mut AsyncPgConnection,
    totals: &SearchTotals,
    filter: &ProductFilter,
    sort: ProductSort,
    offset: i64,
    limit: i64,
) -> QueryResult<(Vec<Product>, i64)> {
    let conn: &AsyncPgConnection = conn;
    let mut rows_conn = conn;
    let rows = ordered(filtered(filter), sort)
        .select(Product::as_select())
        .offset(offset)
        .limit(limit)
        .load(&mut rows_conn);
    let (total, rows) = futures_util::future::try_join(totals.count(conn, filter), rows).await?;
    Ok((rows, total))
}

pub async fn list_keyset(
    conn: &mut AsyncPgConnection,
    filter: &ProductFilter,
    sort: ProductSort,
    cursor: Option<ProductCursor>,
    limit: i64,
) -> Result<QueryResult<Vec<Product>>, BadCursor> {
    let mut q = filtered(filter);
    if let Some(c) = cursor {
        q = after(q, sort, c)?;
    }
    Ok(ordered(q, sort)
        .select(Product::as_select())
        .limit(limit)
        .load(conn)
        .await)
}

#[cfg(test)]
mod tests {
    use super::{narrow_count_term, ProductFilter};

    fn search(term: &str) -> ProductFilter {
        ProductFilter {
            search: Some(term.to_owned()),
            ..Default::default()
        }
    }

    #[test]
    fn only_plain_public_searches_with_a_trigram_are_counted_narrow() {
        assert_eq!(narrow_count_term(&search("lamp")), Some("lamp"));
        assert_eq!(narrow_count_term(&search("a lamp")), Some("a lamp"));
        assert_eq!(narrow_count_term(&search("Äöü")), Some("Äöü"));
        assert_eq!(narrow_count_term(&search("ab")), None);
        assert_eq!(narrow_count_term(&search("a b c d")), None);
        assert_eq!(narrow_count_term(&search("%_%")), None);
        assert_eq!(narrow_count_term(&ProductFilter::default()), None);
        let admin = ProductFilter {
            include_inactive: true,
            ..search("lamp")
        };
        assert_eq!(narrow_count_term(&admin), None);
        let in_stock = ProductFilter {
            in_stock: true,
            ..search("lamp")
        };
        assert_eq!(narrow_count_term(&in_stock), None);
        let category = ProductFilter {
            category_id: Some(1),
            ..search("lamp")
        };
        assert_eq!(narrow_count_term(&category), None);
    }
}
