//! The pure part of a batch: given the locked rows, decide each request in
//! arrival order, all-or-nothing per request, and collect what to write.

use std::collections::{BTreeMap, HashMap};

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    auth::AuthUser,
    domain::{EventType, EventTypes, OrderStatus, ReservationStatus},
    error::{AppError, FieldError},
    models::{
        event::NewEvents,
        idempotency::{Owned, Scope},
        order::{OrderItem, OrderView},
        reservation::{ReservationItem, ReservationView},
    },
};

/// One order line after duplicates were summed; `index` is the position of
/// the product's first line in the request (for error fields).
#[derive(Debug, Clone)]
pub struct Line {
    pub product_id: i64,
    pub quantity: i32,
    pub index: usize,
}

/// A hold to create: its id (chosen by the caller), lines, lifetime and the
/// per-user limit of active holds.
#[derive(Debug)]
pub struct NewHold {
    pub id: Uuid,
    pub user_id: i64,
    pub lines: Vec<Line>,
    pub ttl_secs: i64,
    pub max_active: usize,
    pub idempotency_key: Option<Owned>,
}

#[derive(Debug)]
pub enum Op {
    Place {
        user_id: i64,
        lines: Vec<Line>,
        idempotency_key: Option<Owned>,
    },
    Cancel {
        order_id: i64,
        caller: AuthUser,
    },
    Adjust {
        product_id: i64,
        delta: i32,
    },
    Reserve(NewHold),
    Confirm {
        id: Uuid,
        caller: AuthUser,
    },
    Release {
        id: Uuid,
        caller: AuthUser,
    },
    /// Claims up to `limit` due holds and expires them.
    Expire {
        limit: i64,
    },
}

impl Op {
    /// The user on whose behalf the op runs (refused when deactivated).
    pub fn caller(&self) -> Option<i64> {
        match self {
            Op::Place { user_id, .. } => Some(*user_id),
            Op::Reserve(h) => Some(h.user_id),
            Op::Cancel { caller, .. } | Op::Confirm { caller, .. } | Op::Release { caller, .. } => {
                Some(caller.id)
            }
            Op::Adjust { .. } | Op::Expire { .. } => None,
        }
    }

    /// The Idempotency-Key the op completes, with its owner and scope.
    pub fn claim(&self) -> Option<(i64, Scope, &Owned)> {
        match self {
            Op::Place {
                user_id,
                idempotency_key: Some(owned),
                ..
            } => Some((*user_id, Scope::Orders, owned)),
            Op::Reserve(NewHold {
                user_id,
                idempotency_key: Some(owned),
                ..
            }) => Some((*user_id, Scope::Reservations, owned)),
            _ => None,
        }
    }

    /// The existing hold the op refers to.
    pub fn hold(&self) -> Option<Uuid> {
        match self {
            Op::Confirm { id, .. } | Op::Release { id, .. } => Some(*id),
            _ => None,
        }
    }

    /// Products the op names itself (holds' and orders' products come from
    /// their locked rows).
    pub fn products(&self) -> impl Iterator<Item = i64> + '_ {
        let (lines, adjusted): (&[Line], Option<i64>) = match self {
            Op::Place { lines, .. } => (lines, None),
            Op::Reserve(h) => (&h.lines, None),
            Op::Adjust { product_id, .. } => (&[], Some(*product_id)),
            _ => (&[], None),
        };
        lines.iter().map(|l| l.product_id).chain(adjusted)
    }
}

#[derive(Debug)]
pub enum Outcome {
    Placed(OrderView),
    Cancelled(OrderView),
    Adjusted {
        product_id: i64,
        stock_quantity: i32,
    },
    Reserved(ReservationView),
    /// The hold's order; `created` is false when an earlier confirm made it.
    Confirmed {
        order: OrderView,
        created: bool,
    },
    /// The hold after the release; `ended` is false when it had already
    /// ended (released or expired) and is returned unchanged.
    Released {
        hold: ReservationView,
        ended: bool,
    },
    Expired(usize),
}

#[derive(Debug, Clone)]
pub struct Locked {
    pub price: BigDecimal,
    pub stock: i32,
    pub reserved: i32,
    pub is_active: bool,
}

