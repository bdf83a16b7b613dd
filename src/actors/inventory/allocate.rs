//! The pure part of a batch: given the locked rows, decide each request in
//! arrival order, all-or-nothing per order, and collect what to write.

use std::collections::{BTreeMap, HashMap};

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};

use crate::{
    auth::AuthUser,
    domain::OrderStatus,
    error::{AppError, FieldError},
    models::order::{OrderItem, OrderView},
};

/// One order line after duplicates were summed; `index` is the position of
/// the product's first line in the request (for error fields).
#[derive(Debug, Clone)]
pub struct Line {
    pub product_id: i64,
    pub quantity: i32,
    pub index: usize,
}

#[derive(Debug)]
pub enum Op {
    Place {
        user_id: i64,
        lines: Vec<Line>,
        idempotency_key: Option<String>,
    },
    Cancel {
        order_id: i64,
        caller: AuthUser,
    },
    Adjust {
        product_id: i64,
        delta: i32,
    },
}

#[derive(Debug)]
pub enum Outcome {
    Placed(OrderView),
    Cancelled(OrderView),
    Adjusted { product_id: i64, stock_quantity: i32 },
}

#[derive(Debug, Clone)]
pub struct Locked {
    pub price: BigDecimal,
    pub stock: i32,
    pub is_active: bool,
}

/// Everything one batch writes, as column arrays for the multi-row statement.
#[derive(Debug, Default)]
pub struct Writes {
    pub stock: BTreeMap<i64, i32>,
    pub orders: Vec<OrderView>,
    pub cancelled: Vec<i64>,
    /// Idempotency keys completed by the placed orders: (user_id, key, the
    /// order's index in `orders`).
    pub idempotency: Vec<(i64, String, usize)>,
}

pub struct Allocation {
    pub outcomes: Vec<Result<Outcome, AppError>>,
    pub writes: Writes,
}

/// Decides every op. `products` holds the locked rows; `orders` the locked
/// orders that cancels refer to; `inactive` the callers whose accounts are
/// deactivated (refused with 401); `order_ids` / `item_ids` are preallocated
/// sequence values; `now` is the transaction's timestamp.
pub fn allocate(
    ops: &[Op],
    mut products: HashMap<i64, Locked>,
    mut orders: HashMap<i64, OrderView>,
    inactive: &[i64],
    order_ids: &[i64],
    item_ids: &[i64],
    now: DateTime<Utc>,
) -> Allocation {
    let mut writes = Writes::default();
    let mut next_order = order_ids.iter().copied();
    let mut next_item = item_ids.iter().copied();
    let mut outcomes = Vec::with_capacity(ops.len());

    for op in ops {
        let caller = match op {
            Op::Place { user_id, .. } => Some(*user_id),
            Op::Cancel { caller, .. } => Some(caller.id),
            Op::Adjust { .. } => None,
        };
        if caller.is_some_and(|id| inactive.contains(&id)) {
            outcomes.push(Err(AppError::Unauthorized("Account is deactivated".into())));
            continue;
        }
        let outcome = match op {
            Op::Place {
                user_id,
                lines,
                idempotency_key,
            } => {
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
                let short: Vec<FieldError> = lines
                    .iter()
                    .filter(|l| products.get(&l.product_id).is_some_and(|p| p.stock < l.quantity))
                    .map(|l| FieldError::new(format!("items[{}].product_id", l.index), "insufficient stock"))
                    .collect();
                if !unknown.is_empty() {
                    Err(AppError::unprocessable(
                        "Order references unknown or inactive products",
                        unknown,
                    ))
                } else if !short.is_empty() {
                    Err(AppError::Conflict {
                        message: "Insufficient stock".into(),
                        errors: short,
                    })
                } else {
                    match (
                        next_order.next(),
                        lines
                            .iter()
                            .map(|_| next_item.next())
                            .collect::<Option<Vec<i64>>>(),
                    ) {
                        (Some(order_id), Some(ids)) => {
                            let mut total = BigDecimal::from(0);
                            let mut items = Vec::with_capacity(lines.len());
                            for (line, item_id) in lines.iter().zip(ids) {
                                let p = products.get_mut(&line.product_id).expect("checked above");
                                p.stock -= line.quantity;
                                writes.stock.insert(line.product_id, p.stock);
                                total += &p.price * BigDecimal::from(line.quantity);
                                items.push(OrderItem {
                                    id: item_id,
                                    order_id,
                                    product_id: line.product_id,
                                    quantity: line.quantity,
                                    unit_price: p.price.clone(),
                                });
                            }
                            let view = OrderView {
                                id: order_id,
                                user_id: *user_id,
                                status: OrderStatus::Pending,
                                total_amount: total.with_scale(2),
                                items,
                                created_at: now,
                                updated_at: now,
                            };
                            if let Some(key) = idempotency_key {
                                writes
                                    .idempotency
                                    .push((*user_id, key.clone(), writes.orders.len()));
                            }
                            writes.orders.push(view.clone());
                            Ok(Outcome::Placed(view))
                        }
                        _ => Err(AppError::internal(anyhow::anyhow!(
                            "batch ran out of preallocated ids"
                        ))),
                    }
                }
            }
            Op::Cancel { order_id, caller } => {
                cancel(*order_id, *caller, &mut orders, &mut products, &mut writes, now)
            }
            Op::Adjust { product_id, delta } => match products.get_mut(product_id) {
                None => Err(AppError::NotFound("Product not found".into())),
                Some(p) => match p.stock.checked_add(*delta) {
                    Some(s) if s >= 0 => {
                        p.stock = s;
                        writes.stock.insert(*product_id, s);
                        Ok(Outcome::Adjusted {
                            product_id: *product_id,
                            stock_quantity: s,
                        })
                    }
                    Some(_) => Err(AppError::Conflict {
                        message: "Stock cannot go below zero".into(),
                        errors: vec![FieldError::new(
                            "delta",
                            format!("would leave stock at {}", i64::from(p.stock) + i64::from(*delta)),
                        )],
                    }),
                    None => Err(AppError::invalid_field("delta", "is out of range")),
                },
            },
        };
        outcomes.push(outcome);
    }
    Allocation { outcomes, writes }
}

