/// A display name: 2..50 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let s = raw.trim();
        let len = s.chars().count();
        if !(2..=50).contains(&len) {
            return Err("must be between 2 and 50 characters");
        }
        if s.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::UserName;

    #[test]
    fn trims_and_bounds() {
        assert_eq!(UserName::parse("  Al  ").expect("valid").as_str(), "Al");
        assert!(UserName::parse(" A ").is_err());
        assert!(UserName::parse(&"x".repeat(51)).is_err());
        assert!(UserName::parse(&"é".repeat(50)).is_ok());
        assert!(UserName::parse("ab\ncd").is_err());
    }
}