/// What a batch decides from: the locked rows and the values taken with them.
#[derive(Debug, Default)]
pub struct Locks {
    pub products: HashMap<i64, Locked>,
    /// Orders that cancels refer to (locked), and the orders of confirmed
    /// holds (read).
    pub orders: HashMap<i64, OrderView>,
    /// Holds that confirms and releases refer to, and the claimed due ones.
    pub holds: HashMap<Uuid, ReservationView>,
    /// Due holds this batch claimed for expiry.
    pub claimed: Vec<Uuid>,
    /// Active, unexpired holds per reserving user.
    pub active_holds: HashMap<i64, usize>,
    /// Callers whose accounts are deactivated (refused with 401).
    pub inactive: Vec<i64>,
    /// Ops (by index) whose Idempotency-Key claim was taken over by a retry:
    /// they create nothing.
    pub lost_claims: Vec<usize>,
    /// Preallocated sequence values.
    pub order_ids: Vec<i64>,
    pub item_ids: Vec<i64>,
    /// The transaction's timestamp.
    pub now: DateTime<Utc>,
    /// Event types somebody receives (active endpoints' subscriptions, and
    /// every type when a JetStream sink is configured).
    pub receivers: EventTypes,
    pub sink: bool,
}

/// A completed Idempotency-Key: the JSON of its 201's data.
#[derive(Debug)]
pub struct KeyWrite {
    pub user_id: i64,
    pub scope: Scope,
    pub key: String,
    pub token: Uuid,
    pub data: String,
    pub order_id: Option<i64>,
}

/// Everything one batch writes, as column arrays for the multi-row statement.
#[derive(Debug, Default)]
pub struct Writes {
    /// New (stock_quantity, reserved_quantity) per product.
    pub stock: BTreeMap<i64, (i32, i32)>,
    pub orders: Vec<OrderView>,
    pub cancelled: Vec<i64>,
    pub holds: Vec<ReservationView>,
    /// Holds that left `active`: (id, new status, order it became).
    pub hold_changes: Vec<(Uuid, ReservationStatus, Option<i64>)>,
    pub keys: Vec<KeyWrite>,
    /// The events of the changes above that somebody receives.
    pub events: NewEvents,
}

pub struct Allocation {
    pub outcomes: Vec<Result<Outcome, AppError>>,
    pub writes: Writes,
}

/// Decides every op in arrival order.
pub fn allocate(ops: &[Op], locks: Locks) -> Allocation {
    let mut batch = Batch {
        next_order: 0,
        next_item: 0,
        writes: Writes {
            events: NewEvents::new(locks.receivers, locks.sink),
            ..Writes::default()
        },
        locks,
    };
    let mut outcomes = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        if batch.locks.lost_claims.contains(&i) {
            outcomes.push(Err(AppError::ClaimLost));
            continue;
        }
        if op.caller().is_some_and(|id| batch.locks.inactive.contains(&id)) {
            outcomes.push(Err(AppError::Unauthorized("Account is deactivated".into())));
            continue;
        }
        outcomes.push(batch.decide(op));
    }
    Allocation {
        outcomes,
        writes: batch.writes,
    }
}

fn hold_not_found() -> AppError {
    AppError::NotFound("Reservation not found".into())
}

fn unlocked(what: &str) -> AppError {
    AppError::internal(anyhow::anyhow!("{what} was not locked by the batch"))
}

struct Batch {
    locks: Locks,
    writes: Writes,
    next_order: usize,
    next_item: usize,
}

impl Batch {
    fn decide(&mut self, op: &Op) -> Result<Outcome, AppError> {
        match op {
            Op::Place {
                user_id,
                lines,
                idempotency_key,
            } => self.place(*user_id, lines, idempotency_key.as_ref()),
            Op::Cancel { order_id, caller } => self.cancel(*order_id, *caller),
            Op::Adjust { product_id, delta } => self.adjust(*product_id, *delta),
            Op::Reserve(hold) => self.reserve(hold),
            Op::Confirm { id, caller } => self.confirm(*id, *caller),
            Op::Release { id, caller } => self.release(*id, *caller),
            Op::Expire { .. } => {
                let mut n = 0;
                for id in std::mem::take(&mut self.locks.claimed) {
                    if self.expire_if_due(id)? {
                        n += 1;
                    }
                }
                Ok(Outcome::Expired(n))
            }
        }
    }

