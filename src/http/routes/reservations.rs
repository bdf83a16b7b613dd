//! `/api/v{1,2}/reservations`: checkout holds. Creating (with
//! Idempotency-Key), confirming and releasing go to the InventoryActor;
//! reads go to the OrderActor.

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::{
    ask,
    orders::{idempotency_key, parse_lines, replayed, request_hash, MAX_LINES},
};
use crate::{
    actors::{
        inventory::{ConfirmReservation, ReleaseReservation},
        order::{GetReservation, ListReservations, SubmitReservation, Submitted, RESERVATIONS_CURSOR_SCOPE},
    },
    auth::AuthUser,
    config::ReservationSettings,
    domain::{ReservationStatus, Role},
    error::{AppError, FieldError},
    http::{
        envelope,
        extractors::JsonBody,
        validate::{integer, BoundedList, Fields},
        AppState,
    },
    models::reservation::ReservationFilter,
    pagination::{ApiVersion, PageParams},
};

pub fn configure(cfg: &mut web::ServiceConfig, prefix: &str) {
    resource!(cfg, prefix, "/reservations", post => create, get => list);
    resource!(cfg, prefix, "/reservations/{id}", get => get, delete => release);
    resource!(cfg, prefix, "/reservations/{id}/confirm", post => confirm);
}

const RESERVATION_CREATED: &str = "Reservation created successfully";

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ReserveBody {
    /// 1..100 lines; lines of one product are summed.
    #[schema(value_type = Vec<super::orders::OrderLine>, required = true, min_items = 1, max_items = 100)]
    items: Option<BoundedList<MAX_LINES>>,
    /// Seconds the hold lasts: `reservations.min_ttl_secs` (30) to
    /// `reservations.max_ttl_secs` (3600); default `reservations.ttl_secs` (600).
    #[schema(value_type = Option<i64>, minimum = 1, example = 600)]
    ttl_secs: Option<Value>,
}

/// `ttl_secs`: an integer within the configured range, or the default.
fn parse_ttl(raw: Option<&Value>, holds: &ReservationSettings) -> Result<i64, FieldError> {
    let Some(v) = raw.filter(|v| !v.is_null()) else {
        return Ok(holds.ttl_secs);
    };
    integer(v)
        .ok()
        .filter(|n| (holds.min_ttl_secs..=holds.max_ttl_secs).contains(n))
        .ok_or_else(|| {
            FieldError::new(
                "ttl_secs",
                format!(
                    "must be an integer between {} and {}",
                    holds.min_ttl_secs, holds.max_ttl_secs
                ),
            )
        })
}

/// A reservation id from the path; anything but a UUID names no
/// reservation (404).
fn hold_id(raw: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(raw).map_err(|_| AppError::NotFound("Reservation not found".into()))
}

