use std::fmt;

/// A password meeting the policy: 8..128 characters with a lowercase letter,
/// an uppercase letter and a digit. Never printed.
pub struct Password(String);

impl Password {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let len = raw.chars().count();
        if !(8..=128).contains(&len) {
            return Err("must be between 8 and 128 characters");
        }
        if !raw.chars().any(|c| c.is_lowercase())
            || !raw.chars().any(|c| c.is_uppercase())
            || !raw.chars().any(|c| c.is_ascii_digit())
        {
            return Err("must contain a lowercase letter, an uppercase letter and a digit");
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::Password;

    #[test]
    fn policy() {
        assert!(Password::parse("Passw0rd").is_ok());
        assert!(Password::parse("Pa0").is_err());
        assert!(Password::parse("password1").is_err());
        assert!(Password::parse("PASSWORD1").is_err());
        assert!(Password::parse("Password").is_err());
        assert!(Password::parse(&format!("Aa1{}", "x".repeat(126))).is_err());
        assert!(Password::parse(&format!("Aa1{}", "x".repeat(125))).is_ok());
    }

    #[test]
    fn debug_hides_the_value() {
        let p = Password::parse("Secret123").expect("valid");
        assert!(!format!("{p:?}").contains("Secret123"));
    }
}
