//! `/api/v{1,2}/orders`: placement (with Idempotency-Key), reads, cancel and
//! the admin status machine.

use std::collections::HashMap;

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::ask;
use crate::{
    actors::{
        inventory::{Line, PlaceOrder},
        order::{ChangeStatus, GetOrder, ListOrders, SubmitOrder, Submitted, ORDERS_CURSOR_SCOPE},
    },
    auth::AuthUser,
    domain::{OrderStatus, Quantity, Role},
    error::{AppError, FieldError},
    http::AppState,
    http::{
        envelope,
        extractors::{Admin, JsonBody},
        validate::{checked, integer, BoundedList, Fields},
    },
    models::{idempotency::Stored, order::OrderFilter},
    pagination::{ApiVersion, PageParams},
};

pub fn configure(cfg: &mut web::ServiceConfig, prefix: &str) {
    resource!(cfg, prefix, "/orders", post => place, get => list);
    resource!(cfg, prefix, "/orders/{id}", get => get);
    resource!(cfg, prefix, "/orders/{id}/cancel", post => cancel);
    resource!(cfg, prefix, "/orders/{id}/status", patch => change_status);
}

pub const MAX_LINES: usize = 100;

const ORDER_CREATED: &str = "Order created successfully";

/// One requested line (documentation of `items`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct OrderLine {
    #[schema(minimum = 1)]
    product_id: i64,
    /// 1..1000
    #[schema(minimum = 1, maximum = 1000)]
    quantity: i32,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct PlaceBody {
    /// 1..100 lines; lines of one product are summed.
    #[schema(value_type = Vec<OrderLine>, required = true, min_items = 1, max_items = 100)]
    items: Option<BoundedList<MAX_LINES>>,
}

/// Parses `items`: 1..100 lines of `{product_id, quantity}`; every bad field
/// is named (`items[3].quantity`). Lines of one product are summed; the sum
/// must still be a valid quantity.
pub(super) fn parse_lines(items: Option<BoundedList<MAX_LINES>>) -> Result<Vec<Line>, AppError> {
    let items = match items {
        None => return Err(AppError::invalid_field("items", "is required")),
        Some(BoundedList::NotList) => return Err(AppError::invalid_field("items", "must be an array")),
        Some(BoundedList::TooLong) => Vec::new(),
        Some(BoundedList::Items(items)) => items,
    };
    if items.is_empty() || items.len() > MAX_LINES {
        return Err(AppError::invalid_field(
            "items",
            "must contain between 1 and 100 lines",
        ));
    }
    let mut f = Fields::new();
    let mut lines: Vec<Line> = Vec::new();
    let mut by_product: HashMap<i64, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        if !item.is_object() {
            f.push(&format!("items[{i}]"), "must be an object");
            continue;
        }
        let product_id = f.required_value(&format!("items[{i}].product_id"), item.get("product_id"), |v| {
            integer(v).and_then(|n| {
                if n > 0 {
                    Ok(n)
                } else {
                    Err("must be a positive integer")
                }
            })
        });
        let quantity = f.required_value(&format!("items[{i}].quantity"), item.get("quantity"), |v| {
            integer(v).and_then(Quantity::new)
        });
        if let (Some(product_id), Some(quantity)) = (product_id, quantity) {
            match by_product.get(&product_id) {
                Some(&at) => {
                    let line = &mut lines[at];
                    match Quantity::new(i64::from(line.quantity) + i64::from(quantity.get())) {
                        Ok(q) => line.quantity = q.get(),
                        Err(_) => f.push(
                            &format!("items[{i}].quantity"),
                            "lines for one product must add up to at most 1000",
                        ),
                    }
                }
                None => {
                    by_product.insert(product_id, lines.len());
                    lines.push(Line {
                        product_id,
                        quantity: quantity.get(),
                        index: i,
                    });
                }
            }
        }
    }
    f.finish()?;
    Ok(lines)
}

/// `Idempotency-Key`: 1..255 visible ASCII characters.
pub(super) fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, AppError> {
    let Some(v) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let invalid = || {
        AppError::Validation(vec![FieldError::new(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        )])
    };
    let s = v.to_str().map_err(|_| invalid())?;
    if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(invalid());
    }
    Ok(Some(s.to_owned()))
}

/// Hash of what the request asks for (its lines as sent, and `extra`), to
/// tell a retry from a different request under the same key.
pub(super) fn request_hash(lines: &[Line], extra: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    for l in lines {
        h.update(l.product_id.to_le_bytes());
        h.update(l.quantity.to_le_bytes());
        h.update((l.index as u64).to_le_bytes());
    }
    h.update(extra);
    h.finalize().to_vec()
}