    /// Checks `lines` against the locked products, all or nothing: 422 when
    /// one is unknown or inactive, 409 naming each short one. Returns each
    /// line's current price; takes nothing.
    fn priced(&self, lines: &[Line]) -> Result<Vec<BigDecimal>, AppError> {
        let products = &self.locks.products;
        let unknown: Vec<FieldError> = lines
            .iter()
            .filter(|l| !products.get(&l.product_id).is_some_and(|p| p.is_active))
            .map(|l| {
                FieldError::new(
                    format!("items[{}].product_id", l.index),
                    "unknown or inactive product",
                )
            })
            .collect();
        if !unknown.is_empty() {
            return Err(AppError::unprocessable(
                "Order references unknown or inactive products",
                unknown,
            ));
        }
        let short: Vec<FieldError> = lines
            .iter()
            .filter(|l| products.get(&l.product_id).is_some_and(|p| p.stock < l.quantity))
            .map(|l| FieldError::new(format!("items[{}].product_id", l.index), "insufficient stock"))
            .collect();
        if !short.is_empty() {
            return Err(AppError::Conflict {
                message: "Insufficient stock".into(),
                errors: short,
            });
        }
        lines
            .iter()
            .map(|l| {
                self.locks
                    .products
                    .get(&l.product_id)
                    .map(|p| p.price.clone())
                    .ok_or_else(|| unlocked("product"))
            })
            .collect()
    }

    /// Moves `quantity` units of a locked product: `stock` and `reserved` are
    /// the changes to its two counters. Neither may leave 0..=i32::MAX.
    fn move_units(&mut self, product_id: i64, stock: i32, reserved: i32) -> Result<(), AppError> {
        let p = self
            .locks
            .products
            .get_mut(&product_id)
            .ok_or_else(|| unlocked("product"))?;
        let (Some(s), Some(r)) = (p.stock.checked_add(stock), p.reserved.checked_add(reserved)) else {
            return Err(AppError::conflict("Stock would overflow the stock counter"));
        };
        if s < 0 || r < 0 {
            return Err(AppError::internal(anyhow::anyhow!(
                "product {product_id} would go below zero (stock {s}, reserved {r})"
            )));
        }
        let event = match (p.stock, s) {
            (1.., 0) => Some(EventType::ProductSoldOut),
            (0, 1..) => Some(EventType::ProductBackInStock),
            _ => None,
        };
        (p.stock, p.reserved) = (s, r);
        self.writes.stock.insert(product_id, (s, r));
        if let Some(t) = event {
            let level = super::StockLevel {
                product_id,
                stock_quantity: s,
            };
            self.writes.events.push(t, &level)?;
        }
        Ok(())
    }

    fn new_ids(&mut self, items: usize) -> Result<(i64, Vec<i64>), AppError> {
        let out_of_ids = || AppError::internal(anyhow::anyhow!("batch ran out of preallocated ids"));
        let order = *self.locks.order_ids.get(self.next_order).ok_or_else(out_of_ids)?;
        let ids = self
            .locks
            .item_ids
            .get(self.next_item..self.next_item + items)
            .ok_or_else(out_of_ids)?
            .to_vec();
        self.next_order += 1;
        self.next_item += items;
        Ok((order, ids))
    }

    /// A new pending order of `lines` (product, quantity, unit price).
    fn new_order(&mut self, user_id: i64, lines: &[(i64, i32, BigDecimal)]) -> Result<OrderView, AppError> {
        let (order_id, item_ids) = self.new_ids(lines.len())?;
        let now = self.locks.now;
        let mut total = BigDecimal::from(0);
        let items = lines
            .iter()
            .zip(item_ids)
            .map(|((product_id, quantity, price), id)| {
                total += price * BigDecimal::from(*quantity);
                OrderItem {
                    id,
                    order_id,
                    product_id: *product_id,
                    quantity: *quantity,
                    unit_price: price.clone(),
                }
            })
            .collect();
        let view = OrderView {
            id: order_id,
            user_id,
            status: OrderStatus::Pending,
            total_amount: total.with_scale(2),
            items,
            created_at: now,
            updated_at: now,
        };
        self.writes.events.push(EventType::OrderCreated, &view)?;
        self.writes.orders.push(view.clone());
        Ok(view)
    }

    fn complete_key(
        &mut self,
        user_id: i64,
        scope: Scope,
        key: Option<&Owned>,
        data: &impl serde::Serialize,
        order_id: Option<i64>,
    ) -> Result<(), AppError> {
        if let Some(owned) = key {
            self.writes.keys.push(KeyWrite {
                user_id,
                scope,
                key: owned.key.clone(),
                token: owned.token,
                data: serde_json::to_string(data).map_err(AppError::internal)?,
                order_id,
            });
        }
        Ok(())
    }

