//! CatalogActor: categories and product details (everything but stock).
//!
//! Handles: `CreateCategory`, `UpdateCategory`, `DeleteCategory`,
//! `CreateProduct`, `UpdateProduct`, `DeleteProduct`.
//!
//! Reads do not go through a mailbox: `CatalogReader` runs them on the
//! handler's own thread with the catalog pool.

use actix::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use crate::{
    db::DbPool,
    error::{AppError, FieldError},
    models::{
        category::{self, Category, CategoryChanges, CategoryCursor, NewCategory},
        product::{self, NewProduct, Product, ProductChanges, ProductCursor, ProductFilter, ProductSort},
    },
    pagination::{CursorCodec, Page, PageRequest},
};

pub struct CatalogActor {
    pool: DbPool,
}

impl CatalogActor {
    pub fn new(pool: DbPool) -> Self {
        Self { pool }
    }
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
        let pool = self.pool.clone();
        Box::pin(async move {
            let mut conn = pool.get().await?;
            category::insert(
                &mut conn,
                &NewCategory {
                    name: msg.name,
                    description: msg.description,
                },
            )
            .await
            .map_err(catalog_error)
        })
    }
}

impl Handler<UpdateCategory> for CatalogActor {
    type Result = Reply<Category>;

    fn handle(&mut self, msg: UpdateCategory, _: &mut Context<Self>) -> Self::Result {
        let pool = self.pool.clone();
        Box::pin(async move {
            let mut conn = pool.get().await?;
            category::update(&mut conn, msg.id, &msg.changes)
                .await
                .map_err(catalog_error)?
                .ok_or_else(category_not_found)
        })
    }
}

impl Handler<DeleteCategory> for CatalogActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: DeleteCategory, _: &mut Context<Self>) -> Self::Result {
        let pool = self.pool.clone();
        Box::pin(async move {
            let mut conn = pool.get().await?;
            match category::delete(&mut conn, msg.id).await {
                Ok(0) => Err(category_not_found()),
                Ok(_) => Ok(()),
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
        let pool = self.pool.clone();
        Box::pin(async move {
            let mut conn = pool.get().await?;
            product::insert(&mut conn, &msg.product)
                .await
                .map_err(catalog_error)
        })
    }
}

impl Handler<UpdateProduct> for CatalogActor {
    type Result = Reply<Product>;

    fn handle(&mut self, msg: UpdateProduct, _: &mut Context<Self>) -> Self::Result {
        let pool = self.pool.clone();
        Box::pin(async move {
            let mut conn = pool.get().await?;
            product::update(&mut conn, msg.id, &msg.changes)
                .await
                .map_err(catalog_error)?
                .ok_or_else(product_not_found)
        })
    }
}

impl Handler<DeleteProduct> for CatalogActor {
    type Result = Reply<Product>;

    fn handle(&mut self, msg: DeleteProduct, _: &mut Context<Self>) -> Self::Result {
        let pool = self.pool.clone();
        Box::pin(async move {
            let mut conn = pool.get().await?;
            let changes = ProductChanges {
                is_active: Some(false),
                ..Default::default()
            };
            product::update(&mut conn, msg.id, &changes)
                .await?
                .ok_or_else(product_not_found)
        })
    }
}

/// Catalog reads, run by the handler itself (no mailbox hop).
#[derive(Clone)]
pub struct CatalogReader {
    pool: DbPool,
    cursors: CursorCodec,
}

impl CatalogReader {
    pub fn new(pool: DbPool, cursors: CursorCodec) -> Self {
        Self { pool, cursors }
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
        Ok(match page {
            PageRequest::Offset { page, limit } => {
                let (items, total) =
                    product::list_offset(&mut conn, filter, sort, (page - 1) * limit, limit).await?;
                Page::Offset {
                    items,
                    page,
                    limit,
                    total,
                }
            }
            PageRequest::Keyset { after, limit } => {
                let rows = product::list_keyset(&mut conn, filter, sort, after, limit + 1)
                    .await
                    .map_err(|_| AppError::invalid_field("cursor", "is invalid or was tampered with"))??;
                self.cursors
                    .keyset_page(sort.scope(), rows, limit, |p| sort.key_of(p))
            }
        })
    }

    pub async fn category(&self, id: i64) -> Result<Category, AppError> {
        let mut conn = self.pool.get().await?;
        category::find(&mut conn, id)
            .await?
            .ok_or_else(category_not_found)
    }

    pub async fn categories(&self, page: PageRequest<CategoryCursor>) -> Result<Page<Category>, AppError> {
        let mut conn = self.pool.get().await?;
        Ok(match page {
            PageRequest::Offset { page, limit } => {
                let (items, total) = category::list_offset(&mut conn, (page - 1) * limit, limit).await?;
                Page::Offset {
                    items,
                    page,
                    limit,
                    total,
                }
            }
            PageRequest::Keyset { after, limit } => {
                let rows = category::list_keyset(&mut conn, after, limit + 1).await?;
                self.cursors
                    .keyset_page(CATEGORIES_CURSOR_SCOPE, rows, limit, |c| (c.name.clone(), c.id))
            }
        })
    }
}

pub const CATEGORIES_CURSOR_SCOPE: &str = "categories:name";
