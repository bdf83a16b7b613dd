//! CatalogActor: categories and product details (everything but stock).
//!
//! Handles: `CreateCategory`, `UpdateCategory`, `DeleteCategory`,
//! `CreateProduct`, `UpdateProduct`, `DeleteProduct`.
//!
//! Reads do not go through a mailbox: `CatalogReader` runs them on the
//! handler's own thread with the catalog pool.

use std::sync::Arc;

use actix::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use crate::{
    actors::guarded,
    cache::{Cache, Family},
    db::DbPool,
    error::{AppError, FieldError},
    models::{
        category::{self, Category, CategoryChanges, CategoryCursor, NewCategory},
        product::{
            self, NewProduct, Product, ProductChanges, ProductCursor, ProductFilter, ProductSort,
            SearchTotals,
        },
    },
    pagination::{CursorCodec, Fetch, Page, PageRequest},
};

pub struct CatalogActor {
    pool: DbPool,
    cache: Cache,
}

impl CatalogActor {
    pub fn new(pool: DbPool, cache: Cache) -> Self {
        Self { pool, cache }
    }
}

fn category_families(id: i64) -> [Family; 2] {
    [Family::Category(id), Family::Categories]
}

fn product_families(id: i64) -> [Family; 2] {
    [Family::Product(id), Family::Products]
}

impl Actor for CatalogActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
    }
}

impl Supervised for CatalogActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!(actor = "CatalogActor", "restarting after a failure");
    }
}

type Reply<T> = ResponseFuture<Result<T, AppError>>;

fn category_not_found() -> AppError {
    AppError::NotFound("Category not found".into())
}

fn product_not_found() -> AppError {
    AppError::NotFound("Product not found".into())
}

/// Maps constraint violations of catalog writes to client errors.
fn catalog_error(e: DieselError) -> AppError {
    match &e {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
            if info.constraint_name() == Some("categories_name_key") =>
        {
            AppError::Conflict {
                message: "Category name already exists".into(),
                errors: vec![FieldError::new("name", "is already taken")],
            }
        }
        // Writing a product with a category that does not exist.
        DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => {
            AppError::invalid_field("category_id", "does not exist")
        }
        _ => e.into(),
    }
}

#[derive(Message)]
#[rtype(result = "Result<Category, AppError>")]
pub struct CreateCategory {
    pub name: String,
    pub description: Option<String>,
}

#[derive(Message)]
#[rtype(result = "Result<Category, AppError>")]
pub struct UpdateCategory {
    pub id: i64,
    pub changes: CategoryChanges,
}

#[derive(Message)]
#[rtype(result = "Result<(), AppError>")]
pub struct DeleteCategory {
    pub id: i64,
}

#[derive(Message)]
#[rtype(result = "Result<Product, AppError>")]
pub struct CreateProduct {
    pub product: NewProduct,
}

#[derive(Message)]
#[rtype(result = "Result<Product, AppError>")]
pub struct UpdateProduct {
    pub id: i64,
    pub changes: ProductChanges,
}

/// Soft delete: the product becomes inactive; orders keep referring to it.
#[derive(Message)]
#[rtype(result = "Result<Product, AppError>")]
pub struct DeleteProduct {
    pub id: i64,
}

impl Handler<CreateCategory> for CatalogActor {
    type Result = Reply<Category>;

    fn handle(&mut self, msg: CreateCategory, _: &mut Context<Self>) -> Self::Result {
        let (pool, cache) = (self.pool.clone(), self.cache.clone());
        guarded("CatalogActor", async move {
            let mut conn = pool.get().await?;
            let c = category::insert(
                &mut conn,
                &NewCategory {
                    name: msg.name,
                    description: msg.description,
                },
            )
            .await
            .map_err(catalog_error)?;
            cache.invalidate(&category_families(c.id)).await;
            Ok(c)
        })
    }
}

impl Handler<UpdateCategory> for CatalogActor {
    type Result = Reply<Category>;