    fn place(&mut self, user_id: i64, lines: &[Line], key: Option<&Owned>) -> Result<Outcome, AppError> {
        let prices = self.priced(lines)?;
        let priced: Vec<(i64, i32, BigDecimal)> = lines
            .iter()
            .zip(prices)
            .map(|(l, price)| (l.product_id, l.quantity, price))
            .collect();
        let order = self.new_order(user_id, &priced)?;
        for l in lines {
            self.move_units(l.product_id, -l.quantity, 0)?;
        }
        self.complete_key(user_id, Scope::Orders, key, &order, Some(order.id))?;
        Ok(Outcome::Placed(order))
    }

    fn reserve(&mut self, hold: &NewHold) -> Result<Outcome, AppError> {
        let active = self.locks.active_holds.entry(hold.user_id).or_default();
        if *active >= hold.max_active {
            return Err(AppError::Conflict {
                message: format!(
                    "Too many active reservations: at most {} per user (max_active_per_user)",
                    hold.max_active
                ),
                errors: vec![FieldError::new(
                    "max_active_per_user",
                    format!("at most {} active reservations", hold.max_active),
                )],
            });
        }
        let prices = self.priced(&hold.lines)?;
        let now = self.locks.now;
        let mut total = BigDecimal::from(0);
        let mut items = Vec::with_capacity(hold.lines.len());
        for (position, (l, price)) in hold.lines.iter().zip(prices).enumerate() {
            total += &price * BigDecimal::from(l.quantity);
            items.push(ReservationItem {
                reservation_id: hold.id,
                product_id: l.product_id,
                position: i16::try_from(position).map_err(AppError::internal)?,
                quantity: l.quantity,
                unit_price: price,
            });
        }
        for l in &hold.lines {
            self.move_units(l.product_id, -l.quantity, l.quantity)?;
        }
        if let Some(n) = self.locks.active_holds.get_mut(&hold.user_id) {
            *n += 1;
        }
        let view = ReservationView {
            id: hold.id,
            user_id: hold.user_id,
            status: ReservationStatus::Active,
            items,
            total_amount: total.with_scale(2),
            expires_at: now + chrono::Duration::seconds(hold.ttl_secs),
            order_id: None,
            created_at: now,
            updated_at: now,
        };
        self.complete_key(
            hold.user_id,
            Scope::Reservations,
            hold.idempotency_key.as_ref(),
            &view,
            None,
        )?;
        self.writes.events.push(EventType::ReservationCreated, &view)?;
        self.writes.holds.push(view.clone());
        Ok(Outcome::Reserved(view))
    }

    /// Ends an active hold: its units go back to stock (`released` or
    /// `expired`) or into its new order (`confirmed`).
    fn end_hold(
        &mut self,
        id: Uuid,
        status: ReservationStatus,
        order_id: Option<i64>,
    ) -> Result<ReservationView, AppError> {
        let event = match status {
            ReservationStatus::Confirmed => EventType::ReservationConfirmed,
            ReservationStatus::Released => EventType::ReservationReleased,
            ReservationStatus::Expired => EventType::ReservationExpired,
            ReservationStatus::Active => {
                return Err(AppError::internal(anyhow::anyhow!("a hold cannot end as active")))
            }
        };
        let hold = self
            .locks
            .holds
            .get(&id)
            .ok_or_else(|| unlocked("reservation"))?
            .clone();
        for item in &hold.items {
            let back = if status == ReservationStatus::Confirmed {
                0
            } else {
                item.quantity
            };
            self.move_units(item.product_id, back, -item.quantity)?;
        }
        let now = self.locks.now;
        let hold = self
            .locks
            .holds
            .get_mut(&id)
            .ok_or_else(|| unlocked("reservation"))?;
        hold.status = status;
        hold.order_id = order_id;
        hold.updated_at = now;
        let hold = hold.clone();
        self.writes.hold_changes.push((id, status, order_id));
        self.writes.events.push(event, &hold)?;
        Ok(hold)
    }

    /// Expires the hold if it is active and past `expires_at`.
    fn expire_if_due(&mut self, id: Uuid) -> Result<bool, AppError> {
        let due = self
            .locks
            .holds
            .get(&id)
            .is_some_and(|h| h.status == ReservationStatus::Active && h.expires_at <= self.locks.now);
        if due {
            self.end_hold(id, ReservationStatus::Expired, None)?;
        }
        Ok(due)
    }

