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

    fn parse<T, E: ToString>(
        &mut self,
        field: &str,
        raw: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        match parse(raw) {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.push(FieldError::new(field, e.to_string()));
                None
            }
        }
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
