//! `X-Request-Id`: a valid incoming id is echoed, otherwise a new UUID; the id
//! is stored in the request extensions (for the log span) and set on every
//! response, errors included.

use actix_web::{
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header::{HeaderName, HeaderValue},
    middleware::Next,
    Error, HttpMessage,
};

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// 1..=128 characters of `[A-Za-z0-9._-]`: nothing that could forge a log line
/// or a header.
fn is_valid(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = req
        .headers()
        .get(&HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let value = HeaderValue::from_str(&id).ok();
    let mut res = next.call(req).await?;
    if let Some(value) = value {
        res.headers_mut().insert(HEADER, value);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    #[test]
    fn validity() {
        assert!(super::is_valid("abc-123_X.y"));
        assert!(!super::is_valid(""));
        assert!(!super::is_valid("a b"));
        assert!(!super::is_valid("a\r\nb"));
        assert!(!super::is_valid(&"a".repeat(129)));
    }
}
