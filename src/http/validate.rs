//! Collects every field error of a request body before answering, so a 400
//! names all offending fields at once.

use crate::error::{AppError, FieldError};

#[derive(Default)]
pub struct Fields {
    errors: Vec<FieldError>,
}

impl Fields {
    pub fn new() -> Self {
        Self::default()
    }

    /// A field that must be present and parse.
    pub fn required<T, E: ToString>(
        &mut self,
        field: &str,
        raw: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        self.required_parsed(field, raw.map(parse))
    }

    /// A field that may be absent, but must parse when present.
    pub fn optional<T, E: ToString>(
        &mut self,
        field: &str,
        raw: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        self.optional_parsed(field, raw.map(parse))
    }

    /// A field parsed beforehand (an async check, a typed value): `None`
    /// when absent, which is an error.
    pub fn required_parsed<T, E: ToString>(
        &mut self,
        field: &str,
        parsed: Option<Result<T, E>>,
    ) -> Option<T> {
        if parsed.is_none() {
            self.errors.push(FieldError::new(field, "is required"));
        }
        self.optional_parsed(field, parsed)
    }

    /// A field parsed beforehand that may be absent.
    pub fn optional_parsed<T, E: ToString>(
        &mut self,
        field: &str,
        parsed: Option<Result<T, E>>,
    ) -> Option<T> {
        match parsed? {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.push(FieldError::new(field, e.to_string()));
                None
            }
        }
    }

    /// A JSON value that must be present (not null) and parse.
    pub fn required_value<T, E: ToString>(
        &mut self,
        field: &str,
        raw: Option<&serde_json::Value>,
        parse: impl FnOnce(&serde_json::Value) -> Result<T, E>,
    ) -> Option<T> {
        self.required_parsed(field, raw.filter(|v| !v.is_null()).map(parse))
    }

    /// A JSON value that may be absent or null, but must parse otherwise.
    pub fn optional_value<T, E: ToString>(
        &mut self,
        field: &str,
        raw: Option<&serde_json::Value>,
        parse: impl FnOnce(&serde_json::Value) -> Result<T, E>,
    ) -> Option<T> {
        self.optional_parsed(field, raw.filter(|v| !v.is_null()).map(parse))
    }

    pub fn push(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// `Ok(())` when nothing failed, else a 400 naming every field.
    pub fn finish(self) -> Result<(), AppError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(AppError::Validation(self.errors))
        }
    }
}

/// Unwraps a value `Fields` has vouched for (only called after `finish`).
pub fn checked<T>(v: Option<T>) -> Result<T, AppError> {
    v.ok_or_else(|| AppError::internal(anyhow::anyhow!("validated field missing")))
}

/// Distinguishes an absent field (`None`) from an explicit `null`
/// (`Some(None)`), for fields that can be cleared.
pub fn double_option<'de, T, D>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    serde::Deserialize::deserialize(de).map(Some)
}

/// An integer field: JSON integers only, within `i64`.
pub fn integer(v: &serde_json::Value) -> Result<i64, &'static str> {
    v.as_i64().ok_or("must be an integer")
}

/// A list field of a request body that stops at its bound while it is
/// parsed: up to `N` elements are kept (as generic JSON, to name every bad
/// field); past them, the rest is skipped without being built.
#[derive(Debug)]
pub enum BoundedList<const N: usize> {
    Items(Vec<serde_json::Value>),
    /// More than `N` elements.
    TooLong,
    /// Not an array.
    NotList,
}

impl<'de, const N: usize> serde::Deserialize<'de> for BoundedList<N> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BoundedVisitor::<N>)
    }
}

struct BoundedVisitor<const N: usize>;

impl<'de, const N: usize> serde::de::Visitor<'de> for BoundedVisitor<N> {
    type Value = BoundedList<N>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "an array of at most {N} elements")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<serde_json::Value>()? {
            if items.len() == N {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                return Ok(BoundedList::TooLong);
            }
            items.push(item);
        }
        Ok(BoundedList::Items(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(BoundedList::NotList)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(BoundedList::NotList)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(BoundedList::NotList)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(BoundedList::NotList)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(BoundedList::NotList)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(BoundedList::NotList)
    }
}

#[cfg(test)]
mod bounded_tests {
    use super::BoundedList;

    #[test]
    fn a_bounded_list_stops_at_its_bound() {
        let parse = |s: &str| serde_json::from_str::<BoundedList<2>>(s).expect("json");
        assert!(matches!(parse("[1, 2]"), BoundedList::Items(v) if v.len() == 2));
        assert!(matches!(parse("[1, 2, 3, {\"a\": [4]}]"), BoundedList::TooLong));
        assert!(matches!(parse("{\"a\": 1}"), BoundedList::NotList));
        assert!(matches!(parse("\"x\""), BoundedList::NotList));
        assert!(matches!(parse("7"), BoundedList::NotList));
    }
}