/// The first response to an Idempotency-Key again, byte for byte, marked
/// `Idempotent-Replayed: true`.
pub(super) fn replayed(stored: Stored, message: &str) -> Result<HttpResponse, AppError> {
    let status = StatusCode::from_u16(stored.status).map_err(AppError::internal)?;
    let data = RawValue::from_string(stored.data).map_err(AppError::internal)?;
    let mut res = envelope::respond_at(status, message, data, stored.at);
    res.headers_mut().insert(
        actix_web::http::header::HeaderName::from_static("idempotent-replayed"),
        actix_web::http::header::HeaderValue::from_static("true"),
    );
    Ok(res)
}

#[utoipa::path(
    post,
    path = "/api/v1/orders",
    tag = "orders",
    summary = "Place an order",
    params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[\x21-\x7e]{1,255}$", description = "1..255 visible ASCII characters; replays the first response for 24 h")),
    request_body = PlaceBody,
    responses((status = 201, description = "Place an order", body = crate::http::openapi::ApiResponse<crate::models::order::OrderView>), (status = 409, description = "Insufficient stock (errors name each short line), or the same Idempotency-Key is still in flight", body = crate::http::openapi::ErrorResponse), (status = 422, description = "Unknown or inactive product, or Idempotency-Key reused with a different body", body = crate::http::openapi::ErrorResponse)),
    security(("bearer_auth" = []))
)]
pub async fn place(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: AuthUser,
    body: JsonBody<PlaceBody>,
) -> Result<HttpResponse, AppError> {
    let key = idempotency_key(&req)?;
    let lines = parse_lines(body.0.items)?;
    let submitted = match key {
        // The hot path: nothing to claim, straight to the InventoryActor.
        None => Submitted::Created(
            state
                .inventory
                .send(PlaceOrder {
                    user_id: caller.id,
                    lines,
                    idempotency_key: None,
                })
                .await??,
        ),
        Some(key) => {
            let idempotency = Some((key, request_hash(&lines, &[])));
            state
                .orders
                .send(SubmitOrder {
                    caller,
                    lines,
                    idempotency,
                })
                .await??
        }
    };
    // The 201 is stamped with the order's creation time, which the
    // Idempotency-Key row keeps: a replay is the same bytes.
    match submitted {
        Submitted::Created(order) => {
            let at = order.created_at;
            Ok(envelope::respond_at(
                StatusCode::CREATED,
                ORDER_CREATED,
                order,
                at,
            ))
        }
        Submitted::Replayed(stored) => replayed(stored, ORDER_CREATED),
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    user_id: Option<String>,
    status: Option<String>,
    #[serde(flatten)]
    page: PageParams,
}

#[utoipa::path(
    get,
    path = "/api/v1/orders",
    tag = "orders",
    summary = "List orders (own; admins all)",
    params(("user_id" = Option<i64>, Query, description = "Admins only"), ("status" = Option<String>, Query, pattern = "^(pending|paid|shipped|delivered|cancelled)$", description = "pending, paid, shipped, delivered or cancelled"), ("page" = Option<i64>, Query, minimum = 1, maximum = 1000000, description = "v1: page number, from 1"), ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1..100, default 10"), ("cursor" = Option<String>, Query, description = "v2: next_cursor of the previous page (opaque; anything else is 400)")),
    responses((status = 200, description = "List orders (own; admins all)", body = crate::http::openapi::ApiResponse<crate::http::openapi::ListPage<crate::models::order::OrderView>>)),
    security(("bearer_auth" = []))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: AuthUser,
    version: ApiVersion,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    let q = query.into_inner();
    let mut f = Fields::new();
    let user_id = f.optional("user_id", q.user_id.as_deref(), |s| {
        s.trim().parse::<i64>().map_err(|_| "must be an integer")
    });
    let status = f.optional("status", q.status.as_deref(), str::parse::<OrderStatus>);
    f.finish()?;
    let page = state
        .cursors
        .page_request(version, &q.page, ORDERS_CURSOR_SCOPE)?;
    // Users only ever see their own orders; admins may filter by user.
    let user_id = if caller.role >= Role::Admin {
        user_id
    } else {
        Some(caller.id)
    };
    ask(
        &state.orders,
        ListOrders {
            filter: OrderFilter { user_id, status },
            page,
        },
        StatusCode::OK,
        "Orders retrieved successfully",
    )
    .await
}

#[utoipa::path(
    get,
    path = "/api/v1/orders/{id}",
    tag = "orders",
    summary = "An order (owner or admin)",
    params(("id" = i64, Path, description = "Resource id")),
    responses((status = 200, description = "An order (owner or admin)", body = crate::http::openapi::ApiResponse<crate::models::order::OrderView>)),
    security(("bearer_auth" = []))
)]
pub async fn get(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    ask(
        &state.orders,
        GetOrder { caller, id: *id },
        StatusCode::OK,
        "Order retrieved successfully",
    )
    .await
}

