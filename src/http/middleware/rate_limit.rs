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
//! The client is the TCP peer, or — only when the peer is one of
//! `server.trusted_proxies` — the right-most address in `X-Forwarded-For`
//! that is not itself a trusted proxy.

use std::{net::IpAddr, sync::LazyLock, time::Duration};

use actix_governor::{
    governor::{clock::QuantaInstant, middleware::NoOpMiddleware, NotUntil},
    GovernorConfig, GovernorConfigBuilder, KeyExtractor,
};
use actix_web::{
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{
        header::{HeaderName, HeaderValue, RETRY_AFTER},
        Method,
    },
    middleware::Next,
    web, Error, HttpMessage, HttpResponse, HttpResponseBuilder, ResponseError,
};

use crate::{cache::RedisHealth, config::RateLimitSettings, error::AppError};

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

    fn applies(self, method: &Method, path: &str) -> bool {
        match self {
            Self::Api => path.starts_with("/api/"),
            Self::Login => {
                method == Method::POST
                    && matches!(
                        path.trim_end_matches('/'),
                        "/api/v1/auth/login" | "/api/v2/auth/login" | "/api/auth/login"
                    )
            }
        }
    }
}

/// Settings and the Redis connection, shared by both limiters (app data).
#[derive(Clone)]
pub struct RateLimiter {
    pub settings: RateLimitSettings,
    pub trusted_proxies: Vec<IpAddr>,
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
        [Scope::Login, Scope::Api]
            .into_iter()
            .filter(|s| s.applies(req.method(), req.path()))
            .collect()
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

/// The client address a request is counted against.
pub fn client_ip(req: &ServiceRequest, trusted: &[IpAddr]) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .collect();
    for part in forwarded.iter().rev().flat_map(|h| h.rsplit(',')) {
        match part.trim().parse::<IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => continue,
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
    let client =
        client_ip(&req, &limiter.trusted_proxies).map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    let window = limiter.window();
    let mut invocation = SCRIPT.prepare_invoke();
    for scope in &scopes {
        invocation.key(format!("{}:rl:{}:{client}", health.prefix(), scope.name()));
    }
    invocation.arg(window.as_millis() as u64);
    let counts: Vec<i64> = match invocation.invoke_async(&mut conn).await {
        Ok(v) => v,
        Err(e) => {
            health.failed("rate limit", &e);
            return next.call(req).await.map(ServiceResponse::map_into_left_body);
        }
    };
    let decisions: Vec<Decision> = scopes
        .iter()
        .zip(counts.chunks(2))
        .map(|(scope, pair)| Decision {
            max: limiter.max(*scope),
            count: pair.first().copied().unwrap_or(0).max(0) as u64,
            reset_secs: (pair.get(1).copied().unwrap_or(0).max(0) as u64).div_ceil(1000),
            window_secs: window.as_secs(),
        })
        .collect();
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
        Ok(client_ip(req, &self.limiter.trusted_proxies))
    }

    fn exceed_rate_limit_response(
        &self,
        negative: &NotUntil<QuantaInstant>,
        _: HttpResponseBuilder,
    ) -> HttpResponse {
        use actix_governor::governor::clock::{Clock, DefaultClock};
        let wait = negative.wait_time_from(DefaultClock::default().now());
        too_many(&Decision {
            max: self.limiter.max(self.scope),
            count: u64::from(self.limiter.max(self.scope)) + 1,
            reset_secs: wait.as_secs_f64().ceil() as u64,
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
    fn scopes() {
        let post = Method::POST;
        assert!(Scope::Login.applies(&post, "/api/v1/auth/login"));
        assert!(Scope::Login.applies(&post, "/api/auth/login"));
        assert!(!Scope::Login.applies(&Method::GET, "/api/v1/auth/login"));
        assert!(Scope::Api.applies(&Method::GET, "/api/v1/products"));
        assert!(!Scope::Api.applies(&Method::GET, "/health/live"));
        assert!(!Scope::Api.applies(&Method::GET, "/apiary"));
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
        let proxy: IpAddr = "10.0.0.1".parse().expect("ip");
        let req = |peer: &str, xff: &str| {
            TestRequest::default()
                .peer_addr(format!("{peer}:1234").parse().expect("addr"))
                .insert_header(("x-forwarded-for", xff))
                .to_srv_request()
        };
        // Untrusted peer: the header is ignored.
        assert_eq!(
            client_ip(&req("1.2.3.4", "9.9.9.9"), &[proxy]),
            "1.2.3.4".parse().ok()
        );
        // Trusted proxy: the right-most untrusted address.
        assert_eq!(
            client_ip(&req("10.0.0.1", "6.6.6.6, 9.9.9.9"), &[proxy]),
            "9.9.9.9".parse().ok()
        );
        assert_eq!(
            client_ip(&req("10.0.0.1", "9.9.9.9, 10.0.0.1"), &[proxy]),
            "9.9.9.9".parse().ok()
        );
        // Garbage: fall back to the peer.
        assert_eq!(
            client_ip(&req("10.0.0.1", "nonsense"), &[proxy]),
            "10.0.0.1".parse().ok()
        );
    }
}