    fn confirm(&mut self, id: Uuid, caller: AuthUser) -> Result<Outcome, AppError> {
        // Only the owner confirms: for anyone else, admins included, the
        // hold does not exist.
        let hold = self
            .locks
            .holds
            .get(&id)
            .filter(|h| h.user_id == caller.id)
            .ok_or_else(hold_not_found)?;
        let (status, order_id) = (hold.status, hold.order_id);
        let lines: Vec<(i64, i32, BigDecimal)> = hold
            .items
            .iter()
            .map(|i| (i.product_id, i.quantity, i.unit_price.clone()))
            .collect();
        match status {
            ReservationStatus::Confirmed => {
                let order = order_id
                    .and_then(|o| self.locks.orders.get(&o))
                    .ok_or_else(|| unlocked("order of a confirmed reservation"))?;
                return Ok(Outcome::Confirmed {
                    order: order.clone(),
                    created: false,
                });
            }
            ReservationStatus::Released => return Err(AppError::Gone("Reservation was released".into())),
            ReservationStatus::Expired => return Err(AppError::Gone("Reservation has expired".into())),
            ReservationStatus::Active => {}
        }
        if self.expire_if_due(id)? {
            return Err(AppError::Gone("Reservation has expired".into()));
        }
        let order = self.new_order(caller.id, &lines)?;
        self.end_hold(id, ReservationStatus::Confirmed, Some(order.id))?;
        self.locks.orders.insert(order.id, order.clone());
        Ok(Outcome::Confirmed { order, created: true })
    }

    fn release(&mut self, id: Uuid, caller: AuthUser) -> Result<Outcome, AppError> {
        let hold = self
            .locks
            .holds
            .get(&id)
            .filter(|h| h.user_id == caller.id || caller.role.is_admin())
            .ok_or_else(hold_not_found)?;
        match hold.status {
            ReservationStatus::Confirmed => {
                Err(AppError::conflict("A confirmed reservation cannot be released"))
            }
            ReservationStatus::Released | ReservationStatus::Expired => Ok(Outcome::Released {
                hold: hold.clone(),
                ended: false,
            }),
            ReservationStatus::Active => {
                // Past its expiry it is expired, whether or not the expiry ran.
                let status = if hold.expires_at <= self.locks.now {
                    ReservationStatus::Expired
                } else {
                    ReservationStatus::Released
                };
                Ok(Outcome::Released {
                    hold: self.end_hold(id, status, None)?,
                    ended: true,
                })
            }
        }
    }

    fn cancel(&mut self, order_id: i64, caller: AuthUser) -> Result<Outcome, AppError> {
        let not_found = || AppError::NotFound("Order not found".into());
        let order = self.locks.orders.get(&order_id).ok_or_else(not_found)?;
        let by_admin = caller.role.is_admin();
        if order.user_id != caller.id && !by_admin {
            return Err(not_found());
        }
        if !order.status.cancellable(by_admin) {
            return Err(AppError::conflict(format!(
                "Order cannot be cancelled while {}",
                order.status
            )));
        }
        let items: Vec<(i64, i32)> = order.items.iter().map(|i| (i.product_id, i.quantity)).collect();
        for (product_id, quantity) in items {
            self.move_units(product_id, quantity, 0)?;
        }
        let order = self.locks.orders.get_mut(&order_id).ok_or_else(not_found)?;
        order.status = OrderStatus::Cancelled;
        order.updated_at = self.locks.now;
        let order = order.clone();
        self.writes.cancelled.push(order_id);
        self.writes.events.push(EventType::OrderStatusChanged, &order)?;
        Ok(Outcome::Cancelled(order))
    }