#[utoipa::path(
    post,
    path = "/api/v1/reservations",
    tag = "reservations",
    summary = "Hold stock while the buyer pays",
    description = "The units leave `stock_quantity` at once (into `reserved_quantity`) and come back when the hold is released or expires. Line rules, 409/422 and `Idempotency-Key` are as for orders (a separate key space; `ttl_secs` is part of the body). A user holds at most `reservations.max_active_per_user` (5) active reservations; one more is a 409 naming that limit.",
    params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[\x21-\x7e]{1,255}$", description = "1..255 visible ASCII characters; replays the first response for 24 h")),
    request_body = ReserveBody,
    responses((status = 201, description = "The hold, `active`", body = crate::http::openapi::ApiResponse<crate::models::reservation::ReservationView>), (status = 409, description = "Insufficient stock (errors name each short line), too many active reservations (`max_active_per_user`), or the same Idempotency-Key is still in flight", body = crate::http::openapi::ErrorResponse), (status = 422, description = "Unknown or inactive product, or Idempotency-Key reused with a different body", body = crate::http::openapi::ErrorResponse)),
    security(("bearer_auth" = []))
)]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: AuthUser,
    body: JsonBody<ReserveBody>,
) -> Result<HttpResponse, AppError> {
    let key = idempotency_key(&req)?;
    let ReserveBody { items, ttl_secs } = body.0;
    let (lines, ttl) = match (parse_lines(items), parse_ttl(ttl_secs.as_ref(), &state.holds)) {
        (Ok(lines), Ok(ttl)) => (lines, ttl),
        (lines, ttl) => {
            let mut errors = match lines {
                Err(AppError::Validation(errors)) => errors,
                Err(e) => return Err(e),
                Ok(_) => Vec::new(),
            };
            errors.extend(ttl.err());
            return Err(AppError::Validation(errors));
        }
    };
    let submitted = state
        .orders
        .send(SubmitReservation {
            caller,
            idempotency: key.map(|k| (k, request_hash(&lines, &ttl.to_le_bytes()))),
            lines,
            ttl_secs: ttl,
        })
        .await??;
    match submitted {
        Submitted::Created(hold) => {
            let at = hold.created_at;
            Ok(envelope::respond_at(
                StatusCode::CREATED,
                RESERVATION_CREATED,
                hold,
                at,
            ))
        }
        Submitted::Replayed(stored) => replayed(stored, RESERVATION_CREATED),
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
    path = "/api/v1/reservations",
    tag = "reservations",
    summary = "List reservations (own; admins all)",
    params(("user_id" = Option<i64>, Query, description = "Admins only"), ("status" = Option<String>, Query, pattern = "^(active|confirmed|released|expired)$", description = "active, confirmed, released or expired"), ("page" = Option<i64>, Query, minimum = 1, maximum = 1000000, description = "v1: page number, from 1"), ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1..100, default 10"), ("cursor" = Option<String>, Query, description = "v2: next_cursor of the previous page (opaque; anything else is 400)")),
    responses((status = 200, description = "List reservations (own; admins all)", body = crate::http::openapi::ApiResponse<crate::http::openapi::ListPage<crate::models::reservation::ReservationView>>)),
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
    let status = f.optional("status", q.status.as_deref(), str::parse::<ReservationStatus>);
    f.finish()?;
    let page = state
        .cursors
        .page_request(version, &q.page, RESERVATIONS_CURSOR_SCOPE)?;
    // Users only ever see their own holds; admins may filter by user.
    let user_id = if caller.role >= Role::Admin {
        user_id
    } else {
        Some(caller.id)
    };
    ask(
        &state.orders,
        ListReservations {
            filter: ReservationFilter { user_id, status },
            page,
        },
        StatusCode::OK,
        "Reservations retrieved successfully",
    )
    .await
}

#[utoipa::path(
    get,
    path = "/api/v1/reservations/{id}",
    tag = "reservations",
    summary = "A reservation (owner or admin)",
    params(("id" = uuid::Uuid, Path, description = "Reservation id; anything else is 404")),
    responses((status = 200, description = "A reservation (owner or admin)", body = crate::http::openapi::ApiResponse<crate::models::reservation::ReservationView>), (status = 404, description = "No such reservation, someone else's, or a malformed id", body = crate::http::openapi::ErrorResponse)),
    security(("bearer_auth" = []))
)]
pub async fn get(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    ask(
        &state.orders,
        GetReservation {
            caller,
            id: hold_id(&id)?,
        },
        StatusCode::OK,
        "Reservation retrieved successfully",
    )
    .await
}

#[utoipa::path(
    post,
    path = "/api/v1/reservations/{id}/confirm",
    tag = "reservations",
    summary = "Turn the hold into an order (owner)",
    description = "201 with the new `pending` order, at the reservation's unit prices, and the reservation becomes `confirmed` with `order_id`. Confirming again answers 200 with the same order; concurrent confirms make one order. A hold past its `expires_at` is 410 even if the expiry has not run yet.",
    params(("id" = uuid::Uuid, Path, description = "Reservation id; anything else is 404")),
    responses((status = 201, description = "The new order", body = crate::http::openapi::ApiResponse<crate::models::order::OrderView>), (status = 200, description = "Already confirmed: the same order", body = crate::http::openapi::ApiResponse<crate::models::order::OrderView>), (status = 404, description = "No such reservation of the caller (admins included)", body = crate::http::openapi::ErrorResponse), (status = 410, description = "The reservation expired or was released", body = crate::http::openapi::ErrorResponse)),
    security(("bearer_auth" = []))
)]
pub async fn confirm(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = hold_id(&id)?;
    let confirmed = state.inventory.send(ConfirmReservation { id, caller }).await??;
    Ok(if confirmed.created {
        let at = confirmed.order.created_at;
        envelope::respond_at(
            StatusCode::CREATED,
            "Reservation confirmed; order created",
            confirmed.order,
            at,
        )
    } else {
        envelope::respond(StatusCode::OK, "Reservation already confirmed", confirmed.order)
    })
}

#[utoipa::path(
    delete,
    path = "/api/v1/reservations/{id}",
    tag = "reservations",
    summary = "Release a hold (owner or admin)",
    description = "The units go back to stock in the same transaction and the reservation becomes `released`. An already released or expired one answers 200 unchanged; a confirmed one is 409 (even when its order was cancelled later).",
    params(("id" = uuid::Uuid, Path, description = "Reservation id; anything else is 404")),
    responses((status = 200, description = "The reservation, `released` (or as it was)", body = crate::http::openapi::ApiResponse<crate::models::reservation::ReservationView>), (status = 404, description = "No such reservation, someone else's, or a malformed id", body = crate::http::openapi::ErrorResponse), (status = 409, description = "The reservation was confirmed", body = crate::http::openapi::ErrorResponse)),
    security(("bearer_auth" = []))
)]
pub async fn release(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    ask(
        &state.inventory,
        ReleaseReservation {
            caller,
            id: hold_id(&id)?,
        },
        StatusCode::OK,
        "Reservation released",
    )
    .await
}
