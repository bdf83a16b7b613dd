use std::{fmt, str::FromStr};

use bigdecimal::BigDecimal;
use serde::{Serialize, Serializer};

/// An amount of money: > 0, at most two decimals, fits `DECIMAL(10,2)`.
/// Clients send a string or a number; it is always sent back as a string with
/// exactly two decimals.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Money(BigDecimal);

/// Largest value `DECIMAL(10,2)` holds.
const MAX: &str = "99999999.99";

impl Money {
    /// Parses a JSON value (string or number).
    pub fn from_json(v: &serde_json::Value) -> Result<Self, &'static str> {
        match v {
            serde_json::Value::String(s) => Self::parse(s),
            // serde_json prints the shortest representation that round-trips,
            // so 19.99 arrives as "19.99".
            serde_json::Value::Number(n) => Self::parse(&n.to_string()),
            _ => Err("must be a decimal number or a string such as \"19.99\""),
        }
    }

    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let s = raw.trim();
        if s.is_empty()
            || s.len() > 32
            || !s
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.' || c == '-' || c == '+')
        {
            return Err("must be a decimal number such as \"19.99\"");
        }
        let d = BigDecimal::from_str(s).map_err(|_| "must be a decimal number such as \"19.99\"")?;
        if d.sign() != bigdecimal::num_bigint::Sign::Plus {
            return Err("must be greater than 0");
        }
        if d.fractional_digit_count() > 2 && d.with_scale(2) != d {
            return Err("must have at most two decimal places");
        }
        if d > BigDecimal::from_str(MAX).expect("constant") {
            return Err("must be at most 99999999.99");
        }
        Ok(Self(d.with_scale(2)))
    }

    pub fn into_decimal(self) -> BigDecimal {
        self.0
    }
}

/// Formats any stored amount with exactly two decimals.
pub fn format_amount(d: &BigDecimal) -> String {
    d.with_scale_round(2, bigdecimal::RoundingMode::HalfEven)
        .to_plain_string()
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_amount(&self.0))
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Money({self})")
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// `#[serde(serialize_with = "money::serialize")]` for `BigDecimal` fields.
pub fn serialize<S: Serializer>(d: &BigDecimal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_amount(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_strings_and_numbers() {
        assert_eq!(
            Money::from_json(&json!("19.99")).expect("ok").to_string(),
            "19.99"
        );
        assert_eq!(Money::from_json(&json!(19.99)).expect("ok").to_string(), "19.99");
        assert_eq!(Money::from_json(&json!(5)).expect("ok").to_string(), "5.00");
        assert_eq!(Money::from_json(&json!("0.1")).expect("ok").to_string(), "0.10");
        assert_eq!(Money::from_json(&json!("1.50")).expect("ok").to_string(), "1.50");
        assert_eq!(
            Money::from_json(&json!("99999999.99")).expect("ok").to_string(),
            "99999999.99"
        );
        assert_eq!(Money::from_json(&json!("2.500")).expect("ok").to_string(), "2.50");
    }

    #[test]
    fn rejects_out_of_range_and_garbage() {
        for bad in [
            json!("0"),
            json!(0),
            json!(-1),
            json!("-0.01"),
            json!("1.999"),
            json!("100000000.00"),
            json!("abc"),
            json!("1e3"),
            json!(null),
            json!(true),
            json!(""),
            json!("NaN"),
            json!("1;DROP TABLE products"),
        ] {
            assert!(Money::from_json(&bad).is_err(), "{bad} accepted");
        }
    }
}
