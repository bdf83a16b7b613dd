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
        match raw {
            None => {
                self.errors.push(FieldError::new(field, "is required"));
                None
            }
            Some(raw) => self.parse(field, raw, parse),
        }
    }

    /// A field that may be absent, but must parse when present.
    pub fn optional<T, E: ToString>(
        &mut self,
        field: &str,
        raw: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        raw.and_then(|raw| self.parse(field, raw, parse))
    }

    fn parse<R: ?Sized, T, E: ToString>(
        &mut self,
        field: &str,
        raw: &R,
        parse: impl FnOnce(&R) -> Result<T, E>,
    ) -> Option<T> {
        match parse(raw) {
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
        match raw.filter(|v| !v.is_null()) {
            None => {
                self.errors.push(FieldError::new(field, "is required"));
                None
            }
            Some(v) => self.parse(field, v, parse),
        }
    }

    /// A JSON value that may be absent or null, but must parse otherwise.
    pub fn optional_value<T, E: ToString>(
        &mut self,
        field: &str,
        raw: Option<&serde_json::Value>,
        parse: impl FnOnce(&serde_json::Value) -> Result<T, E>,
    ) -> Option<T> {
        raw.filter(|v| !v.is_null())
            .and_then(|v| self.parse(field, v, parse))
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
