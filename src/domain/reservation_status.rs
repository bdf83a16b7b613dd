use std::{fmt, str::FromStr};

use serde::Serialize;

/// A checkout hold's life: `active`, then exactly one of `confirmed` (it
/// became an order), `released` (by its owner or an admin) or `expired`.
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
pub enum ReservationStatus {
    Active,
    Confirmed,
    Released,
    Expired,
}

impl ReservationStatus {
    pub const ALL: [Self; 4] = [Self::Active, Self::Confirmed, Self::Released, Self::Expired];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Confirmed => "confirmed",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }
}

text_column!(ReservationStatus);

impl FromStr for ReservationStatus {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or("must be one of active, confirmed, released, expired")
    }
}

impl fmt::Display for ReservationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        for s in ReservationStatus::ALL {
            assert_eq!(s.as_str().parse::<ReservationStatus>(), Ok(s));
        }
        assert!("pending".parse::<ReservationStatus>().is_err());
    }
}
