//! Pagination shared by every list endpoint: v1 offset pages and v2 keyset
//! pages with an opaque, HMAC-signed cursor (a tampered cursor is a 400).

use std::future::Future;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{AppError, FieldError};

pub const DEFAULT_LIMIT: i64 = 10;
pub const MAX_LIMIT: i64 = 100;

/// v1 offset pages must start before this row: the database reads and
/// discards every row before the offset, so a deep page costs as much as all
/// the pages before it. Deeper listings use v2 cursors, which cost the same
/// at any depth.
pub const MAX_OFFSET_ROWS: i64 = 10_000;

/// The error for an offset page starting at or beyond [`MAX_OFFSET_ROWS`].
pub const MAX_OFFSET_MESSAGE: &str = "Offset pagination stops at 10,000 rows; use /api/v2 with cursor";

/// Which API version served the request; only list endpoints differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    V1,
    V2,
}

/// The raw query parameters every list endpoint shares.
#[derive(Debug, Default, Deserialize)]
pub struct PageParams {
    pub page: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// A parsed page request. `K` is the keyset position type of the resource.
#[derive(Debug, Clone)]
pub enum PageRequest<K> {
    Offset { page: i64, limit: i64 },
    Keyset { after: Option<K>, limit: i64 },
}

/// A page of results, serialised as API.md's v1 or v2 `data` shape.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Page<T> {
    Offset {
        items: Vec<T>,
        page: i64,
        limit: i64,
        total: i64,
    },
    Keyset {
        items: Vec<T>,
        next_cursor: Option<String>,
    },
}

impl<T> Page<T> {
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        match self {
            Self::Offset {
                items,
                page,
                limit,
                total,
            } => Page::Offset {
                items: items.into_iter().map(f).collect(),
                page,
                limit,
                total,
            },
            Self::Keyset { items, next_cursor } => Page::Keyset {
                items: items.into_iter().map(f).collect(),
                next_cursor,
            },
        }
    }
}

/// What a listing must load to serve one page request.
pub enum Fetch<K> {
    /// Rows `offset .. offset + limit`, and the total count.
    Offset { offset: i64, limit: i64 },
    /// Up to `limit` rows after `after` (one more than the page: the extra
    /// row only says whether there is a next page); no total.
    Keyset { after: Option<K>, limit: i64 },
}

/// The keyset position of a newest-first listing (users, orders):
/// `created_at` in microseconds, then the id.
pub type NewestFirst = (i64, i64);

/// A newest-first position as the timestamp and id it stands for.
pub fn newest_first<Id>(after: Option<(i64, Id)>) -> Result<Option<(DateTime<Utc>, Id)>, AppError> {
    after
        .map(|(micros, id)| {
            DateTime::<Utc>::from_timestamp_micros(micros)
                .map(|ts| (ts, id))
                .ok_or_else(|| AppError::invalid_field("cursor", "is invalid or was tampered with"))
        })
        .transpose()
}

fn parse_int(
    field: &str,
    raw: Option<&str>,
    default: i64,
    min: i64,
    max: i64,
    errors: &mut Vec<FieldError>,
) -> i64 {
    match raw.map(str::trim) {
        None => default,
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => n,
            _ => {
                errors.push(FieldError::new(
                    field,
                    format!("must be an integer between {min} and {max}"),
                ));
                default
            }
        },
    }
}

/// Signs and verifies cursors. The key is derived from the JWT secret with a
/// distinct label, so a cursor can never be confused with a token.
#[derive(Clone)]
pub struct CursorCodec {
    key: Vec<u8>,
}

type HmacSha256 = Hmac<Sha256>;

#[derive(Serialize, Deserialize)]
struct Signed<K> {
    /// Which listing (resource and sort) the cursor belongs to.
    s: String,
    k: K,
}

