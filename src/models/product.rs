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
    /// Units held by active reservations (not in `stock_quantity`).
    pub reserved_quantity: i32,
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

/// A `created_at` cursor value: microseconds since the epoch.
fn micros_cursor(value: &str) -> Result<DateTime<Utc>, BadCursor> {
    let micros: i64 = value.parse().map_err(|_| BadCursor)?;
    DateTime::<Utc>::from_timestamp_micros(micros).ok_or(BadCursor)
}

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
            let ts = micros_cursor(&value)?;
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
pub struct SearchTotals(Option<moka::future::Cache<String, Counted>>);

/// A term's count at a version, and how many products were searchable then
/// (`pg_class.reltuples` of `product_search`, for choosing a page plan).
#[derive(Debug, Clone, Copy)]
pub struct Counted {
    version: i64,
    total: i64,
    searchable: i64,
}

impl SearchTotals {
    /// Remembers up to `capacity` terms; 0 counts every time.
    pub fn new(capacity: u64) -> Self {
        Self((capacity > 0).then(|| moka::future::Cache::new(capacity)))
    }

    /// What was counted for the filter's term, at whatever version: exact
    /// only if the version has not moved since (`count` checks).
    async fn remembered(&self, filter: &ProductFilter) -> Option<Counted> {
        let (memo, term) = (self.0.as_ref()?, narrow_count_term(filter)?);
        memo.get(term).await
    }

    /// How many products the filter matches (the v1 `total`); `known` is
    /// what `remembered` returned.
    async fn count(
        &self,
        mut conn: &AsyncPgConnection,
        filter: &ProductFilter,
        known: Option<Counted>,
    ) -> QueryResult<i64> {
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
        let (version, counted, searchable) = CountSearch {
            known: known.map_or(0, |k| k.version),
            pattern,
        }
        .get_result::<(i64, Option<i64>, Option<i64>)>(&mut conn)
        .await
        .optional()?
        .ok_or_else(broken_version)?;
        match (counted, known) {
            (Some(total), _) => {
                let counted = Counted {
                    version,
                    total,
                    searchable: searchable.unwrap_or(0),
                };
                memo.insert(term.to_owned(), counted).await;
                Ok(total)
            }
            (None, Some(k)) => Ok(k.total),
            // The version matched the 0 sent for "nothing known": versions
            // start at 1, so only a corrupted row gets here.
            (None, None) => Err(broken_version()),
        }
    }
}

/// `product_search_version` lost its row or its count (a 500, not a 404).
fn broken_version() -> diesel::result::Error {
    diesel::result::Error::QueryBuilderError(
        "product_search_version must hold one row with a version >= 1 (migration 000009)".into(),
    )
}

/// `product_search_version`, and in the same statement (one snapshot) the
/// count of a search's matches and the searchable rows (`reltuples`) unless
/// the version is still `known`: an uncorrelated subquery in a CASE branch
/// not taken is never run.
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
        out.push_sql(")) END, CASE WHEN v.version = ");
        out.push_bind_param::<BigInt, _>(&self.known)?;
        out.push_sql(
            " THEN NULL ELSE (SELECT greatest(reltuples, 0)::bigint FROM pg_class \
               WHERE oid = 'product_search'::regclass) END FROM product_search_version v",
        );
        Ok(())
    }
}

impl diesel::query_dsl::RunQueryDslSupport for CountSearch {}

impl Query for CountSearch {
    type SqlType = (
        BigInt,
        diesel::sql_types::Nullable<BigInt>,
        diesel::sql_types::Nullable<BigInt>,
    );
}

/// A newest-first page of a plain public search whose number of matches is
/// known (`SearchTotals`), with the plan that number calls for, fixed by
/// the query's shape: prepared once per connection, and the pattern, behind
/// an InitPlan, is never matched against `search_text`'s 1,000-row
/// statistics sample, which cost ~0.3 ms of planning per search (decompress
/// the sample, run LIKE over it) for a page that takes as long to read.
///
/// `Walk` (common terms): `created_at` order, the trigram index ruled out
/// (`search_text || ''`), reading rows until the page is full. `Bitmap`
/// (rare terms): every match through the trigram index, then sorted (the
/// ORDER BY expression rules the `created_at` index out); same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SearchPlan {
    Walk,
    Bitmap,
}

