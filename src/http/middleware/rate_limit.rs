//! Rate limiting: `POST …/auth/login` 5 and everything under `/api/` 100 per
//! 15 minutes per client (configurable, `rate_limit.*`).
//!
//! - With Redis up, `shared` enforces the limits for all instances at once:
//!   a fixed window per (scope, client) counted by one atomic Lua script
//!   (`INCR`, `PEXPIRE` on the first hit, `PTTL`), one round trip for every
//!   scope of the request. Requests it admitted are marked, and the
//!   in-process limiter lets them through.
//! - Without Redis, or while it is unreachable, actix-governor's in-process
//!   GCRA limiter (burst = the limit, one request back every window/limit)
//!   enforces the same limits per instance.
//!
//! The limits apply to the resource the router serves, however the path is
//! spelled: percent-encoded, with duplicate or trailing slashes, under v1, v2
//! or unversioned. A self-service check of `current_password` counts against
//! the login limit too (`count_login`).
//!
//! The client is the TCP peer, or — only when the peer is within
//! `server.trusted_proxies` — the right-most address in `X-Forwarded-For`
//! that is not itself a trusted proxy. IPv6 clients are counted by their
//! `rate_limit.ipv6_prefix` (a /64 by default).

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::LazyLock,
    time::Duration,
};

use actix_governor::{
    governor::{clock::QuantaInstant, middleware::NoOpMiddleware, NotUntil},
    GovernorConfig, GovernorConfigBuilder, KeyExtractor,
};
use actix_web::{
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{
        header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER},
        Method,
    },
    middleware::Next,
    web, Error, HttpMessage, HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError,
};

use crate::{
    cache::RedisHealth,
    config::{RateLimitSettings, TrustedProxy},
    error::AppError,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Api,
    Login,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Login => "login",
        }
    }

    /// `path` as `routed_path` gives it.
    fn applies(self, method: &Method, path: &str) -> bool {
        match self {
            Self::Api => path == "/api" || path.starts_with("/api/"),
            Self::Login => method == Method::POST && path == "/api/auth/login",
        }
    }
}

/// The path as the router sees it, with the version taken out: percent-
/// decoded, duplicate slashes collapsed, no trailing slash, and
/// `/api/v1/...`, `/api/v2/...` written `/api/...`. So `/%61pi//v1/auth/%6Cogin/`
/// counts as `/api/auth/login`.
fn routed_path(raw: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    let segments: Vec<&str> = decoded.split('/').filter(|s| !s.is_empty()).collect();
    let segments = match segments.as_slice() {
        ["api", "v1" | "v2", rest @ ..] => std::iter::once("api").chain(rest.iter().copied()).collect(),
        _ => segments,
    };
    format!("/{}", segments.join("/"))
}

/// Settings and the Redis connection, shared by both limiters (app data).
#[derive(Clone)]
pub struct RateLimiter {
    pub settings: RateLimitSettings,
    pub trusted_proxies: Vec<TrustedProxy>,
    /// `None` without Redis.
    pub redis: Option<RedisHealth>,
}

impl RateLimiter {
    fn max(&self, scope: Scope) -> u32 {
        match scope {
            Scope::Api => self.settings.api_max,
            Scope::Login => self.settings.auth_max,
        }
        .max(1)
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.settings.window_secs.max(1))
    }

    fn scopes(&self, req: &ServiceRequest) -> Vec<Scope> {
        if !self.settings.enabled {
            return Vec::new();
        }
        let path = routed_path(req.path());
        [Scope::Login, Scope::Api]
            .into_iter()
            .filter(|s| s.applies(req.method(), &path))
            .collect()
    }

    /// The key a request is counted under: the client address, IPv6 cut to
    /// `rate_limit.ipv6_prefix`.
    fn client(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        client_ip(peer?.ip(), headers, &self.trusted_proxies).map(|ip| match ip {
            IpAddr::V6(v6) => {
                let bits = u32::from(self.settings.ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
            v4 => v4,
        })
    }

    /// The in-process limiter's configuration for `scope`. Build it once:
    /// every `Governor::new(&config)` made from it shares one limiter.
    pub fn governor_config(
        &self,
        scope: Scope,
    ) -> GovernorConfig<ScopedClient, NoOpMiddleware<QuantaInstant>> {
        let max = self.max(scope);
        // A limit above a billion per second would round the period to zero,
        // which the builder refuses: one nanosecond is as fast as it goes.
        let period = (self.window() / max).max(Duration::from_nanos(1));
        let config = GovernorConfigBuilder::default()
            .period(period)
            .burst_size(max)
            .key_extractor(ScopedClient {
                scope,
                limiter: self.clone(),
            })
            .finish()
            .expect("period and burst size are non-zero");
        config
    }
}

/// The client address of a request from `peer`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[TrustedProxy]) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|t| t.0.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .collect();
    for part in forwarded.iter().rev().flat_map(|h| h.rsplit(',')) {
        match part.trim().parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => continue,
            Ok(ip) => return Some(ip),
            // Garbage from the client side of the chain: stop believing it.
            Err(_) => break,
        }
    }
    Some(peer)
}

