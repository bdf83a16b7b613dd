/// Units of one order line: 1..=1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(i32);

impl Quantity {
    pub const MAX: i64 = 1000;

    pub fn new(n: i64) -> Result<Self, &'static str> {
        if (1..=Self::MAX).contains(&n) {
            Ok(Self(n as i32))
        } else {
            Err("must be an integer between 1 and 1000")
        }
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

/// A stock movement for the admin stock endpoint: a non-zero integer that
/// fits the column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockDelta(i32);

impl StockDelta {
    pub fn new(n: i64) -> Result<Self, &'static str> {
        match i32::try_from(n) {
            Ok(0) => Err("must not be zero"),
            Ok(n) => Ok(Self(n)),
            Err(_) => Err("is out of range"),
        }
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

/// A stock level for a new product: 0..=i32::MAX.
pub fn parse_stock(n: i64) -> Result<i32, &'static str> {
    i32::try_from(n)
        .ok()
        .filter(|n| *n >= 0)
        .ok_or("must be an integer >= 0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert!(Quantity::new(0).is_err());
        assert!(Quantity::new(1001).is_err());
        assert_eq!(Quantity::new(1000).map(Quantity::get), Ok(1000));
        assert!(StockDelta::new(0).is_err());
        assert!(StockDelta::new(i64::from(i32::MAX) + 1).is_err());
        assert_eq!(StockDelta::new(-5).map(StockDelta::get), Ok(-5));
        assert!(parse_stock(-1).is_err());
        assert_eq!(parse_stock(7), Ok(7));
    }
}