    fn handle(&mut self, msg: UpdateCategory, _: &mut Context<Self>) -> Self::Result {
        let (pool, cache) = (self.pool.clone(), self.cache.clone());
        guarded("CatalogActor", async move {
            let mut conn = pool.get().await?;
            let c = category::update(&mut conn, msg.id, &msg.changes)
                .await
                .map_err(catalog_error)?
                .ok_or_else(category_not_found)?;
            cache.invalidate(&category_families(c.id)).await;
            Ok(c)
        })
    }
}

impl Handler<DeleteCategory> for CatalogActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: DeleteCategory, _: &mut Context<Self>) -> Self::Result {
        let (pool, cache) = (self.pool.clone(), self.cache.clone());
        guarded("CatalogActor", async move {
            let mut conn = pool.get().await?;
            match category::delete(&mut conn, msg.id).await {
                Ok(0) => Err(category_not_found()),
                Ok(_) => {
                    cache.invalidate(&category_families(msg.id)).await;
                    Ok(())
                }
                // Products (active or not) still refer to it.
                Err(DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _)) => {
                    Err(AppError::conflict("Category is still used by products"))
                }
                Err(e) => Err(e.into()),
            }
        })
    }
}

impl Handler<CreateProduct> for CatalogActor {
    type Result = Reply<Product>;

    fn handle(&mut self, msg: CreateProduct, _: &mut Context<Self>) -> Self::Result {
        let (pool, cache) = (self.pool.clone(), self.cache.clone());
        guarded("CatalogActor", async move {
            let mut conn = pool.get().await?;
            let p = product::insert(&mut conn, &msg.product)
                .await
                .map_err(catalog_error)?;
            // Also the id: a 404 for it may have been cached before it existed.
            cache.invalidate(&product_families(p.id)).await;
            Ok(p)
        })
    }
}

impl Handler<UpdateProduct> for CatalogActor {
    type Result = Reply<Product>;

    fn handle(&mut self, msg: UpdateProduct, _: &mut Context<Self>) -> Self::Result {
        let (pool, cache) = (self.pool.clone(), self.cache.clone());
        guarded("CatalogActor", async move {
            let mut conn = pool.get().await?;
            let p = product::update(&mut conn, msg.id, &msg.changes)
                .await
                .map_err(catalog_error)?
                .ok_or_else(product_not_found)?;
            cache.invalidate(&product_families(p.id)).await;
            Ok(p)
        })
    }
}

impl Handler<DeleteProduct> for CatalogActor {
    type Result = Reply<Product>;

    fn handle(&mut self, msg: DeleteProduct, _: &mut Context<Self>) -> Self::Result {
        let (pool, cache) = (self.pool.clone(), self.cache.clone());
        guarded("CatalogActor", async move {
            let mut conn = pool.get().await?;
            let changes = ProductChanges {
                is_active: Some(false),
                ..Default::default()
            };
            let p = product::update(&mut conn, msg.id, &changes)
                .await?
                .ok_or_else(product_not_found)?;
            cache.invalidate(&product_families(p.id)).await;
            Ok(p)
        })
    }
}

/// Session settings of the catalog-read connections. The catalog is read
/// from memory (shared buffers and the OS cache), where a random page costs
/// about what a sequential one does; with the default 4.0 the planner
/// counted 100k cheap `LIKE` comparisons as cheaper than the trigram index
/// for a common search term and scanned the whole table (40 ms instead of
/// 4 ms per count).
pub const READS_SESSION_SETUP: &str = "SET random_page_cost = 1.1";

/// Catalog reads, run by the handler itself (no mailbox hop), cache-aside:
/// each returns the `data` JSON, from the cache or freshly loaded.
#[derive(Clone)]
pub struct CatalogReader {
    pool: DbPool,
    cursors: CursorCodec,
    cache: Cache,
    totals: SearchTotals,
}

/// A short, stable key for a listing request.
fn listing_key(prefix: &str, request: impl std::fmt::Debug) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{}:{request:?}", env!("CARGO_PKG_VERSION")).as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}:{hex}")
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, AppError> {
    serde_json::to_string(v).map_err(AppError::internal)
}

/// Cached stand-in for "no such (visible) row".
const MISSING: &str = "null";

impl CatalogReader {
    pub fn new(pool: DbPool, cursors: CursorCodec, cache: Cache, totals: SearchTotals) -> Self {
        Self {
            pool,
            cursors,
            cache,
            totals,
        }
    }

