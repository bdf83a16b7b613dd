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

/// A random (v4) UUID from a per-thread generator seeded once from the OS:
/// request ids need to be unique, not secret, and `Uuid::new_v4` costs a
/// `getrandom` system call per request.
fn new_id() -> uuid::Uuid {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(uuid::Uuid::new_v4().as_u64_pair().0 | 1);
    }
    // splitmix64, twice for 128 bits.
    let next = || {
        STATE.with(|s| {
            let x = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
            s.set(x);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
    };
    let bytes = (u128::from(next()) << 64 | u128::from(next())).to_be_bytes();
    uuid::Builder::from_random_bytes(bytes).into_uuid()
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
        .unwrap_or_else(|| new_id().to_string());
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

    #[test]
    fn generated_ids_are_distinct_v4_uuids() {
        let ids: std::collections::HashSet<uuid::Uuid> = (0..10_000).map(|_| super::new_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| id.get_version_num() == 4));
    }
}
