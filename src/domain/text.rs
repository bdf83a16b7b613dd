/// Trimmed text of bounded length without control characters (except
/// newlines and tabs when `multiline`).
pub fn bounded(raw: &str, min: usize, max: usize, multiline: bool) -> Result<String, String> {
    let s = raw.trim();
    let len = s.chars().count();
    if len < min || len > max {
        return Err(if min <= 1 {
            format!("must be between 1 and {max} characters")
        } else {
            format!("must be between {min} and {max} characters")
        });
    }
    if s.chars()
        .any(|c| c.is_control() && !(multiline && (c == '\n' || c == '\t' || c == '\r')))
    {
        return Err("must not contain control characters".into());
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn bounds_and_controls() {
        assert_eq!(super::bounded("  a ", 1, 3, false), Ok("a".into()));
        assert!(super::bounded("   ", 1, 3, false).is_err());
        assert!(super::bounded("abcd", 1, 3, false).is_err());
        assert!(super::bounded("a\nb", 1, 5, false).is_err());
        assert!(super::bounded("a\nb", 1, 5, true).is_ok());
        assert!(super::bounded("a\0b", 1, 5, true).is_err());
    }
}