    pub async fn product_json(&self, id: i64, include_inactive: bool) -> Result<Arc<str>, AppError> {
        let key = format!("p:{id}:{}", if include_inactive { "admin" } else { "public" });
        let json = self
            .cache
            .get_or_load(&[Family::Product(id)], &key, async {
                match self.product(id, include_inactive).await {
                    Ok(p) => to_json(&p),
                    Err(AppError::NotFound(_)) => Ok(MISSING.to_owned()),
                    Err(e) => Err(e),
                }
            })
            .await?;
        if &*json == MISSING {
            return Err(product_not_found());
        }
        Ok(json)
    }

    pub async fn products_json(
        &self,
        filter: &ProductFilter,
        sort: ProductSort,
        page: PageRequest<ProductCursor>,
    ) -> Result<Arc<str>, AppError> {
        let key = listing_key("pl", (filter, sort, &page));
        self.cache
            .get_or_load(&[Family::Products], &key, async {
                to_json(&self.products(filter, sort, page.clone()).await?)
            })
            .await
    }

    pub async fn category_json(&self, id: i64) -> Result<Arc<str>, AppError> {
        let key = format!("c:{id}");
        let json = self
            .cache
            .get_or_load(&[Family::Category(id)], &key, async {
                match self.category(id).await {
                    Ok(c) => to_json(&c),
                    Err(AppError::NotFound(_)) => Ok(MISSING.to_owned()),
                    Err(e) => Err(e),
                }
            })
            .await?;
        if &*json == MISSING {
            return Err(category_not_found());
        }
        Ok(json)
    }

    pub async fn categories_json(&self, page: PageRequest<CategoryCursor>) -> Result<Arc<str>, AppError> {
        let key = listing_key("cl", &page);
        self.cache
            .get_or_load(&[Family::Categories], &key, async {
                to_json(&self.categories(page.clone()).await?)
            })
            .await
    }

    pub async fn product(&self, id: i64, include_inactive: bool) -> Result<Product, AppError> {
        let mut conn = self.pool.get().await?;
        product::find(&mut conn, id)
            .await?
            .filter(|p| p.is_active || include_inactive)
            .ok_or_else(product_not_found)
    }

    pub async fn products(
        &self,
        filter: &ProductFilter,
        sort: ProductSort,
        page: PageRequest<ProductCursor>,
    ) -> Result<Page<Product>, AppError> {
        let mut conn = self.pool.get().await?;
        let totals = &self.totals;
        self.cursors
            .serve(
                sort.scope(),
                page,
                |p| sort.key_of(p),
                |fetch| async move {
                    Ok(match fetch {
                        Fetch::Offset { offset, limit } => {
                            product::list_offset(&mut conn, totals, filter, sort, offset, limit).await?
                        }
                        Fetch::Keyset { after, limit } => {
                            let rows = product::list_keyset(&mut conn, totals, filter, sort, after, limit)
                                .await
                                .map_err(|_| {
                                    AppError::invalid_field("cursor", "is invalid or was tampered with")
                                })??;
                            (rows, 0)
                        }
                    })
                },
            )
            .await
    }

    pub async fn category(&self, id: i64) -> Result<Category, AppError> {
        let mut conn = self.pool.get().await?;
        category::find(&mut conn, id)
            .await?
            .ok_or_else(category_not_found)
    }

    pub async fn categories(&self, page: PageRequest<CategoryCursor>) -> Result<Page<Category>, AppError> {
        let mut conn = self.pool.get().await?;
        self.cursors
            .serve(
                CATEGORIES_CURSOR_SCOPE,
                page,
                |c: &Category| (c.name.clone(), c.id),
                |fetch| async move {
                    Ok(match fetch {
                        Fetch::Offset { offset, limit } => {
                            category::list_offset(&mut conn, offset, limit).await?
                        }
                        Fetch::Keyset { after, limit } => {
                            (category::list_keyset(&mut conn, after, limit).await?, 0)
                        }
                    })
                },
            )
            .await
    }
}

pub const CATEGORIES_CURSOR_SCOPE: &str = "categories:name";
