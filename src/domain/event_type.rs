use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// What an event reports. Webhook endpoints subscribe to a set of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EventType {
    #[serde(rename = "order.created")]
    OrderCreated,
    /// Any status change of an order, cancellations included.
    #[serde(rename = "order.status_changed")]
    OrderStatusChanged,
    #[serde(rename = "reservation.created")]
    ReservationCreated,
    #[serde(rename = "reservation.confirmed")]
    ReservationConfirmed,
    #[serde(rename = "reservation.released")]
    ReservationReleased,
    #[serde(rename = "reservation.expired")]
    ReservationExpired,
    /// A product's stock reached 0.
    #[serde(rename = "product.sold_out")]
    ProductSoldOut,
    /// A product's stock left 0.
    #[serde(rename = "product.back_in_stock")]
    ProductBackInStock,
    /// Sent to one endpoint on request (`POST /webhooks/{id}/ping`).
    #[serde(rename = "ping")]
    Ping,
}

impl EventType {
    pub const ALL: [Self; 9] = [
        Self::OrderCreated,
        Self::OrderStatusChanged,
        Self::ReservationCreated,
        Self::ReservationConfirmed,
        Self::ReservationReleased,
        Self::ReservationExpired,
        Self::ProductSoldOut,
        Self::ProductBackInStock,
        Self::Ping,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrderCreated => "order.created",
            Self::OrderStatusChanged => "order.status_changed",
            Self::ReservationCreated => "reservation.created",
            Self::ReservationConfirmed => "reservation.confirmed",
            Self::ReservationReleased => "reservation.released",
            Self::ReservationExpired => "reservation.expired",
            Self::ProductSoldOut => "product.sold_out",
            Self::ProductBackInStock => "product.back_in_stock",
            Self::Ping => "ping",
        }
    }

    fn bit(self) -> u16 {
        1 << self as u16
    }
}

text_column!(EventType);

impl FromStr for EventType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            let all: Vec<&str> = Self::ALL.iter().map(|t| t.as_str()).collect();
            format!("unknown event type; one of {}", all.join(", "))
        })
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of event types: the ones somebody receives, so that changes
/// nobody listens to write no event rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventTypes(u16);

impl EventTypes {
    /// Every type but `ping` (what a JetStream sink receives).
    pub const ALL_BUT_PING: Self = {
        let mut bits = 0;
        let mut i = 0;
        while i < EventType::ALL.len() {
            if !matches!(EventType::ALL[i], EventType::Ping) {
                bits |= 1 << i;
            }
            i += 1;
        }
        Self(bits)
    };

    pub fn contains(self, t: EventType) -> bool {
        self.0 & t.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl FromIterator<EventType> for EventTypes {
    fn from_iter<I: IntoIterator<Item = EventType>>(iter: I) -> Self {
        Self(iter.into_iter().fold(0, |bits, t| bits | t.bit()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text_and_json() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>(), Ok(t));
            assert_eq!(serde_json::to_string(&t).ok(), Some(format!("\"{t}\"")));
        }
        assert!("order.deleted".parse::<EventType>().is_err());
    }

    #[test]
    fn sets_hold_what_was_put_in() {
        let set: EventTypes = [EventType::OrderCreated, EventType::ProductSoldOut]
            .into_iter()
            .collect();
        assert!(set.contains(EventType::OrderCreated));
        assert!(set.contains(EventType::ProductSoldOut));
        assert!(!set.contains(EventType::OrderStatusChanged));
        assert!(EventTypes::default().is_empty());
        let sink = EventTypes::ALL_BUT_PING;
        assert!(!sink.contains(EventType::Ping));
        assert!(EventType::ALL[..8].iter().all(|t| sink.contains(*t)));
        assert!(EventTypes::default()
            .union(set)
            .contains(EventType::ProductSoldOut));
    }
}
