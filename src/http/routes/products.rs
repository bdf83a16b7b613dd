//! `/api/v{1,2}/products`: public reads, admin writes, stock movements.

use actix_web::{http::StatusCode, web, HttpResponse};
use serde::Deserialize;
use serde_json::Value;

use super::ask;
use crate::{
    actors::{
        catalog::{CreateProduct, DeleteProduct, UpdateProduct},
        inventory::AdjustStock,
    },
    domain::{money::Money, quantity::parse_stock, text::bounded, StockDelta},
    error::AppError,
    http::AppState,
    http::{
        envelope,
        extractors::{auth::OptionalAuth, Admin, JsonBody},
        validate::{checked, double_option, integer, Fields},
    },
    models::product::{NewProduct, ProductChanges, ProductFilter, ProductSort},
    pagination::{ApiVersion, PageParams},
};

pub fn configure(cfg: &mut web::ServiceConfig, prefix: &str) {
    resource!(cfg, prefix, "/products", get => list, post => create);
    resource!(cfg, prefix, "/products/{id}", get => get, put => update, delete => delete);
    resource!(cfg, prefix, "/products/{id}/stock", post => adjust_stock);
}

fn parse_name(s: &str) -> Result<String, String> {
    bounded(s, 1, 255, false)
}

fn parse_description(s: &str) -> Result<String, String> {
    bounded(s, 0, 5000, true)
}

fn parse_id(v: &Value) -> Result<i64, &'static str> {
    integer(v).and_then(|n| {
        if n > 0 {
            Ok(n)
        } else {
            Err("must be a positive integer")
        }
    })
}

#[derive(Deserialize)]
pub struct ListQuery {
    search: Option<String>,
    category_id: Option<String>,
    min_price: Option<String>,
    max_price: Option<String>,
    in_stock: Option<String>,
    sort: Option<String>,
    #[serde(flatten)]
    page: PageParams,
}

#[utoipa::path(
    get,
    path = "/api/v1/products",
    tag = "products",
    summary = "List products",
    params(("search" = Option<String>, Query, max_length = 100, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$", description = "Case-insensitive substring of name or description; at most 100 characters, no control characters"), ("category_id" = Option<i64>, Query), ("min_price" = Option<String>, Query, pattern = r"^([1-9][0-9]{0,7}(\.[0-9]{1,2})?|0\.(0[1-9]|[1-9][0-9]?))$", description = "Decimal > 0, at most two decimal places"), ("max_price" = Option<String>, Query, pattern = r"^([1-9][0-9]{0,7}(\.[0-9]{1,2})?|0\.(0[1-9]|[1-9][0-9]?))$", description = "Decimal > 0, at most two decimal places"), ("in_stock" = Option<bool>, Query), ("sort" = Option<String>, Query, pattern = "^(-created_at|created_at|price|-price|name)$", description = "-created_at (default), created_at, price, -price, name"), ("page" = Option<i64>, Query, minimum = 1, maximum = 1000000, description = "v1: page number, from 1"), ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1..100, default 10"), ("cursor" = Option<String>, Query, description = "v2: next_cursor of the previous page (opaque; anything else is 400)")),
    responses((status = 200, description = "List products", body = crate::http::openapi::ApiResponse<crate::http::openapi::ListPage<crate::models::product::Product>>)),
    security((), ("bearer_auth" = []))
)]
pub async fn list(
    state: web::Data<AppState>,
    auth: OptionalAuth,
    version: ApiVersion,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    let q = query.into_inner();
    let mut f = Fields::new();
    let search = f.optional(
        "search",
        q.search.as_deref().map(str::trim).filter(|s| !s.is_empty()),
        |s| bounded(s, 1, 100, false),
    );
    let category_id = f.optional("category_id", q.category_id.as_deref(), |s| {
        s.trim().parse::<i64>().map_err(|_| "must be an integer")
    });
    let min_price = f.optional("min_price", q.min_price.as_deref(), Money::parse);
    let max_price = f.optional("max_price", q.max_price.as_deref(), Money::parse);
    let in_stock = f
        .optional("in_stock", q.in_stock.as_deref(), |s| match s {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err("must be true or false"),
        })
        .unwrap_or(false);
    let sort = f
        .optional("sort", q.sort.as_deref(), ProductSort::parse)
        .unwrap_or_default();
    if let (Some(min), Some(max)) = (&min_price, &max_price) {
        if min > max {
            f.push("min_price", "must not be greater than max_price");
        }
    }
    let page = match state.cursors.page_request(version, &q.page, sort.scope()) {
        Ok(p) => Some(p),
        Err(AppError::Validation(errors)) => {
            for e in errors {
                f.push(e.field.as_deref().unwrap_or("cursor"), e.message);
            }
            None
        }
        Err(other) => {
            f.finish()?;
            return Err(other);
        }
    };
    f.finish()?;
    let filter = ProductFilter {
        search,
        category_id,
        min_price: min_price.map(Money::into_decimal),
        max_price: max_price.map(Money::into_decimal),
        in_stock,
        include_inactive: auth.is_admin(),
    };
    let products = state.catalog.products_json(&filter, sort, checked(page)?).await?;
    Ok(envelope::ok_raw("Products retrieved successfully", &products))
}

