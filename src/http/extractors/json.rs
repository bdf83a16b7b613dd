//! `JsonBody<T>`: a JSON request body with API.md's failure statuses —
//! not JSON 415, too large 413, malformed 400 — and, for a value of the wrong
//! type, a 400 naming the offending field (`items[0].quantity`).

use std::{future::Future, pin::Pin};

use actix_web::{
    dev::Payload,
    error::PayloadError,
    http::header,
    web::{self, Bytes},
    FromRequest, HttpMessage, HttpRequest,
};
use serde::de::DeserializeOwned;

use crate::error::{AppError, FieldError};

/// Largest body accepted; set as app data from `server.json_limit`.
#[derive(Debug, Clone, Copy)]
pub struct JsonLimit(pub usize);

pub struct JsonBody<T>(pub T);

/// JSON nesting deeper than this is refused before parsing (serde_json's own
/// recursion limit is 128; this keeps error messages ours).
const MAX_DEPTH: usize = 64;

/// Most values (array elements and object members) a body may hold. The
/// largest legitimate body, an order of 100 lines, holds about 300. Some
/// fields are read as generic JSON first (to name every bad field), and a
/// generic value costs ~25 times its text: counted before parsing, a body of
/// tiny values at the size limit is refused without building any of them.
const MAX_VALUES: usize = 4096;

/// What the pre-parse scan found wrong with a body, if anything.
#[derive(Debug, PartialEq, Eq)]
enum Shape {
    Fine,
    TooDeep,
    TooManyValues,
}

fn shape(bytes: &[u8]) -> Shape {
    let mut depth = 0usize;
    let mut values = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Shape::TooDeep;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            // Every element or member after the first of its container.
            b',' => {
                values += 1;
                if values > MAX_VALUES {
                    return Shape::TooManyValues;
                }
            }
            _ => {}
        }
    }
    Shape::Fine
}

pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(AppError::BadRequest("Request body is required".into()));
    }
    // JSON is UTF-8 (RFC 8259); serde_json would not check strings it skips.
    if std::str::from_utf8(bytes).is_err() {
        return Err(AppError::BadRequest("Request body is not valid UTF-8".into()));
    }
    // Every body is an object; serde would also read a struct from an array.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(AppError::BadRequest("Request body must be a JSON object".into()));
    }
    match shape(bytes) {
        Shape::Fine => {}
        Shape::TooDeep => {
            return Err(AppError::BadRequest(format!(
                "JSON nesting deeper than {MAX_DEPTH} levels"
            )))
        }
        Shape::TooManyValues => {
            return Err(AppError::BadRequest(format!(
                "Request body holds more than {MAX_VALUES} JSON values"
            )))
        }
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() && path != "." {
            AppError::Validation(vec![FieldError::new(path, expected(&inner.to_string()))])
        } else {
            AppError::BadRequest("Malformed JSON in request body".into())
        }
    })
}

/// What a field must be, from serde's description of a mismatch ("invalid
/// type: integer `31415`, expected a string at line 1 column 9"): the expected
/// type only, never the rejected value, which may be a password.
fn expected(serde_message: &str) -> String {
    let message = serde_message.split(" at line ").next().unwrap_or_default();
    if let Some(field) = message.strip_prefix("missing field ") {
        return format!("is required ({field})");
    }
    match message.rsplit_once(", expected ") {
        Some((_, what)) if !what.contains('`') || what.starts_with("one of") => format!("must be {what}"),
        _ => "has an invalid value".to_owned(),
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AppError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req.app_data::<JsonLimit>().map_or(10 * 1024 * 1024, |l| l.0);
        let is_json = req
            .mime_type()
            .ok()
            .flatten()
            .is_some_and(|m| m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json"));
        if !is_json {
            return Box::pin(async {
                Err(AppError::UnsupportedMediaType(
                    "Content-Type must be application/json".into(),
                ))
            });
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Box::pin(async move { Err(too_large(limit)) });
        }
        let body = web::Bytes::from_request(req, payload);
        let fut = async move {
            let bytes: Bytes = body.await.map_err(|e| match e.as_error::<PayloadError>() {
                Some(PayloadError::Overflow) => too_large(limit),
                _ => AppError::BadRequest("Could not read request body".into()),
            })?;
            if bytes.len() > limit {
                return Err(too_large(limit));
            }
            parse(&bytes).map(JsonBody)
        };
        Box::pin(fut)
    }
}

fn too_large(limit: usize) -> AppError {
    AppError::PayloadTooLarge(format!("Request body exceeds {limit} bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Item {
        quantity: i32,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Body {
        items: Vec<Item>,
    }

    #[test]
    fn type_errors_name_the_field() {
        match parse::<Body>(br#"{"items":[{"quantity":1},{"quantity":"x"}]}"#) {
            Err(AppError::Validation(errs)) => {
                assert_eq!(errs[0].field.as_deref(), Some("items[1].quantity"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn type_errors_name_the_expected_type_never_the_value() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Login {
            password: String,
        }
        match parse::<Login>(br#"{"password": 31415926535897}"#) {
            Err(AppError::Validation(errs)) => {
                assert_eq!(errs[0].field.as_deref(), Some("password"));
                assert_eq!(errs[0].message, "must be a string");
            }
            other => panic!("unexpected {other:?}"),
        }
        match parse::<Body>(br#"{"items":[{"quantity":"Secret-123"}]}"#) {
            Err(AppError::Validation(errs)) => {
                assert!(!errs[0].message.contains("Secret"), "{errs:?}");
                assert_eq!(errs[0].message, "must be i32");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn malformed_and_deep_json_are_bad_requests() {
        assert!(matches!(parse::<Body>(b"{"), Err(AppError::BadRequest(_))));
        assert!(matches!(parse::<Body>(b""), Err(AppError::BadRequest(_))));
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(matches!(
            parse::<serde_json::Value>(deep.as_bytes()),
            Err(AppError::BadRequest(_))
        ));
        // Brackets inside strings do not count.
        let s = format!(r#"{{"items":[], "x":"{}"}}"#, "[".repeat(100));
        assert!(parse::<Body>(s.as_bytes()).is_ok());
    }

    #[test]
    fn bodies_of_countless_tiny_values_are_refused_before_parsing() {
        let line = r#"{"quantity":1}"#;
        let body = |n: usize| format!(r#"{{"items":[{}]}}"#, vec![line; n].join(","));
        // A 100-line order is far below the bound.
        assert!(parse::<Body>(body(100).as_bytes()).is_ok());
        assert!(matches!(
            parse::<Body>(body(5000).as_bytes()),
            Err(AppError::BadRequest(m)) if m.contains("more than")
        ));
        // Commas inside strings do not count.
        let s = format!(r#"{{"items":[], "x":"{}"}}"#, ",".repeat(10_000));
        assert!(parse::<Body>(s.as_bytes()).is_ok());
    }
}