fn cancel(
    order_id: i64,
    caller: AuthUser,
    orders: &mut HashMap<i64, OrderView>,
    products: &mut HashMap<i64, Locked>,
    writes: &mut Writes,
    now: DateTime<Utc>,
) -> Result<Outcome, AppError> {
    let not_found = || AppError::NotFound("Order not found".into());
    let order = orders.get_mut(&order_id).ok_or_else(not_found)?;
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
    for item in &order.items {
        let p = products
            .get_mut(&item.product_id)
            .ok_or_else(|| AppError::internal(anyhow::anyhow!("order item product not locked")))?;
        p.stock = p
            .stock
            .checked_add(item.quantity)
            .ok_or_else(|| AppError::conflict("Restock would overflow the stock counter"))?;
        writes.stock.insert(item.product_id, p.stock);
    }
    order.status = OrderStatus::Cancelled;
    order.updated_at = now;
    writes.cancelled.push(order_id);
    Ok(Outcome::Cancelled(order.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(stock: i32) -> Locked {
        Locked {
            price: "2.50".parse().expect("decimal"),
            stock,
            is_active: true,
        }
    }

    fn place(user_id: i64, lines: &[(i64, i32)]) -> Op {
        Op::Place {
            user_id,
            lines: lines
                .iter()
                .enumerate()
                .map(|(index, (product_id, quantity))| Line {
                    product_id: *product_id,
                    quantity: *quantity,
                    index,
                })
                .collect(),
            idempotency_key: None,
        }
    }

    #[test]
    fn allocates_in_arrival_order_all_or_nothing() {
        let products = HashMap::from([(1, product(3)), (2, product(1))]);
        let ops = [
            place(7, &[(1, 2)]),
            place(7, &[(1, 1), (2, 2)]),
            place(7, &[(1, 1), (2, 1)]),
            place(7, &[(1, 1)]),
        ];
        let a = allocate(
            &ops,
            products,
            HashMap::new(),
            &[],
            &[10, 11, 12, 13],
            &[20, 21, 22, 23, 24, 25],
            Utc::now(),
        );
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
        assert_eq!(a.writes.stock, BTreeMap::from([(1, 0), (2, 0)]));
        assert_eq!(a.writes.orders.len(), 2);
        let Ok(Outcome::Placed(o)) = &a.outcomes[0] else {
            unreachable!()
        };
        assert_eq!(o.total_amount.to_string(), "5.00");
        assert_eq!(o.items[0].id, 20);
    }

    #[test]
    fn deactivated_callers_are_refused_and_take_nothing() {
        let a = allocate(
            &[place(7, &[(1, 1)]), place(8, &[(1, 1)])],
            HashMap::from([(1, product(1))]),
            HashMap::new(),
            &[7],
            &[10, 11],
            &[20, 21],
            Utc::now(),
        );
        assert!(matches!(a.outcomes[0], Err(AppError::Unauthorized(_))));
        assert!(matches!(a.outcomes[1], Ok(Outcome::Placed(_))));
        assert_eq!(a.writes.stock.get(&1), Some(&0));
    }

    #[test]
    fn unknown_or_inactive_products_are_422() {
        let mut inactive = product(5);
        inactive.is_active = false;
        let a = allocate(
            &[place(1, &[(1, 1), (9, 1)])],
            HashMap::from([(1, inactive)]),
            HashMap::new(),
            &[],
            &[1],
            &[1, 2],
            Utc::now(),
        );
        match &a.outcomes[0] {
            Err(AppError::Unprocessable { errors, .. }) => assert_eq!(errors.len(), 2),
            other => panic!("{other:?}"),
        }
        assert!(a.writes.stock.is_empty());
    }

    #[test]
    fn adjust_never_goes_negative() {
        let a = allocate(
            &[
                Op::Adjust {
                    product_id: 1,
                    delta: -3,
                },
                Op::Adjust {
                    product_id: 1,
                    delta: -1,
                },
                Op::Adjust {
                    product_id: 2,
                    delta: 1,
                },
            ],
            HashMap::from([(1, product(3))]),
            HashMap::new(),
            &[],
            &[],
            &[],
            Utc::now(),
        );
        assert!(matches!(
            a.outcomes[0],
            Ok(Outcome::Adjusted {
                stock_quantity: 0,
                ..
            })
        ));
        assert!(matches!(a.outcomes[1], Err(AppError::Conflict { .. })));
        assert!(matches!(a.outcomes[2], Err(AppError::NotFound(_))));
    }

    #[test]
    fn cancel_rules() {
        use crate::domain::{OrderStatus::*, Role};
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
        let owner = AuthUser {
            id: 7,
            role: Role::User,
        };
        let stranger = AuthUser {
            id: 8,
            role: Role::User,
        };
        let admin = AuthUser {
            id: 1,
            role: Role::Admin,
        };
        let run = |status: OrderStatus, caller| {
            allocate(
                &[Op::Cancel { order_id: 5, caller }],
                HashMap::from([(1, product(0))]),
                HashMap::from([(5, order(status))]),
                &[],
                &[],
                &[],
                Utc::now(),
            )
        };
        let a = run(Pending, owner);
        assert!(matches!(a.outcomes[0], Ok(Outcome::Cancelled(_))));
        assert_eq!(a.writes.stock.get(&1), Some(&2));
        assert!(matches!(
            run(Pending, stranger).outcomes[0],
            Err(AppError::NotFound(_))
        ));
        assert!(matches!(
            run(Paid, owner).outcomes[0],
            Err(AppError::Conflict { .. })
        ));
        assert!(matches!(run(Paid, admin).outcomes[0], Ok(Outcome::Cancelled(_))));
        assert!(matches!(
            run(Shipped, admin).outcomes[0],
            Err(AppError::Conflict { .. })
        ));
        assert!(matches!(
            run(Cancelled, admin).outcomes[0],
            Err(AppError::Conflict { .. })
        ));
        // A second cancel of the same order in one batch is refused.
        let a = allocate(
            &[
                Op::Cancel {
                    order_id: 5,
                    caller: owner,
                },
                Op::Cancel {
                    order_id: 5,
                    caller: owner,
                },
            ],
            HashMap::from([(1, product(0))]),
            HashMap::from([(5, order(Pending))]),
            &[],
            &[],
            &[],
            Utc::now(),
        );
        assert!(matches!(a.outcomes[1], Err(AppError::Conflict { .. })));
        assert_eq!(a.writes.stock.get(&1), Some(&2));
    }
}