#[utoipa::path(
    get,
    path = "/api/v1/products/{id}",
    tag = "products",
    summary = "A product (inactive ones only for admins)",
    params(("id" = i64, Path, description = "Resource id")),
    responses((status = 200, description = "A product (inactive ones only for admins)", body = crate::http::openapi::ApiResponse<crate::models::product::Product>)),
    security((), ("bearer_auth" = []))
)]
pub async fn get(
    state: web::Data<AppState>,
    auth: OptionalAuth,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let product = state.catalog.product_json(*id, auth.is_admin()).await?;
    Ok(envelope::ok_raw("Product retrieved successfully", &product))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = ProductCreateBody)]
pub struct CreateBody {
    /// 1..255 characters, no control characters.
    #[schema(value_type = String, required = true, example = "Desk lamp", min_length = 1, max_length = 255, pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$")]
    name: Option<String>,
    /// Up to 5000 characters.
    #[schema(max_length = 5000, pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$")]
    description: Option<String>,
    /// A string or a number, > 0, at most two decimals, at most 99999999.99.
    #[schema(value_type = String, required = true, example = "19.99", pattern = r"^([1-9][0-9]{0,7}(\.[0-9]{1,2})?|0\.(0[1-9]|[1-9][0-9]?))$")]
    price: Option<Value>,
    #[schema(value_type = Option<i32>, minimum = 0)]
    stock_quantity: Option<Value>,
    /// An existing category.
    #[schema(value_type = Option<i64>)]
    category_id: Option<Value>,
}

#[utoipa::path(
    post,
    path = "/api/v1/products",
    tag = "products",
    summary = "Create a product (admin)",
    request_body = CreateBody,
    responses((status = 201, description = "Create a product (admin)", body = crate::http::openapi::ApiResponse<crate::models::product::Product>), (status = 403, description = "The caller's role is insufficient", body = crate::http::openapi::ErrorResponse)),
    security(("bearer_auth" = []))
)]
pub async fn create(
    state: web::Data<AppState>,
    _admin: Admin,
    body: JsonBody<CreateBody>,
) -> Result<HttpResponse, AppError> {
    let b = body.0;
    let mut f = Fields::new();
    let name = f.required("name", b.name.as_deref(), parse_name);
    let description = f.optional("description", b.description.as_deref(), parse_description);
    let price = f.required_value("price", b.price.as_ref(), Money::from_json);
    let stock = f
        .optional_value("stock_quantity", b.stock_quantity.as_ref(), |v| {
            integer(v).and_then(parse_stock)
        })
        .unwrap_or(0);
    let category_id = f.optional_value("category_id", b.category_id.as_ref(), parse_id);
    f.finish()?;
    ask(
        &state.catalog_writer,
        CreateProduct {
            product: NewProduct {
                name: checked(name)?,
                description: description.filter(|d| !d.is_empty()),
                price: checked(price)?.into_decimal(),
                stock_quantity: stock,
                category_id,
            },
        },
        StatusCode::CREATED,
        "Product created successfully",
    )
    .await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = ProductUpdateBody)]