    fn adjust(&mut self, product_id: i64, delta: i32) -> Result<Outcome, AppError> {
        let p = self
            .locks
            .products
            .get(&product_id)
            .ok_or_else(|| AppError::NotFound("Product not found".into()))?;
        match p.stock.checked_add(delta) {
            Some(s) if s >= 0 => {
                self.move_units(product_id, delta, 0)?;
                Ok(Outcome::Adjusted {
                    product_id,
                    stock_quantity: s,
                })
            }
            Some(_) => Err(AppError::Conflict {
                message: "Stock cannot go below zero".into(),
                errors: vec![FieldError::new(
                    "delta",
                    format!("would leave stock at {}", i64::from(p.stock) + i64::from(delta)),
                )],
            }),
            None => Err(AppError::invalid_field("delta", "is out of range")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    fn product(stock: i32) -> Locked {
        Locked {
            price: "2.50".parse().expect("decimal"),
            stock,
            reserved: 0,
            is_active: true,
        }
    }

    fn lines(of: &[(i64, i32)]) -> Vec<Line> {
        of.iter()
            .enumerate()
            .map(|(index, (product_id, quantity))| Line {
                product_id: *product_id,
                quantity: *quantity,
                index,
            })
            .collect()
    }

    fn place(user_id: i64, of: &[(i64, i32)]) -> Op {
        Op::Place {
            user_id,
            lines: lines(of),
            idempotency_key: None,
        }
    }

    fn reserve(user_id: i64, of: &[(i64, i32)]) -> Op {
        Op::Reserve(NewHold {
            id: Uuid::new_v4(),
            user_id,
            lines: lines(of),
            ttl_secs: 60,
            max_active: 2,
            idempotency_key: None,
        })
    }

    fn locks(products: &[(i64, Locked)]) -> Locks {
        Locks {
            products: products.iter().cloned().collect(),
            order_ids: (100..120).collect(),
            item_ids: (200..240).collect(),
            now: Utc::now(),
            ..Default::default()
        }
    }

    const OWNER: AuthUser = AuthUser {
        id: 7,
        role: Role::User,
    };
    const STRANGER: AuthUser = AuthUser {
        id: 8,
        role: Role::User,
    };
    const ADMIN: AuthUser = AuthUser {
        id: 1,
        role: Role::Admin,
    };

    /// An active hold of 2 units of product 1 by `OWNER`, expiring in
    /// `secs` seconds (negative: overdue), and the locks that hold it (the
    /// product with 5 in stock and the 2 reserved).
    fn held(secs: i64) -> (Uuid, Locks) {
        let id = Uuid::new_v4();
        let mut l = locks(&[(
            1,
            Locked {
                reserved: 2,
                ..product(5)
            },
        )]);
        l.holds.insert(
            id,
            ReservationView {
                id,
                user_id: OWNER.id,
                status: ReservationStatus::Active,
                items: vec![ReservationItem {
                    reservation_id: id,
                    product_id: 1,
                    position: 0,
                    quantity: 2,
                    unit_price: "1.25".parse().expect("decimal"),
                }],
                total_amount: "2.50".parse().expect("decimal"),
                expires_at: l.now + chrono::Duration::seconds(secs),
                order_id: None,
                created_at: l.now,
                updated_at: l.now,
            },
        );
        (id, l)
    }

    #[test]
    fn allocates_in_arrival_order_all_or_nothing() {
        let ops = [
            place(7, &[(1, 2)]),
            place(7, &[(1, 1), (2, 2)]),
            place(7, &[(1, 1), (2, 1)]),
            place(7, &[(1, 1)]),
        ];
        let a = allocate(&ops, locks(&[(1, product(3)), (2, product(1))]));
        assert!(matches!(a.outcomes[0], Ok(Outcome::Placed(_))));
        // Second order: product 2 short → nothing of it is taken.
        match &a.outcomes[1] {
            Err(AppError::Conflict { errors, .. }) => {
                assert_eq!(errors[0].field.as_deref(), Some("items[1].product_id"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(a.outcomes[2], Ok(Outcome::Placed(_))));
        // Stock of product 1 is exhausted by orders 1 and 3.
        assert!(matches!(a.outcomes[3], Err(AppError::Conflict { .. })));
        assert_eq!(a.writes.stock, BTreeMap::from([(1, (0, 0)), (2, (0, 0))]));
        assert_eq!(a.writes.orders.len(), 2);
        let Ok(Outcome::Placed(o)) = &a.outcomes[0] else {
            unreachable!()
        };
        assert_eq!(o.total_amount.to_string(), "5.00");
        assert_eq!(o.items[0].id, 200);
    }

    #[test]
    fn deactivated_callers_are_refused_and_take_nothing() {
        let mut l = locks(&[(1, product(1))]);
        l.inactive = vec![7];
        let a = allocate(&[place(7, &[(1, 1)]), place(8, &[(1, 1)])], l);
        assert!(matches!(a.outcomes[0], Err(AppError::Unauthorized(_))));
        assert!(matches!(a.outcomes[1], Ok(Outcome::Placed(_))));
        assert_eq!(a.writes.stock.get(&1), Some(&(0, 0)));
    }

    #[test]
    fn unknown_or_inactive_products_are_422() {
        let mut inactive = product(5);
        inactive.is_active = false;
        let a = allocate(&[place(1, &[(1, 1), (9, 1)])], locks(&[(1, inactive)]));
        match &a.outcomes[0] {
            Err(AppError::Unprocessable { errors, .. }) => assert_eq!(errors.len(), 2),
            other => panic!("{other:?}"),
        }
        assert!(a.writes.stock.is_empty());
    }

    #[test]
    fn adjust_never_goes_negative_and_never_touches_reserved_units() {
        let adjust = |product_id, delta| Op::Adjust { product_id, delta };
        let held = Locked {
            reserved: 4,
            ..product(3)
        };
        let a = allocate(&[adjust(1, -3), adjust(1, -1), adjust(2, 1)], locks(&[(1, held)]));
        assert!(matches!(
            a.outcomes[0],
            Ok(Outcome::Adjusted {
                stock_quantity: 0,
                ..
            })
        ));
        assert!(matches!(a.outcomes[1], Err(AppError::Conflict { .. })));
        assert!(matches!(a.outcomes[2], Err(AppError::NotFound(_))));
        assert_eq!(a.writes.stock.get(&1), Some(&(0, 4)));
    }

    #[test]
    fn cancel_rules() {
        use crate::domain::OrderStatus::*;
        let order = |status: OrderStatus| OrderView {
            id: 5,
            user_id: 7,
            status,
            total_amount: "2.50".parse().expect("decimal"),
            items: vec![OrderItem {
                id: 1,
                order_id: 5,
                product_id: 1,
                quantity: 2,
                unit_price: "2.50".parse().expect("d"),
            }],
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let with_order = |status| {
            let mut l = locks(&[(1, product(0))]);
            l.orders.insert(5, order(status));
            l
        };
        let run =
            |status: OrderStatus, caller| allocate(&[Op::Cancel { order_id: 5, caller }], with_order(status));
        let a = run(Pending, OWNER);
        assert!(matches!(a.outcomes[0], Ok(Outcome::Cancelled(_))));
        assert_eq!(a.writes.stock.get(&1), Some(&(2, 0)));
        assert!(matches!(
            run(Pending, STRANGER).outcomes[0],
            Err(AppError::NotFound(_))
        ));
        assert!(matches!(
            run(Paid, OWNER).outcomes[0],
            Err(AppError::Conflict { .. })
        ));
        assert!(matches!(run(Paid, ADMIN).outcomes[0], Ok(Outcome::Cancelled(_))));
        assert!(matches!(
            run(Shipped, ADMIN).outcomes[0],
            Err(AppError::Conflict { .. })
        ));
        assert!(matches!(
            run(Cancelled, ADMIN).outcomes[0],
            Err(AppError::Conflict { .. })
        ));
        // A second cancel of the same order in one batch is refused.
        let cancel = Op::Cancel {
            order_id: 5,
            caller: OWNER,
        };
        let again = Op::Cancel {
            order_id: 5,
            caller: OWNER,
        };
        let a = allocate(&[cancel, again], with_order(Pending));
        assert!(matches!(a.outcomes[1], Err(AppError::Conflict { .. })));
        assert_eq!(a.writes.stock.get(&1), Some(&(2, 0)));
    }

    #[test]
    fn a_hold_moves_units_from_stock_to_reserved_within_the_per_user_limit() {
        let mut l = locks(&[(1, product(10))]);
        // User 7 already has one active hold; the limit is 2.
        l.active_holds.insert(7, 1);
        let a = allocate(
            &[
                reserve(7, &[(1, 3)]),
                reserve(7, &[(1, 1)]),
                reserve(8, &[(1, 8)]),
                reserve(8, &[(1, 7)]),
            ],
            l,
        );
        let Ok(Outcome::Reserved(h)) = &a.outcomes[0] else {
            panic!("{:?}", a.outcomes[0])
        };
        assert_eq!(h.status, ReservationStatus::Active);
        assert_eq!(h.total_amount.to_string(), "7.50");
        assert_eq!(h.expires_at - h.created_at, chrono::Duration::seconds(60));
        match &a.outcomes[1] {
            Err(AppError::Conflict { message, .. }) => assert!(message.contains("max_active_per_user")),
            other => panic!("{other:?}"),
        }
        // 7 left: 8 is short, all or nothing; 7 fits.
        assert!(matches!(a.outcomes[2], Err(AppError::Conflict { .. })));
        assert!(matches!(a.outcomes[3], Ok(Outcome::Reserved(_))));
        assert_eq!(a.writes.stock.get(&1), Some(&(0, 10)));
        assert_eq!(a.writes.holds.len(), 2);
        assert!(a.writes.orders.is_empty());
    }

    #[test]
    fn confirm_turns_the_hold_into_one_order_at_its_prices() {
        let (id, l) = held(60);
        let confirm = |caller| Op::Confirm { id, caller };
        let a = allocate(
            &[confirm(STRANGER), confirm(ADMIN), confirm(OWNER), confirm(OWNER)],
            l,
        );
        assert!(matches!(a.outcomes[0], Err(AppError::NotFound(_))));
        assert!(matches!(a.outcomes[1], Err(AppError::NotFound(_))));
        let Ok(Outcome::Confirmed { order, created: true }) = &a.outcomes[2] else {
            panic!("{:?}", a.outcomes[2])
        };
        assert_eq!(order.items[0].unit_price.to_string(), "1.25");
        assert_eq!(order.status, OrderStatus::Pending);
        let Ok(Outcome::Confirmed {
            order: again,
            created: false,
        }) = &a.outcomes[3]
        else {
            panic!("{:?}", a.outcomes[3])
        };
        assert_eq!(again.id, order.id);
        assert_eq!(a.writes.orders.len(), 1);
        // The units leave reserved for the order; stock is untouched.
        assert_eq!(a.writes.stock.get(&1), Some(&(5, 0)));
        assert_eq!(
            a.writes.hold_changes,
            [(id, ReservationStatus::Confirmed, Some(order.id))]
        );
    }

    #[test]
    fn an_overdue_hold_is_gone_for_confirm_and_its_units_come_back() {
        let (id, l) = held(-1);
        let a = allocate(&[Op::Confirm { id, caller: OWNER }], l);
        assert!(matches!(a.outcomes[0], Err(AppError::Gone(_))));
        assert!(a.writes.orders.is_empty());
        assert_eq!(a.writes.stock.get(&1), Some(&(7, 0)));
        assert_eq!(a.writes.hold_changes, [(id, ReservationStatus::Expired, None)]);
    }

    #[test]
    fn release_rules() {
        let (id, l) = held(60);
        let release = |caller| Op::Release { id, caller };
        let a = allocate(
            &[
                release(STRANGER),
                release(ADMIN),
                release(OWNER),
                Op::Confirm { id, caller: OWNER },
            ],
            l,
        );
        assert!(matches!(a.outcomes[0], Err(AppError::NotFound(_))));
        let Ok(Outcome::Released { hold: h, ended: true }) = &a.outcomes[1] else {
            panic!("{:?}", a.outcomes[1])
        };
        assert_eq!(h.status, ReservationStatus::Released);
        // Again: 200 unchanged (same updated_at); then confirm is 410.
        let Ok(Outcome::Released {
            hold: again,
            ended: false,
        }) = &a.outcomes[2]
        else {
            panic!("{:?}", a.outcomes[2])
        };
        assert_eq!((again.status, again.updated_at), (h.status, h.updated_at));
        assert!(matches!(a.outcomes[3], Err(AppError::Gone(_))));
        assert_eq!(a.writes.stock.get(&1), Some(&(7, 0)));
        assert_eq!(a.writes.hold_changes.len(), 1);

        // A confirmed hold cannot be released.
        let (id, l) = held(60);
        let a = allocate(
            &[
                Op::Confirm { id, caller: OWNER },
                Op::Release { id, caller: ADMIN },
            ],
            l,
        );
        assert!(matches!(a.outcomes[1], Err(AppError::Conflict { .. })));
    }

    #[test]
    fn expiry_takes_only_claimed_holds_that_are_still_active_and_due() {
        let (due, mut l) = held(-1);
        let (fresh, other) = held(60);
        l.holds.extend(other.holds);
        l.products.get_mut(&1).expect("product").reserved = 4;
        l.claimed = vec![due, fresh];
        let a = allocate(&[Op::Expire { limit: 10 }], l);
        assert!(matches!(a.outcomes[0], Ok(Outcome::Expired(1))));
        assert_eq!(a.writes.stock.get(&1), Some(&(7, 2)));
        assert_eq!(a.writes.hold_changes, [(due, ReservationStatus::Expired, None)]);
    }
}
