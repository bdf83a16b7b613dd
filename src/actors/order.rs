//! OrderActor: order and reservation reads, the status machine and
//! idempotency.
//!
//! Handles: `SubmitOrder`, `GetOrder`, `ListOrders`, `ChangeStatus`,
//! `SubmitReservation`, `GetReservation`, `ListReservations`.
//!
//! Stock-changing work (placement, cancellation, holds) is forwarded to the
//! InventoryActor; this actor claims the Idempotency-Key first and releases
//! it when the request is refused, so a retry runs again.

use std::time::Duration;

use actix::prelude::*;

use std::future::Future;

use uuid::Uuid;

use diesel_async::{AsyncConnection, AsyncPgConnection};

use crate::{
    actors::guarded,
    actors::{
        events::Outbox,
        inventory::{CancelOrder, InventoryActor, Line, PlaceOrder, Reserve},
    },
    auth::AuthUser,
    config::OrderSettings,
    db::DbPool,
    domain::{EventType, OrderStatus},
    error::AppError,
    models::{
        event::{self, InsertEvents, NewEvents},
        idempotency::{self, Claim, Owned, Scope},
        order::{self, OrderCursor, OrderFilter, OrderView},
        reservation::{self, ReservationCursor, ReservationFilter, ReservationView},
    },
    pagination::{newest_first, CursorCodec, Fetch, Page, PageRequest},
};

pub struct OrderActor {
    pool: DbPool,
    outbox: Outbox,
    inventory: Addr<InventoryActor>,
    cursors: CursorCodec,
    settings: OrderSettings,
}

impl OrderActor {
    pub fn new(
        pool: DbPool,
        outbox: Outbox,
        inventory: Addr<InventoryActor>,
        cursors: CursorCodec,
        settings: OrderSettings,
    ) -> Self {
        Self {
            pool,
            outbox,
            inventory,
            cursors,
            settings,
        }
    }
}

impl Actor for OrderActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        // Forget idempotency keys older than their TTL, hourly.
        ctx.run_interval(Duration::from_secs(3600), |act, ctx| {
            let (pool, ttl) = (
                act.pool.clone(),
                Duration::from_secs(act.settings.idempotency_ttl_secs),
            );
            ctx.spawn(
                async move {
                    let result = match pool.get().await {
                        Ok(mut conn) => idempotency::purge(&mut conn, ttl)
                            .await
                            .map_err(anyhow::Error::from),
                        Err(e) => Err(e.into()),
                    };
                    match result {
                        Ok(n) => tracing::debug!(purged = n, "expired idempotency keys removed"),
                        Err(e) => tracing::warn!(error = %e, "purging idempotency keys failed"),
                    }
                }
                .into_actor(act),
            );
        });
    }
}

impl Supervised for OrderActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!(actor = "OrderActor", "restarting after a failure");
    }
}

type Reply<T> = ResponseFuture<Result<T, AppError>>;

fn not_found() -> AppError {
    AppError::NotFound("Order not found".into())
}

/// A validated order request. `idempotency` is the key and the hash of the
/// request it came with.
#[derive(Message)]
#[rtype(result = "Result<Submitted<OrderView>, AppError>")]
pub struct SubmitOrder {
    pub caller: AuthUser,
    pub lines: Vec<Line>,
    pub idempotency: Option<(String, Vec<u8>)>,
}

/// A validated hold request, like `SubmitOrder`.
#[derive(Message)]
#[rtype(result = "Result<Submitted<ReservationView>, AppError>")]
pub struct SubmitReservation {
    pub caller: AuthUser,
    pub lines: Vec<Line>,
    pub ttl_secs: i64,
    pub idempotency: Option<(String, Vec<u8>)>,
}

/// What a submitted request came to: the new order or hold, or the stored
/// first answer of its Idempotency-Key.
#[derive(Debug)]
pub enum Submitted<T> {
    Created(T),
    Replayed(idempotency::Stored),
}

#[derive(Message)]
#[rtype(result = "Result<ReservationView, AppError>")]
pub struct GetReservation {
    pub caller: AuthUser,
    pub id: Uuid,
}

#[derive(Message)]
#[rtype(result = "Result<Page<ReservationView>, AppError>")]
pub struct ListReservations {
    pub filter: ReservationFilter,
    pub page: PageRequest<ReservationCursor>,
}

pub const RESERVATIONS_CURSOR_SCOPE: &str = "reservations:-created_at";

#[derive(Message)]
#[rtype(result = "Result<OrderView, AppError>")]
pub struct GetOrder {
    pub caller: AuthUser,
    pub id: i64,
}

#[derive(Message)]
#[rtype(result = "Result<Page<OrderView>, AppError>")]
pub struct ListOrders {
    pub filter: OrderFilter,
    pub page: PageRequest<OrderCursor>,
}