/// Marks a request the shared (Redis) limiter already admitted.
#[derive(Clone, Copy)]
struct AdmittedGlobally;

/// What one limit says about one request.
struct Decision {
    max: u32,
    count: u64,
    reset_secs: u64,
    window_secs: u64,
}

impl Decision {
    fn remaining(&self) -> u64 {
        u64::from(self.max).saturating_sub(self.count)
    }
}

fn header(name: &'static str, value: impl ToString) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_str(&value.to_string()).unwrap_or(HeaderValue::from_static("0")),
    )
}

fn limit_headers(d: &Decision) -> [(HeaderName, HeaderValue); 4] {
    [
        header("ratelimit-limit", d.max),
        header("ratelimit-remaining", d.remaining()),
        header("ratelimit-reset", d.reset_secs),
        header("ratelimit-policy", format!("{};w={}", d.max, d.window_secs)),
    ]
}

/// The 429: the envelope, `Retry-After` and the `RateLimit-*` headers.
fn too_many(d: &Decision) -> HttpResponse {
    let mut res = AppError::TooManyRequests {
        retry_after_secs: d.reset_secs.max(1),
    }
    .error_response();
    for (name, value) in limit_headers(d) {
        res.headers_mut().insert(name, value);
    }
    res.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(d.reset_secs.max(1)));
    res
}