/// Walking visits about `(offset + limit) * searchable / total` rows, each
/// cheap (newer rows sit together); the bitmap reads every match on its own
/// page, about four times the cost per row (measured on 100k products).
fn search_plan(known: Counted, offset: i64, limit: i64) -> SearchPlan {
    let (wanted, searchable, total) = (
        (offset + limit) as f64,
        known.searchable as f64,
        known.total as f64,
    );
    // Without statistics (`reltuples` unknown) the walk's cost is unknown;
    // the bitmap's is bounded by the (exact) number of matches.
    if total > 0.0 && searchable > 0.0 && wanted * searchable <= 4.0 * total * total {
        SearchPlan::Walk
    } else {
        SearchPlan::Bitmap
    }
}

macro_rules! search_page {
    ($name:ident, $filter:literal, $order:literal) => {
        #[derive(QueryId)]
        struct $name(SearchPage);

        impl QueryFragment<Pg> for $name {
            fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
                let page = &self.0;
                out.push_sql(concat!(
                    "SELECT id, name, description, price, stock_quantity, reserved_quantity, category_id, is_active, \
                       created_at, updated_at FROM products WHERE is_active AND ",
                    $filter,
                    " LIKE (SELECT lower("
                ));
                out.push_bind_param::<Text, _>(&page.pattern)?;
                out.push_sql(concat!(")) AND (", $order, ", id) < ("));
                out.push_bind_param::<Timestamptz, _>(&page.after.0)?;
                out.push_sql(", ");
                out.push_bind_param::<BigInt, _>(&page.after.1)?;
                out.push_sql(concat!(") ORDER BY ", $order, " DESC, id DESC LIMIT "));
                out.push_bind_param::<BigInt, _>(&page.limit)?;
                out.push_sql(" OFFSET ");
                out.push_bind_param::<BigInt, _>(&page.offset)?;
                Ok(())
            }
        }

        impl diesel::query_dsl::RunQueryDslSupport for $name {}


        impl Query for $name {
            type SqlType = <ProductColumns as diesel::Expression>::SqlType;
        }
    };
}

/// A planned search page: newest first, the rows after `after`, skipping
/// `offset` of them.
struct SearchPage {
    pattern: String,
    /// Keyset position (v2), or `SearchPage::start()` (v1).
    after: (DateTime<Utc>, i64),
    limit: i64,
    offset: i64,
}

impl SearchPage {
    /// After everything: the first page (no product is created after 9999).
    fn start() -> (DateTime<Utc>, i64) {
        let end = DateTime::<Utc>::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::<Utc>::MAX_UTC);
        (end, i64::MAX)
    }

    async fn load(self, plan: SearchPlan, mut conn: &AsyncPgConnection) -> QueryResult<Vec<Product>> {
        match plan {
            SearchPlan::Walk => SearchPageWalk(self).load(&mut conn).await,
            SearchPlan::Bitmap => SearchPageBitmap(self).load(&mut conn).await,
        }
    }
}

type ProductColumns = (
    products::id,
    products::name,
    products::description,
    products::price,
    products::stock_quantity,
    products::reserved_quantity,
    products::category_id,
    products::is_active,
    products::created_at,
    products::updated_at,
);

search_page!(SearchPageWalk, "(search_text || '')", "created_at");
search_page!(SearchPageBitmap, "search_text", "(created_at + interval '0 s')");

/// The SQL of a planned search page (`walk` or the bitmap), with `$1`
/// pattern, `($2, $3)` the keyset position, `$4` limit and `$5` offset: for
/// tests that EXPLAIN it.
pub fn search_page_sql(walk: bool) -> String {
    let page = SearchPage {
        pattern: String::new(),
        after: SearchPage::start(),
        limit: 0,
        offset: 0,
    };
    let sql = match walk {
        true => diesel::debug_query::<Pg, _>(&SearchPageWalk(page)).to_string(),
        false => diesel::debug_query::<Pg, _>(&SearchPageBitmap(page)).to_string(),
    };
    sql.split(" -- binds").next().unwrap_or_default().to_owned()
}

/// The page planned from a remembered count, when there is one to plan
/// from: a plain public search, newest first.
fn planned_page(
    filter: &ProductFilter,
    sort: ProductSort,
    known: Option<Counted>,
    after: Option<(DateTime<Utc>, i64)>,
    limit: i64,
    offset: i64,
) -> Option<(SearchPlan, SearchPage)> {
    let (term, known) = (narrow_count_term(filter)?, known?);
    if sort != ProductSort::NewestFirst {
        return None;
    }
    let page = SearchPage {
        pattern: super::user::like_pattern(term),
        after: after.unwrap_or_else(SearchPage::start),
        limit,
        offset,
    };
    Some((search_plan(known, offset, limit), page))
}