pub const ORDERS_CURSOR_SCOPE: &str = "orders:-created_at";

/// Moves an order along the status machine; `cancelled` restocks through the
/// InventoryActor. The caller's right to do so is checked by the handler
/// (admins for PATCH, owner or admin for cancel).
#[derive(Message)]
#[rtype(result = "Result<OrderView, AppError>")]
pub struct ChangeStatus {
    pub caller: AuthUser,
    pub id: i64,
    pub status: OrderStatus,
}

/// Runs `attempt` under the caller's Idempotency-Key, if any: claims the key
/// first (a replay, a mismatch or a request in flight end there), passes the
/// claim to `attempt` (whose transaction completes it), and frees it when the
/// request is refused, so a retry runs again. After a 5xx the outcome is
/// unknown (the commit may have happened), so the claim stays: the stored
/// response, or the stale timeout, decides the retry.
///
/// A request whose stale claim a retry took over before the inventory
/// decided it created nothing (`AppError::ClaimLost`); it answers as the key
/// does then: the retry's stored response, 409 while the retry runs, or,
/// when the retry was refused and freed the key, a run of its own.
async fn idempotent<T, Fut>(
    pool: DbPool,
    settings: &OrderSettings,
    scope: Scope,
    user_id: i64,
    idempotency: Option<(String, Vec<u8>)>,
    mut attempt: impl FnMut(Option<Owned>) -> Fut,
) -> Result<Submitted<T>, AppError>
where
    Fut: Future<Output = Result<T, AppError>>,
{
    let Some((key, hash)) = idempotency else {
        return attempt(None).await.map(Submitted::Created);
    };
    let ttl = Duration::from_secs(settings.idempotency_ttl_secs);
    let stale = Duration::from_secs(settings.idempotency_stale_secs);
    let in_flight = || AppError::conflict("A request with this Idempotency-Key is still being processed");
    for _ in 0..2 {
        let owned = {
            let mut conn = pool.get().await?;
            match idempotency::claim(&mut conn, user_id, scope, &key, &hash, ttl, stale).await? {
                Claim::Fresh(owned) => owned,
                Claim::Replay(stored) => return Ok(Submitted::Replayed(stored)),
                Claim::Mismatch => {
                    return Err(AppError::unprocessable(
                        "Idempotency-Key was already used with a different request body",
                        Vec::new(),
                    ))
                }
                Claim::InFlight => return Err(in_flight()),
            }
        };
        match attempt(Some(owned.clone())).await {
            Ok(created) => return Ok(Submitted::Created(created)),
            Err(AppError::ClaimLost) => continue,
            Err(e) => {
                if matches!(e, AppError::Conflict { .. } | AppError::Unprocessable { .. }) {
                    let mut conn = pool.get().await?;
                    idempotency::release(&mut conn, user_id, scope, &owned).await?;
                }
                return Err(e);
            }
        }
    }
    Err(in_flight())
}

impl Handler<SubmitOrder> for OrderActor {
    type Result = Reply<Submitted<OrderView>>;

    fn handle(&mut self, msg: SubmitOrder, _: &mut Context<Self>) -> Self::Result {
        let (pool, inventory, settings) = (self.pool.clone(), self.inventory.clone(), self.settings.clone());
        guarded("OrderActor", async move {
            let user_id = msg.caller.id;
            idempotent(pool, &settings, Scope::Orders, user_id, msg.idempotency, |key| {
                let (inventory, lines) = (inventory.clone(), msg.lines.clone());
                async move {
                    inventory
                        .send(PlaceOrder {
                            user_id,
                            lines,
                            idempotency_key: key,
                        })
                        .await?
                }
            })
            .await
        })
    }
}

impl Handler<SubmitReservation> for OrderActor {
    type Result = Reply<Submitted<ReservationView>>;

    fn handle(&mut self, msg: SubmitReservation, _: &mut Context<Self>) -> Self::Result {
        let (pool, inventory, settings) = (self.pool.clone(), self.inventory.clone(), self.settings.clone());
        guarded("OrderActor", async move {
            let user_id = msg.caller.id;
            idempotent(
                pool,
                &settings,
                Scope::Reservations,
                user_id,
                msg.idempotency,
                |key| {
                    let (inventory, lines) = (inventory.clone(), msg.lines.clone());
                    async move {
                        inventory
                            .send(Reserve {
                                user_id,
                                lines,
                                ttl_secs: msg.ttl_secs,
                                idempotency_key: key,
                            })
                            .await?
                    }
                },
            )
            .await
        })
    }
}

impl Handler<GetReservation> for OrderActor {
    type Result = Reply<ReservationView>;