#[utoipa::path(
    post,
    path = "/api/v1/orders/{id}/cancel",
    tag = "orders",
    summary = "Cancel and restock (owner while pending, admin while pending or paid)",
    params(("id" = i64, Path, description = "Resource id")),
    responses((status = 200, description = "Cancel and restock (owner while pending, admin while pending or paid)", body = crate::http::openapi::ApiResponse<crate::models::order::OrderView>), (status = 409, description = "Not cancellable in its status", body = crate::http::openapi::ErrorResponse)),
    security(("bearer_auth" = []))
)]
pub async fn cancel(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    ask(
        &state.orders,
        ChangeStatus {
            caller,
            id: *id,
            status: OrderStatus::Cancelled,
        },
        StatusCode::OK,
        "Order cancelled successfully",
    )
    .await
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct StatusBody {
    #[schema(value_type = String, required = true, example = "paid", pattern = "^(pending|paid|shipped|delivered|cancelled)$")]
    status: Option<String>,
}

#[utoipa::path(
    patch,
    path = "/api/v1/orders/{id}/status",
    tag = "orders",
    summary = "Move along the status machine (admin)",
    params(("id" = i64, Path, description = "Resource id")),
    request_body = StatusBody,
    responses((status = 200, description = "Move along the status machine (admin)", body = crate::http::openapi::ApiResponse<crate::models::order::OrderView>), (status = 403, description = "The caller's role is insufficient", body = crate::http::openapi::ErrorResponse), (status = 409, description = "Invalid transition", body = crate::http::openapi::ErrorResponse)),
    security(("bearer_auth" = []))
)]
pub async fn change_status(
    state: web::Data<AppState>,
    Admin(caller): Admin,
    id: web::Path<i64>,
    body: JsonBody<StatusBody>,
) -> Result<HttpResponse, AppError> {
    let mut f = Fields::new();
    let status = f.required("status", body.0.status.as_deref(), str::parse::<OrderStatus>);
    f.finish()?;
    ask(
        &state.orders,
        ChangeStatus {
            caller,
            id: *id,
            status: checked(status)?,
        },
        StatusCode::OK,
        "Order status updated successfully",
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// `items` as a body carries it.
    fn lines_of(items: &Value) -> Result<Vec<Line>, AppError> {
        parse_lines(Some(serde_json::from_value(items.clone()).expect("items")))
    }

    fn fields(e: AppError) -> Vec<String> {
        match e {
            AppError::Validation(errs) => errs.into_iter().filter_map(|e| e.field).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lines_are_validated_and_summed() {
        let lines = lines_of(&json!([
            {"product_id": 1, "quantity": 2},
            {"product_id": 2, "quantity": 1},
            {"product_id": 1, "quantity": 3}
        ]))
        .expect("valid");
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (lines[0].product_id, lines[0].quantity, lines[0].index),
            (1, 5, 0)
        );

        let e = lines_of(&json!([{"product_id": "x", "quantity": 0}, {"quantity": 1001}, 7]))
            .expect_err("invalid");
        assert_eq!(
            fields(e),
            [
                "items[0].product_id",
                "items[0].quantity",
                "items[1].product_id",
                "items[1].quantity",
                "items[2]"
            ]
        );
        assert_eq!(fields(lines_of(&json!([])).expect_err("empty")), ["items"]);
        let many: Vec<Value> = (1..=101)
            .map(|i| json!({"product_id": i, "quantity": 1}))
            .collect();
        assert_eq!(
            fields(lines_of(&Value::Array(many)).expect_err("too many")),
            ["items"]
        );
        let e = lines_of(&json!([{"product_id": 1, "quantity": 600}, {"product_id": 1, "quantity": 600}]))
            .expect_err("sum too big");
        assert_eq!(fields(e), ["items[1].quantity"]);
        assert_eq!(fields(parse_lines(None).expect_err("missing")), ["items"]);
        let huge: Value =
            serde_json::from_str(r#"[{"product_id": 99999999999999999999, "quantity": 1}]"#).expect("json");
        let e = lines_of(&huge).expect_err("overflow");
        assert_eq!(fields(e), ["items[0].product_id"]);
        assert_eq!(
            fields(lines_of(&json!("lines")).expect_err("not a list")),
            ["items"]
        );
    }
}