pub struct UpdateBody {
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 5000, pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$")]
    description: Option<Option<String>>,
    #[schema(value_type = Option<String>, example = "19.99", pattern = r"^([1-9][0-9]{0,7}(\.[0-9]{1,2})?|0\.(0[1-9]|[1-9][0-9]?))$")]
    price: Option<Value>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>)]
    category_id: Option<Option<Value>>,
    is_active: Option<bool>,
    /// Refused (400): stock moves only through POST /products/{id}/stock.
    #[schema(value_type = Option<i32>)]
    stock_quantity: Option<Value>,
}

#[utoipa::path(
    put,
    path = "/api/v1/products/{id}",
    tag = "products",
    summary = "Update a product (admin); stock_quantity here is a 400",
    params(("id" = i64, Path, description = "Resource id")),
    request_body = UpdateBody,
    responses((status = 200, description = "Update a product (admin); stock_quantity here is a 400", body = crate::http::openapi::ApiResponse<crate::models::product::Product>), (status = 403, description = "The caller's role is insufficient", body = crate::http::openapi::ErrorResponse)),
    security(("bearer_auth" = []))
)]
pub async fn update(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<i64>,
    body: JsonBody<UpdateBody>,
) -> Result<HttpResponse, AppError> {
    let b = body.0;
    let mut f = Fields::new();
    if b.stock_quantity.is_some() {
        f.push(
            "stock_quantity",
            "cannot be set here; use POST /api/v1/products/{id}/stock",
        );
    }
    let name = f.optional("name", b.name.as_deref(), parse_name);
    let description = match b.description {
        None => None,
        Some(None) => Some(None),
        Some(Some(d)) => f
            .optional("description", Some(&d), parse_description)
            .map(|d| Some(d).filter(|d| !d.is_empty())),
    };
    let price = f.optional_value("price", b.price.as_ref(), Money::from_json);
    let category_id = match &b.category_id {
        None => None,
        Some(None) => Some(None),
        Some(Some(v)) => f.optional_value("category_id", Some(v), parse_id).map(Some),
    };
    f.finish()?;
    let changes = ProductChanges {
        name,
        description,
        price: price.map(Money::into_decimal),
        category_id,
        is_active: b.is_active,
    };
    ask(
        &state.catalog_writer,
        UpdateProduct { id: *id, changes },
        StatusCode::OK,
        "Product updated successfully",
    )
    .await
}

#[utoipa::path(
    delete,
    path = "/api/v1/products/{id}",
    tag = "products",
    summary = "Soft-delete a product (admin)",
    params(("id" = i64, Path, description = "Resource id")),
    responses((status = 200, description = "Soft-delete a product (admin)", body = crate::http::openapi::EmptyResponse), (status = 403, description = "The caller's role is insufficient", body = crate::http::openapi::ErrorResponse)),
    security(("bearer_auth" = []))
)]
pub async fn delete(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    ask(
        &state.catalog_writer,
        DeleteProduct { id: *id },
        StatusCode::OK,
        "Product deleted successfully",
    )
    .await
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct StockBody {
    /// A non-zero integer.
    #[schema(value_type = i32, required = true, example = 10)]
    delta: Option<Value>,
}

#[utoipa::path(
    post,
    path = "/api/v1/products/{id}/stock",
    tag = "products",
    summary = "Move stock by delta (admin)",
    params(("id" = i64, Path, description = "Resource id")),
    request_body = StockBody,
    responses((status = 200, description = "Move stock by delta (admin)", body = crate::http::openapi::ApiResponse<crate::actors::inventory::StockLevel>), (status = 403, description = "The caller's role is insufficient", body = crate::http::openapi::ErrorResponse), (status = 409, description = "Stock would go below zero", body = crate::http::openapi::ErrorResponse)),
    security(("bearer_auth" = []))
)]
pub async fn adjust_stock(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<i64>,
    body: JsonBody<StockBody>,
) -> Result<HttpResponse, AppError> {
    let mut f = Fields::new();
    let delta = f.required_value("delta", body.0.delta.as_ref(), |v| {
        integer(v).and_then(StockDelta::new)
    });
    f.finish()?;
    ask(
        &state.inventory,
        AdjustStock {
            product_id: *id,
            delta: checked(delta)?.get(),
        },
        StatusCode::OK,
        "Stock updated successfully",
    )
    .await
}