    fn handle(&mut self, msg: GetReservation, _: &mut Context<Self>) -> Self::Result {
        let pool = self.pool.clone();
        guarded("OrderActor", async move {
            let mut conn = pool.get().await?;
            reservation::find(&mut conn, msg.id)
                .await?
                .filter(|r| r.user_id == msg.caller.id || msg.caller.role.is_admin())
                .ok_or_else(|| AppError::NotFound("Reservation not found".into()))
        })
    }
}

impl Handler<ListReservations> for OrderActor {
    type Result = Reply<Page<ReservationView>>;

    fn handle(&mut self, msg: ListReservations, _: &mut Context<Self>) -> Self::Result {
        let (pool, cursors) = (self.pool.clone(), self.cursors.clone());
        guarded("OrderActor", async move {
            let mut conn = pool.get().await?;
            let filter = &msg.filter;
            cursors
                .serve(
                    RESERVATIONS_CURSOR_SCOPE,
                    msg.page,
                    |r: &ReservationView| (r.created_at.timestamp_micros(), r.id),
                    |fetch| async move {
                        Ok(match fetch {
                            Fetch::Offset { offset, limit } => {
                                reservation::list_offset(&mut conn, filter, offset, limit).await?
                            }
                            Fetch::Keyset { after, limit } => {
                                let after = newest_first(after)?;
                                (
                                    reservation::list_keyset(&mut conn, filter, after, limit).await?,
                                    0,
                                )
                            }
                        })
                    },
                )
                .await
        })
    }
}

/// Loads an order the caller may see (owner or admin); others get 404.
async fn visible(pool: &DbPool, caller: AuthUser, id: i64) -> Result<OrderView, AppError> {
    let mut conn = pool.get().await?;
    order::find(&mut conn, id)
        .await?
        .filter(|o| o.user_id == caller.id || caller.role.is_admin())
        .ok_or_else(not_found)
}

impl Handler<GetOrder> for OrderActor {
    type Result = Reply<OrderView>;

    fn handle(&mut self, msg: GetOrder, _: &mut Context<Self>) -> Self::Result {
        let pool = self.pool.clone();
        guarded(
            "OrderActor",
            async move { visible(&pool, msg.caller, msg.id).await },
        )
    }
}

impl Handler<ListOrders> for OrderActor {
    type Result = Reply<Page<OrderView>>;

    fn handle(&mut self, msg: ListOrders, _: &mut Context<Self>) -> Self::Result {
        let (pool, cursors) = (self.pool.clone(), self.cursors.clone());
        guarded("OrderActor", async move {
            let mut conn = pool.get().await?;
            let filter = &msg.filter;
            cursors
                .serve(
                    ORDERS_CURSOR_SCOPE,
                    msg.page,
                    |o: &OrderView| (o.created_at.timestamp_micros(), o.id),
                    |fetch| async move {
                        Ok(match fetch {
                            Fetch::Offset { offset, limit } => {
                                order::list_offset(&mut conn, filter, offset, limit).await?
                            }
                            Fetch::Keyset { after, limit } => {
                                let after = newest_first(after)?;
                                (order::list_keyset(&mut conn, filter, after, limit).await?, 0)
                            }
                        })
                    },
                )
                .await
        })
    }
}

impl Handler<ChangeStatus> for OrderActor {
    type Result = Reply<OrderView>;

    fn handle(&mut self, msg: ChangeStatus, _: &mut Context<Self>) -> Self::Result {
        let (pool, inventory, outbox) = (self.pool.clone(), self.inventory.clone(), self.outbox.clone());
        guarded("OrderActor", async move {
            let ChangeStatus { caller, id, status } = msg;
            if status == OrderStatus::Cancelled {
                return inventory.send(CancelOrder { order_id: id, caller }).await?;
            }
            let from = visible(&pool, caller, id).await?.status;
            let invalid =
                || AppError::conflict(format!("Cannot change order status from {from} to {status}"));
            if !from.can_become(status) {
                return Err(invalid());
            }
            // Conditional on the status read above: a concurrent change wins
            // and this one is refused. Its event commits with it.
            let sink = outbox.sink();
            let (order, events) = crate::db::retry_on_conflict("order status", || {
                let pool = pool.clone();
                async move {
                    let mut conn = pool.get().await?;
                    AsyncConnection::transaction::<_, AppError, _>(
                        &mut *conn,
                        async move |conn: &mut AsyncPgConnection| {
                            let order = order::transition(conn, id, from, status)
                                .await?
                                .ok_or_else(invalid)?;
                            let receivers = event::current_receivers(conn, sink).await?;
                            let mut events = NewEvents::new(receivers, sink);
                            events.push(EventType::OrderStatusChanged, &order)?;
                            let n = InsertEvents {
                                events,
                                now: order.updated_at,
                            }
                            .run(conn)
                            .await?;
                            Ok((order, n))
                        },
                    )
                    .await
                }
            })
            .await?;
            outbox.committed(events as usize);
            Ok(order)
        })
    }
}
