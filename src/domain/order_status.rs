use std::{fmt, str::FromStr};

use serde::Serialize;

/// The order status machine, in one place: `pending → paid → shipped →
/// delivered`, and `pending | paid → cancelled`; an owner may cancel only
/// while `pending`, an admin while `pending` or `paid`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    diesel::expression::AsExpression,
    diesel::deserialize::FromSqlRow,
)]
#[diesel(sql_type = diesel::sql_types::Text)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Pending,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Paid,
        Self::Shipped,
        Self::Delivered,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Paid => "paid",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn can_become(self, next: Self) -> bool {
        use OrderStatus::*;
        matches!(
            (self, next),
            (Pending, Paid) | (Paid, Shipped) | (Shipped, Delivered) | (Pending | Paid, Cancelled)
        )
    }

    /// Whether the order's owner (`by_admin` false) or an admin may cancel it.
    pub fn cancellable(self, by_admin: bool) -> bool {
        match self {
            Self::Pending => true,
            Self::Paid => by_admin,
            _ => false,
        }
    }
}

text_column!(OrderStatus);

impl FromStr for OrderStatus {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or("must be one of pending, paid, shipped, delivered, cancelled")
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::OrderStatus::{self, *};

    #[test]
    fn transition_table() {
        let allowed = [
            (Pending, Paid),
            (Paid, Shipped),
            (Shipped, Delivered),
            (Pending, Cancelled),
            (Paid, Cancelled),
        ];
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn owners_cancel_only_pending_orders() {
        for s in OrderStatus::ALL {
            assert_eq!(s.cancellable(false), s == Pending, "{s}");
            assert_eq!(s.cancellable(true), matches!(s, Pending | Paid), "{s}");
            assert!(!s.cancellable(true) || s.can_become(Cancelled));
        }
    }
}