impl CursorCodec {
    pub fn new(secret: &[u8]) -> Self {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
        mac.update(b"storefront pagination cursor v1");
        Self {
            key: mac.finalize().into_bytes().to_vec(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length")
    }

    pub fn encode<K: Serialize>(&self, scope: &str, key: &K) -> String {
        let payload = serde_json::to_vec(&Signed {
            s: scope.to_owned(),
            k: key,
        })
        .unwrap_or_default();
        let mut mac = self.mac();
        mac.update(&payload);
        let tag = mac.finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    pub fn decode<K: DeserializeOwned>(&self, scope: &str, cursor: &str) -> Option<K> {
        let (payload, tag) = cursor.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_slice(&tag).ok()?;
        let signed: Signed<K> = serde_json::from_slice(&payload).ok()?;
        (signed.s == scope).then_some(signed.k)
    }

    /// Parses the shared list parameters for `version`. `scope` names the
    /// listing (resource and sort), so a cursor from another listing is refused.
    pub fn page_request<K: DeserializeOwned>(
        &self,
        version: ApiVersion,
        params: &PageParams,
        scope: &str,
    ) -> Result<PageRequest<K>, AppError> {
        let mut errors = Vec::new();
        let limit = parse_int(
            "limit",
            params.limit.as_deref(),
            DEFAULT_LIMIT,
            1,
            MAX_LIMIT,
            &mut errors,
        );
        let request = match version {
            ApiVersion::V1 => {
                // Bounded so that offset * limit never overflows.
                let page = parse_int("page", params.page.as_deref(), 1, 1, 1_000_000, &mut errors);
                if errors.is_empty() && (page - 1) * limit >= MAX_OFFSET_ROWS {
                    return Err(AppError::BadRequest(MAX_OFFSET_MESSAGE.into()));
                }
                PageRequest::Offset { page, limit }
            }
            ApiVersion::V2 => {
                let after = match params.cursor.as_deref().map(str::trim) {
                    None | Some("") => None,
                    Some(c) => match self.decode(scope, c) {
                        Some(k) => Some(k),
                        None => {
                            errors.push(FieldError::new("cursor", "is invalid or was tampered with"));
                            None
                        }
                    },
                };
                PageRequest::Keyset { after, limit }
            }
        };
        if errors.is_empty() {
            Ok(request)
        } else {
            Err(AppError::Validation(errors))
        }
    }

    /// Serves one page request of the listing `scope`, for every list
    /// endpoint: `fetch` loads what it is asked for (rows and the total for
    /// an offset page; rows after a position for a keyset page, the total
    /// then ignored), the rest is the same everywhere.
    pub async fn serve<T, K, Fut>(
        &self,
        scope: &str,
        request: PageRequest<K>,
        key_of: impl Fn(&T) -> K,
        fetch: impl FnOnce(Fetch<K>) -> Fut,
    ) -> Result<Page<T>, AppError>
    where
        K: Serialize,
        Fut: Future<Output = Result<(Vec<T>, i64), AppError>>,
    {
        Ok(match request {
            PageRequest::Offset { page, limit } => {
                let (items, total) = fetch(Fetch::Offset {
                    offset: (page - 1) * limit,
                    limit,
                })
                .await?;
                Page::Offset {
                    items,
                    page,
                    limit,
                    total,
                }
            }
            PageRequest::Keyset { after, limit } => {
                let (rows, _) = fetch(Fetch::Keyset {
                    after,
                    limit: limit + 1,
                })
                .await?;
                self.keyset_page(scope, rows, limit, key_of)
            }
        })
    }

    /// Builds a keyset page from `limit + 1` fetched rows: the extra row only
    /// says whether there is a next page.
    fn keyset_page<T, K: Serialize>(
        &self,
        scope: &str,
        mut rows: Vec<T>,
        limit: i64,
        key_of: impl Fn(&T) -> K,
    ) -> Page<T> {
        let has_more = rows.len() as i64 > limit;
        rows.truncate(limit.max(0) as usize);
        let next_cursor = if has_more {
            rows.last().map(|last| self.encode(scope, &key_of(last)))
        } else {
            None
        };
        Page::Keyset {
            items: rows,
            next_cursor,
        }
    }
}

impl From<Vec<FieldError>> for AppError {
    fn from(errors: Vec<FieldError>) -> Self {
        AppError::Validation(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_tamper_detection() {
        let c = CursorCodec::new(b"secret");
        let cur = c.encode("users", &(123_i64, 7_i64));
        assert_eq!(c.decode::<(i64, i64)>("users", &cur), Some((123, 7)));
        // Another listing's cursor is refused.
        assert_eq!(c.decode::<(i64, i64)>("products:price", &cur), None);
        // A flipped payload byte is refused.
        let (payload, tag) = cur.split_once('.').expect("dot");
        let mut bytes = URL_SAFE_NO_PAD.decode(payload).expect("b64");
        bytes[10] ^= 1;
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(bytes));
        assert_eq!(c.decode::<(i64, i64)>("users", &forged), None);
        // A different key is refused.
        assert_eq!(
            CursorCodec::new(b"other").decode::<(i64, i64)>("users", &cur),
            None
        );
        assert_eq!(c.decode::<(i64, i64)>("users", "garbage"), None);
    }

    #[test]
    fn limits_are_bounded() {
        let c = CursorCodec::new(b"k");
        let p = |page: &str, limit: &str| PageParams {
            page: Some(page.into()),
            limit: Some(limit.into()),
            cursor: None,
        };
        assert!(c.page_request::<i64>(ApiVersion::V1, &p("1", "100"), "x").is_ok());
        let Err(AppError::Validation(errs)) = c.page_request::<i64>(ApiVersion::V1, &p("0", "101"), "x")
        else {
            panic!("invalid limit and page must be a validation error");
        };
        let fields: Vec<_> = errs.iter().filter_map(|e| e.field.clone()).collect();
        assert_eq!(fields, ["limit", "page"]);
        assert!(c
            .page_request::<i64>(ApiVersion::V1, &p("99999999999999999999", "1"), "x")
            .is_err());
        // Present but empty is not a number either (`?limit=`).
        assert!(c.page_request::<i64>(ApiVersion::V1, &p("1", ""), "x").is_err());
        assert!(c.page_request::<i64>(ApiVersion::V1, &p(" ", "10"), "x").is_err());
    }

    #[test]
    fn offset_pages_stop_at_row_ten_thousand() {
        let c = CursorCodec::new(b"k");
        let p = |page: &str, limit: &str| PageParams {
            page: Some(page.into()),
            limit: Some(limit.into()),
            cursor: None,
        };
        // Rows 9,990..9,999 and 9,900..9,999: the last pages allowed.
        for (page, limit) in [("1000", "10"), ("100", "100"), ("10000", "1")] {
            assert!(
                c.page_request::<i64>(ApiVersion::V1, &p(page, limit), "x")
                    .is_ok(),
                "page={page}&limit={limit}"
            );
        }
        for (page, limit) in [("1001", "10"), ("101", "100"), ("10001", "1"), ("1000000", "100")] {
            match c.page_request::<i64>(ApiVersion::V1, &p(page, limit), "x") {
                Err(AppError::BadRequest(message)) => {
                    assert_eq!(message, MAX_OFFSET_MESSAGE, "page={page}&limit={limit}")
                }
                other => panic!("page={page}&limit={limit}: {other:?}"),
            }
        }
        // Without a limit the default (10) counts.
        let deep = PageParams {
            page: Some("1001".into()),
            ..PageParams::default()
        };
        assert!(c.page_request::<i64>(ApiVersion::V1, &deep, "x").is_err());
        // v2 has no offsets: `page` is ignored there.
        assert!(c
            .page_request::<i64>(ApiVersion::V2, &p("1000000", "100"), "x")
            .is_ok());
    }

    #[test]
    fn keyset_page_has_a_cursor_only_when_more_rows_exist() {
        let c = CursorCodec::new(b"k");
        match c.keyset_page("s", vec![1_i64, 2, 3], 2, |r| *r) {
            Page::Keyset { items, next_cursor } => {
                assert_eq!(items, [1, 2]);
                assert_eq!(c.decode::<i64>("s", &next_cursor.expect("cursor")), Some(2));
            }
            Page::Offset { .. } => panic!("keyset expected"),
        }
        match c.keyset_page("s", vec![1_i64, 2], 2, |r| *r) {
            Page::Keyset { next_cursor, .. } => assert!(next_cursor.is_none()),
            Page::Offset { .. } => panic!("keyset expected"),
        }
    }
}