/// A page of products and its `total`, pipelined on the connection (one
/// round trip): planned from the remembered count where there is one
/// (`SearchPage`), else by Postgres (`fallback`).
async fn page_and_total<F>(
    conn: &AsyncPgConnection,
    totals: &SearchTotals,
    filter: &ProductFilter,
    planned: impl FnOnce(Option<Counted>) -> Option<(SearchPlan, SearchPage)>,
    fallback: impl FnOnce() -> F,
) -> QueryResult<(Vec<Product>, i64)>
where
    F: std::future::Future<Output = QueryResult<Vec<Product>>>,
{
    let known = totals.remembered(filter).await;
    // Known to match nothing: if the version still says so, there is no
    // page to read (a rare term's trigram lookup alone costs ~2 ms).
    if known.is_some_and(|k| k.total == 0) {
        let total = totals.count(conn, filter, known).await?;
        let rows = match total {
            0 => Vec::new(),
            _ => fallback().await?,
        };
        return Ok((rows, total));
    }
    let rows = async {
        match planned(known) {
            Some((plan, page)) => page.load(plan, conn).await,
            None => fallback().await,
        }
    };
    let (total, rows) = futures_util::future::try_join(totals.count(conn, filter, known), rows).await?;
    Ok((rows, total))
}

/// A v1 page and its `total`.
pub async fn list_offset(
    conn: &mut AsyncPgConnection,
    totals: &SearchTotals,
    filter: &ProductFilter,
    sort: ProductSort,
    offset: i64,
    limit: i64,
) -> QueryResult<(Vec<Product>, i64)> {
    let conn: &AsyncPgConnection = conn;
    let fallback = || {
        let mut conn = conn;
        ordered(filtered(filter), sort)
            .select(Product::as_select())
            .offset(offset)
            .limit(limit)
            .load(&mut conn)
    };
    let planned = |known| planned_page(filter, sort, known, None, limit, offset);
    page_and_total(conn, totals, filter, planned, fallback).await
}

/// A v2 page (`limit` rows after `cursor`). A plain public search asks for
/// its count too (remembered, as for v1) to plan its pages from it; v2 does
/// not show it.
pub async fn list_keyset(
    conn: &mut AsyncPgConnection,
    totals: &SearchTotals,
    filter: &ProductFilter,
    sort: ProductSort,
    cursor: Option<ProductCursor>,
    limit: i64,
) -> Result<QueryResult<Vec<Product>>, BadCursor> {
    let mut q = filtered(filter);
    let mut position = None;
    if let Some(c) = cursor {
        if sort == ProductSort::NewestFirst {
            position = Some((micros_cursor(&c.0)?, c.1));
        }
        q = after(q, sort, c)?;
    }
    let conn: &AsyncPgConnection = conn;
    let fallback = move || {
        let mut conn = conn;
        ordered(q, sort)
            .select(Product::as_select())
            .limit(limit)
            .load(&mut conn)
    };
    if narrow_count_term(filter).is_none() || totals.0.is_none() || sort != ProductSort::NewestFirst {
        return Ok(fallback().await);
    }
    let planned = |known| planned_page(filter, sort, known, position, limit, 0);
    Ok(page_and_total(conn, totals, filter, planned, fallback)
        .await
        .map(|(rows, _)| rows))
}

#[cfg(test)]
mod tests {
    use super::{narrow_count_term, search_plan, Counted, ProductFilter, SearchPlan};

    fn search(term: &str) -> ProductFilter {
        ProductFilter {
            search: Some(term.to_owned()),
            ..Default::default()
        }
    }

    #[test]
    fn common_terms_walk_and_rare_ones_use_the_index() {
        let known = |total, searchable| Counted {
            version: 1,
            total,
            searchable,
        };
        // "lamp": 4,000 of 100,000; the first page visits ~500 rows.
        assert_eq!(search_plan(known(4_000, 100_000), 0, 20), SearchPlan::Walk);
        // 1,333 matches: ~1,500 rows walked against 1,333 pages read.
        assert_eq!(search_plan(known(1_333, 100_000), 0, 20), SearchPlan::Walk);
        // 300 matches: ~6,700 rows walked; the index reads 300.
        assert_eq!(search_plan(known(300, 100_000), 0, 20), SearchPlan::Bitmap);
        // Deep pages of a common term: walking would visit 50,000 rows.
        assert_eq!(search_plan(known(4_000, 100_000), 1_980, 20), SearchPlan::Bitmap);
        assert_eq!(search_plan(known(0, 100_000), 0, 20), SearchPlan::Bitmap);
        // Statistics not gathered yet (reltuples 0): the walk's cost is
        // unknown, the index reads the 5 matches.
        assert_eq!(search_plan(known(5, 0), 0, 20), SearchPlan::Bitmap);
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