/// Counts KEYS[i] within a window of ARGV[1] ms; returns {count, pttl} per key.
const COUNT: &str = r"
local out = {}
for i = 1, #KEYS do
  local c = redis.call('INCR', KEYS[i])
  local t = redis.call('PTTL', KEYS[i])
  if c == 1 or t < 0 then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
    t = tonumber(ARGV[1])
  end
  out[#out + 1] = c
  out[#out + 1] = t
end
return out
";

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(COUNT));

impl RateLimiter {
    /// Counts one request of `client` in each of `scopes` in Redis; `None`
    /// when Redis failed (the in-process limiter then counts).
    async fn count_shared(
        &self,
        health: &RedisHealth,
        conn: &mut redis::aio::ConnectionManager,
        scopes: &[Scope],
        client: Option<IpAddr>,
    ) -> Option<Vec<Decision>> {
        let client = client.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        let window = self.window();
        let mut invocation = SCRIPT.prepare_invoke();
        for scope in scopes {
            invocation.key(format!("{}:rl:{}:{client}", health.prefix(), scope.name()));
        }
        invocation.arg(window.as_millis() as u64);
        let counts: Vec<i64> = match invocation.invoke_async(conn).await {
            Ok(v) => v,
            Err(e) => {
                health.failed("rate limit", &e);
                return None;
            }
        };
        Some(
            scopes
                .iter()
                .zip(counts.chunks(2))
                .map(|(scope, pair)| Decision {
                    max: self.max(*scope),
                    count: pair.first().copied().unwrap_or(0).max(0) as u64,
                    reset_secs: (pair.get(1).copied().unwrap_or(0).max(0) as u64).div_ceil(1000),
                    window_secs: window.as_secs(),
                })
                .collect(),
        )
    }
}

/// The in-process login limiter, shared with handlers (app data) so that a
/// password check outside `POST …/auth/login` counts against it too.
#[derive(Clone)]
pub struct LoginLimit(pub GovernorConfig<ScopedClient, NoOpMiddleware<QuantaInstant>>);

/// Counts one password check by the caller of `req` against the login limit
/// (a self-service change of email or password gives `current_password`):
/// 429 once the limit is spent, exactly as `POST …/auth/login` would.
pub async fn count_login(req: &HttpRequest) -> Result<(), AppError> {
    let (Some(limiter), Some(login)) = (
        req.app_data::<web::Data<RateLimiter>>(),
        req.app_data::<web::Data<LoginLimit>>(),
    ) else {
        return Ok(());
    };
    if !limiter.settings.enabled {
        return Ok(());
    }
    let client = limiter.client(req.peer_addr(), req.headers());
    if let Some(health) = &limiter.redis {
        if let Some(mut conn) = health.connection() {
            if let Some(decisions) = limiter
                .count_shared(health, &mut conn, &[Scope::Login], client)
                .await
            {
                return match decisions.first() {
                    Some(d) if d.count > u64::from(d.max) => Err(AppError::TooManyRequests {
                        retry_after_secs: d.reset_secs.max(1),
                    }),
                    _ => Ok(()),
                };
            }
        }
    }
    login
        .0
        .limiter()
        .check_key(&client)
        .map_err(|negative| AppError::TooManyRequests {
            retry_after_secs: wait_secs(&negative).max(1),
        })
}

/// Whole seconds until the in-process limiter admits the client again.
fn wait_secs(negative: &NotUntil<QuantaInstant>) -> u64 {
    use actix_governor::governor::clock::{Clock, DefaultClock};
    negative
        .wait_time_from(DefaultClock::default().now())
        .as_secs_f64()
        .ceil() as u64
}

/// The shared limiter (middleware). Falls through to the in-process one when
/// Redis is not configured or not reachable.
pub async fn shared(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let limiter = req.app_data::<web::Data<RateLimiter>>().cloned();
    let Some(limiter) = limiter else {
        return next.call(req).await.map(ServiceResponse::map_into_left_body);
    };
    let scopes = limiter.scopes(&req);
    let (Some(health), false) = (&limiter.redis, scopes.is_empty()) else {
        return next.call(req).await.map(ServiceResponse::map_into_left_body);
    };
    let Some(mut conn) = health.connection() else {
        return next.call(req).await.map(ServiceResponse::map_into_left_body);
    };
    let client = limiter.client(req.peer_addr(), req.headers());
    let Some(decisions) = limiter.count_shared(health, &mut conn, &scopes, client).await else {
        return next.call(req).await.map(ServiceResponse::map_into_left_body);
    };
    if let Some(exceeded) = decisions.iter().find(|d| d.count > u64::from(d.max)) {
        let res = too_many(exceeded);
        return Ok(req.into_response(res).map_into_right_body());
    }
    req.extensions_mut().insert(AdmittedGlobally);
    let mut res = next.call(req).await?;
    if let Some(tightest) = decisions.iter().min_by_key(|d| d.remaining()) {
        for (name, value) in limit_headers(tightest) {
            res.headers_mut().insert(name, value);
        }
    }
    Ok(res.map_into_left_body())
}

/// actix-governor key: the client address for requests in `scope` that the
/// shared limiter did not already admit; `None` (never limited) otherwise.
#[derive(Clone)]
pub struct ScopedClient {
    scope: Scope,
    limiter: RateLimiter,
}

#[derive(Debug, thiserror::Error)]
#[error("unreachable")]
pub struct NoKeyError;

impl ResponseError for NoKeyError {}

impl KeyExtractor for ScopedClient {
    type Key = Option<IpAddr>;
    type KeyExtractionError = NoKeyError;

    fn extract(&self, req: &ServiceRequest) -> Result<Self::Key, Self::KeyExtractionError> {
        if !self.limiter.scopes(req).contains(&self.scope) || req.extensions().contains::<AdmittedGlobally>()
        {
            return Ok(None);
        }
        Ok(self.limiter.client(req.peer_addr(), req.headers()))
    }

    fn exceed_rate_limit_response(
        &self,
        negative: &NotUntil<QuantaInstant>,
        _: HttpResponseBuilder,
    ) -> HttpResponse {
        too_many(&Decision {
            max: self.limiter.max(self.scope),
            count: u64::from(self.limiter.max(self.scope)) + 1,
            reset_secs: wait_secs(negative),
            window_secs: self.limiter.window().as_secs(),
        })
    }

    fn whitelisted_keys(&self) -> Vec<Self::Key> {
        vec![None]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn scopes_follow_the_routed_path_whatever_its_spelling() {
        let post = Method::POST;
        let login = |p: &str| Scope::Login.applies(&post, &routed_path(p));
        for spelling in [
            "/api/v1/auth/login",
            "/api/v2/auth/login",
            "/api/auth/login",
            "/api/v1/auth/login/",
            "/api/v1/auth/%6Cogin",
            "/%61pi/v1/auth/login",
            "/api/%76%31/auth/login",
            "//api//v1///auth/login//",
        ] {
            assert!(login(spelling), "{spelling}");
        }
        assert!(!Scope::Login.applies(&Method::GET, &routed_path("/api/v1/auth/login")));
        assert!(!login("/api/v1/auth/logout"));
        let api = |p: &str| Scope::Api.applies(&Method::GET, &routed_path(p));
        assert!(api("/api/v1/products") && api("/%61pi/products") && api("//api/v2"));
        assert!(!api("/health/live") && !api("/apiary"));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_prefix() {
        let limiter = |prefix| RateLimiter {
            settings: RateLimitSettings {
                enabled: true,
                api_max: 1,
                auth_max: 1,
                window_secs: 1,
                ipv6_prefix: prefix,
            },
            trusted_proxies: Vec::new(),
            redis: None,
        };
        let key = |l: &RateLimiter, ip: &str| {
            l.client(
                Some(SocketAddr::new(ip.parse().expect("ip"), 1)),
                &HeaderMap::new(),
            )
        };
        let l = limiter(64);
        assert_eq!(key(&l, "2001:db8:1:2:aaaa::1"), key(&l, "2001:db8:1:2:ffff::9"));
        assert_ne!(key(&l, "2001:db8:1:2::1"), key(&l, "2001:db8:1:3::1"));
        assert_eq!(key(&l, "192.0.2.7"), "192.0.2.7".parse().ok());
        let each = limiter(128);
        assert_ne!(key(&each, "2001:db8::1"), key(&each, "2001:db8::2"));
    }

    #[test]
    fn any_configured_limit_builds_a_limiter() {
        for (api_max, window_secs) in [(0, 0), (1, 1), (100, 900), (u32::MAX, 1)] {
            let limiter = RateLimiter {
                settings: RateLimitSettings {
                    enabled: true,
                    api_max,
                    auth_max: api_max,
                    window_secs,
                    ipv6_prefix: 64,
                },
                trusted_proxies: Vec::new(),
                redis: None,
            };
            let _ = limiter.governor_config(Scope::Api);
            let _ = limiter.governor_config(Scope::Login);
        }
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let proxy: TrustedProxy = "10.0.0.1".parse().expect("proxy");
        let req = |peer: &str, xff: &str| {
            let r = TestRequest::default()
                .insert_header(("x-forwarded-for", xff))
                .to_srv_request();
            (peer.parse::<IpAddr>().expect("ip"), r.headers().clone())
        };
        let client_ip = |(peer, headers): (IpAddr, HeaderMap), trusted: &[TrustedProxy]| {
            client_ip(peer, &headers, trusted)
        };
        // Untrusted peer: the header is ignored.
        assert_eq!(
            client_ip(req("1.2.3.4", "9.9.9.9"), &[proxy]),
            "1.2.3.4".parse().ok()
        );
        // Trusted proxy: the right-most untrusted address.
        assert_eq!(
            client_ip(req("10.0.0.1", "6.6.6.6, 9.9.9.9"), &[proxy]),
            "9.9.9.9".parse().ok()
        );
        assert_eq!(
            client_ip(req("10.0.0.1", "9.9.9.9, 10.0.0.1"), &[proxy]),
            "9.9.9.9".parse().ok()
        );
        // Garbage: fall back to the peer.
        assert_eq!(
            client_ip(req("10.0.0.1", "nonsense"), &[proxy]),
            "10.0.0.1".parse().ok()
        );
        // A CIDR range of proxies.
        let range: TrustedProxy = "10.0.0.0/8".parse().expect("range");
        assert_eq!(
            client_ip(req("10.9.8.7", "9.9.9.9, 10.1.1.1"), &[range]),
            "9.9.9.9".parse().ok()
        );
        assert!("10.0.0.0/33".parse::<TrustedProxy>().is_err());
    }
}
