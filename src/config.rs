//! Typed settings, layered: `config/default.toml`, `config/{APP_ENVIRONMENT}.toml`,
//! the conventional variables (`DATABASE_URL`, `PORT`, ...), then `APP__SECTION__KEY`.

use std::{collections::HashMap, fmt, path::Path};

use config::{Map, Source, Value, ValueKind};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Test,
    Production,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Test => "test",
            Self::Production => "production",
        }
    }
}

impl TryFrom<String> for Environment {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        match s.to_lowercase().as_str() {
            "development" | "dev" | "local" => Ok(Self::Development),
            "test" => Ok(Self::Test),
            "production" | "prod" => Ok(Self::Production),
            other => Err(format!(
                "APP_ENVIRONMENT={other} is not one of development, test, production"
            )),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub cache: CacheSettings,
    pub inventory: InventorySettings,
    pub orders: OrderSettings,
    pub reservations: ReservationSettings,
    pub webhooks: WebhookSettings,
    pub events: EventSettings,
    pub auth: AuthSettings,
    pub rate_limit: RateLimitSettings,
    pub oauth: OAuthSettings,
    pub log: LogSettings,
    pub metrics: MetricsSettings,
    #[serde(skip, default = "default_env")]
    pub environment: Environment,
}

fn default_env() -> Environment {
    Environment::Development
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub workers: usize,
    pub json_limit: usize,
    /// Peers whose `X-Forwarded-For` is believed: addresses or CIDR ranges.
    pub trusted_proxies: Vec<TrustedProxy>,
    pub allowed_origins: Vec<String>,
    pub shutdown_timeout_secs: u64,
    pub bench_endpoints: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub acquire_timeout_ms: u64,
    pub migrate_on_start: bool,
    pub pools: PoolsSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PoolsSettings {
    pub user: PoolSettings,
    pub inventory: PoolSettings,
    pub order: PoolSettings,
    pub catalog: PoolSettings,
    pub reads: PoolSettings,
    pub webhooks: PoolSettings,
    pub jetstream: PoolSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PoolSettings {
    pub max_size: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CacheSettings {
    pub enabled: bool,
    pub ttl_secs: u64,
    pub local_capacity: u64,
    /// Search terms whose exact `total` is remembered per catalog version
    /// (`models::product::SearchTotals`); 0 counts every search.
    pub search_totals: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InventorySettings {
    pub max_batch: usize,
    pub max_wait_us: u64,
    pub max_queue: usize,
    pub max_in_flight: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OrderSettings {
    pub idempotency_ttl_secs: u64,
    pub idempotency_stale_secs: u64,
}

/// Checkout holds: lifetimes a client may ask for, the per-user limit and
/// the expiry sweep.
#[derive(Debug, Clone, Deserialize)]
pub struct ReservationSettings {
    pub ttl_secs: i64,
    pub min_ttl_secs: i64,
    pub max_ttl_secs: i64,
    pub max_active_per_user: usize,
    pub expiry_interval_ms: u64,
    pub expiry_batch: usize,
}

/// Webhook delivery.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookSettings {
    pub timeout_ms: u64,
    pub max_age_secs: u64,
    pub allow_private_targets: bool,
    /// Delays before the 2nd, 3rd, ... attempt; the last repeats.
    pub retry_schedule_secs: Vec<u64>,
    /// Attempts in flight per endpoint, per instance.
    pub max_in_flight: usize,
    /// How often each instance looks for due deliveries when nothing wakes it.
    pub poll_interval_ms: u64,
    /// Delivered and failed events are deleted this long after they were written.
    pub retention_secs: u64,
    /// How often each instance prunes.
    pub prune_interval_secs: u64,
}

/// The outbox's other reader: NATS JetStream.
#[derive(Debug, Clone, Deserialize)]
pub struct EventSettings {
    /// Empty: no JetStream sink.
    pub nats_url: String,
    pub nats_stream: String,
    pub nats_subject_prefix: String,
    /// Events one publish round takes.
    pub publish_batch: i64,
}

impl EventSettings {
    pub fn nats_url(&self) -> Option<&str> {
        Some(self.nats_url.trim()).filter(|u| !u.is_empty())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct MetricsSettings {
    /// When set, `GET /metrics` requires `Authorization: Bearer <this>`.
    pub bearer_token: SecretString,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RedisSettings {
    pub url: SecretString,
    pub prefix: String,
}

impl RedisSettings {
    /// `None` when Redis is not configured (in-process fallbacks are used).
    pub fn url(&self) -> Option<&str> {
        let url = self.url.expose_secret().trim();
        (!url.is_empty()).then_some(url)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    pub jwt_secret: SecretString,
    pub issuer: String,
    pub audience: String,
    pub access_ttl_secs: u64,
    pub refresh_ttl_secs: u64,
    pub hash_concurrency: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub api_max: u32,
    pub auth_max: u32,
    pub window_secs: u64,
    /// IPv6 clients are counted by this prefix of their address (a /64 is
    /// one allocation: rotating within it does not reset the counter).
    pub ipv6_prefix: u8,
}

/// A trusted proxy: one address (`10.0.0.1`) or a CIDR range (`10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedProxy(pub ipnet::IpNet);

mod repository {
    // Every long string of this repository's text files (build.rs).
    include!(concat!(env!("OUT_DIR"), "/published.rs"));
}

/// Whether `secret` appears in this repository (so in anyone's hands).
pub(crate) fn published(secret: &str) -> bool {
    let secret = secret.trim();
    secret.len() >= 8
        && repository::PUBLISHED
            .iter()
            .any(|t| t.contains(secret) || secret.contains(t))
}

impl std::str::FromStr for TrustedProxy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        s.parse::<ipnet::IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map(Self)
            .map_err(|_| format!("server.trusted_proxies: {s:?} is neither an IP address nor a CIDR range"))
    }
}

impl<'de> Deserialize<'de> for TrustedProxy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct OAuthSettings {
    pub google: OAuthProviderSettings,
}

#[derive(Clone, Deserialize)]
pub struct OAuthProviderSettings {
    pub client_id: String,
    pub client_secret: SecretString,
    pub auth_url: String,
    pub token_url: String,
    pub userinfo_url: String,
    pub redirect_url: String,
    pub success_redirect: String,
    pub failure_redirect: String,
    pub timeout_ms: u64,
}

impl OAuthProviderSettings {
    /// Login with this provider is possible only with a client id and secret.
    pub fn is_configured(&self) -> bool {
        !self.client_id.trim().is_empty() && !self.client_secret.expose_secret().trim().is_empty()
    }
}

impl fmt::Debug for OAuthProviderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthProviderSettings")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("auth_url", &self.auth_url)
            .field("token_url", &self.token_url)
            .field("userinfo_url", &self.userinfo_url)
            .field("redirect_url", &self.redirect_url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("{0}")]
    Invalid(String),
}

/// The conventional variables, mapped onto their keys. They sit between the
/// files and `APP__...`, so an explicit `APP__DATABASE__URL` still wins.
const CONVENTIONAL: &[(&str, &str)] = &[
    ("DATABASE_URL", "database.url"),
    ("REDIS_URL", "redis.url"),
    ("NATS_URL", "events.nats_url"),
    ("JWT_SECRET", "auth.jwt_secret"),
    ("PORT", "server.port"),
    ("ALLOWED_ORIGINS", "server.allowed_origins"),
    ("GOOGLE_CLIENT_ID", "oauth.google.client_id"),
    ("GOOGLE_CLIENT_SECRET", "oauth.google.client_secret"),
];

#[derive(Debug, Clone)]
struct Conventional(HashMap<String, String>);

impl Source for Conventional {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, config::ConfigError> {
        let origin = "environment".to_string();
        let mut map = Map::new();
        for (var, key) in CONVENTIONAL {
            let Some(raw) = self.0.get(*var) else { continue };
            let kind = match *key {
                "server.allowed_origins" => ValueKind::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| Value::new(Some(&origin), s.to_string()))
                        .collect(),
                ),
                _ => ValueKind::String(raw.clone()),
            };
            map.insert((*key).to_string(), Value::new(Some(&origin), kind));
        }
        Ok(map)
    }
}

impl Settings {
    /// Loads settings from `config/` under the current directory (or
    /// `STOREFRONT_CONFIG_DIR`) and the process environment.
    pub fn load() -> Result<Self, SettingsError> {
        let dir = std::env::var("STOREFRONT_CONFIG_DIR").unwrap_or_else(|_| {
            // Fall back to the crate's own config/ so the binary works from any cwd
            // inside a checkout.
            if Path::new("config/default.toml").exists() {
                "config".into()
            } else {
                concat!(env!("CARGO_MANIFEST_DIR"), "/config").into()
            }
        });
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::load_from(Path::new(&dir), &env)
    }

    /// Loads from an explicit directory and variable set (tests use this to
    /// stay independent of the process environment).
    pub fn load_from(dir: &Path, vars: &HashMap<String, String>) -> Result<Self, SettingsError> {
        let environment: Environment = vars
            .get("APP_ENVIRONMENT")
            .cloned()
            .unwrap_or_else(|| "development".into())
            .try_into()
            .map_err(SettingsError::Invalid)?;
        let app_vars: Map<String, String> = vars
            .iter()
            .filter(|(k, _)| k.starts_with("APP__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let built = config::Config::builder()
            .add_source(config::File::from(dir.join("default.toml")))
            .add_source(
                config::File::from(dir.join(format!("{}.toml", environment.as_str()))).required(false),
            )
            .add_source(Conventional(vars.clone()))
            .add_source(
                config::Environment::with_prefix("APP")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("server.trusted_proxies")
                    .with_list_parse_key("server.allowed_origins")
                    .with_list_parse_key("webhooks.retry_schedule_secs")
                    .source(Some(app_vars)),
            )
            .build()?;
        let mut settings: Settings = built.try_deserialize()?;
        settings.environment = environment;
        settings.check()?;
        Ok(settings)
    }

    fn check(&mut self) -> Result<(), SettingsError> {
        let secret_len = self.auth.jwt_secret.expose_secret().len();
        if self.environment == Environment::Production && published(self.auth.jwt_secret.expose_secret()) {
            return Err(SettingsError::Invalid(
                "auth.jwt_secret (JWT_SECRET) is published in storefront's repository (an example or test \
                 secret): anyone could sign tokens with it. Generate one: openssl rand -hex 32"
                    .into(),
            ));
        }
        if secret_len < 32 {
            if self.environment == Environment::Production {
                return Err(SettingsError::Invalid(format!(
                    "auth.jwt_secret (JWT_SECRET) must be at least 32 bytes in production; it is {secret_len}"
                )));
            }
            if secret_len > 0 {
                return Err(SettingsError::Invalid(format!(
                    "auth.jwt_secret (JWT_SECRET) must be at least 32 bytes; it is {secret_len} (leave it empty in development for a random one)"
                )));
            }
            // Development without a secret: a random one for this process only.
            let random: [u8; 32] = rand::random();
            use base64::Engine;
            self.auth.jwt_secret = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(random)
                .into();
        }
        let mut errors = Vec::new();
        self.check_ranges(&mut errors);
        let r = &self.reservations;
        if !(r.min_ttl_secs <= r.ttl_secs && r.ttl_secs <= r.max_ttl_secs) {
            errors.push(format!(
                "reservations: need min_ttl_secs ({}) <= ttl_secs ({}) <= max_ttl_secs ({})",
                r.min_ttl_secs, r.ttl_secs, r.max_ttl_secs
            ));
        }
        if self.webhooks.retry_schedule_secs.is_empty() {
            errors.push("webhooks.retry_schedule_secs needs at least one delay".into());
        }
        if self.events.nats_url().is_some() {
            let subject = &self.events.nats_subject_prefix;
            if self.events.nats_stream.is_empty() || subject.is_empty() || subject.contains(['*', '>', ' ']) {
                errors.push(
                    "events: nats_stream and nats_subject_prefix must be set (the prefix without wildcards \
                     or spaces)"
                        .into(),
                );
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SettingsError::Invalid(errors.join("; ")))
        }
    }

    /// Every numeric setting within the range its users can handle: a value
    /// beyond it (a TTL too long for a `chrono` duration, a zero interval for
    /// a timer) would otherwise be accepted here and panic at first use.
    /// Bounds beyond the technical limits are generous sanity limits: a
    /// value outside them is a typo, not a deployment choice.
    fn check_ranges(&self, errors: &mut Vec<String>) {
        const MINUTE: i128 = 60;
        const HOUR: i128 = 60 * MINUTE;
        const DAY: i128 = 24 * HOUR;
        const YEAR: i128 = 365 * DAY;
        let mut range = |key: &str, value: i128, min: i128, max: i128| {
            if !(min..=max).contains(&value) {
                errors.push(format!("{key} must be between {min} and {max}; it is {value}"));
            }
        };
        // Every field below is at most 64 bits wide, so it fits an i128.
        let n = |v: u64| i128::from(v);
        let z = |v: usize| i128::try_from(v).unwrap_or(i128::MAX);

        let server = &self.server;
        range("server.port", i128::from(server.port), 0, 65_535);
        range("server.workers", z(server.workers), 0, 1024);
        range("server.json_limit", z(server.json_limit), 1, 1 << 30);
        range(
            "server.shutdown_timeout_secs",
            n(server.shutdown_timeout_secs),
            0,
            HOUR,
        );

        let database = &self.database;
        range(
            "database.acquire_timeout_ms",
            n(database.acquire_timeout_ms),
            1,
            10 * MINUTE * 1000,
        );
        let pools = &database.pools;
        for (name, pool) in [
            ("user", &pools.user),
            ("inventory", &pools.inventory),
            ("order", &pools.order),
            ("catalog", &pools.catalog),
            ("reads", &pools.reads),
            ("webhooks", &pools.webhooks),
            ("jetstream", &pools.jetstream),
        ] {
            range(
                &format!("database.pools.{name}.max_size"),
                i128::from(pool.max_size),
                1,
                1000,
            );
        }

        let cache = &self.cache;
        range("cache.ttl_secs", n(cache.ttl_secs), 1, 30 * DAY);
        range("cache.local_capacity", n(cache.local_capacity), 1, 100_000_000);
        range("cache.search_totals", n(cache.search_totals), 0, 100_000_000);

        let inventory = &self.inventory;
        range("inventory.max_batch", z(inventory.max_batch), 1, 10_000);
        range("inventory.max_wait_us", n(inventory.max_wait_us), 0, 1_000_000);
        range("inventory.max_queue", z(inventory.max_queue), 1, 100_000_000);
        range("inventory.max_in_flight", z(inventory.max_in_flight), 1, 1000);

        let orders = &self.orders;
        range(
            "orders.idempotency_ttl_secs",
            n(orders.idempotency_ttl_secs),
            1,
            YEAR,
        );
        range(
            "orders.idempotency_stale_secs",
            n(orders.idempotency_stale_secs),
            1,
            DAY,
        );

        let holds = &self.reservations;
        range("reservations.ttl_secs", i128::from(holds.ttl_secs), 1, 30 * DAY);
        range(
            "reservations.min_ttl_secs",
            i128::from(holds.min_ttl_secs),
            1,
            30 * DAY,
        );
        range(
            "reservations.max_ttl_secs",
            i128::from(holds.max_ttl_secs),
            1,
            30 * DAY,
        );
        range(
            "reservations.max_active_per_user",
            z(holds.max_active_per_user),
            1,
            10_000,
        );
        range(
            "reservations.expiry_interval_ms",
            n(holds.expiry_interval_ms),
            10,
            HOUR * 1000,
        );
        range("reservations.expiry_batch", z(holds.expiry_batch), 1, 10_000);

        let webhooks = &self.webhooks;
        range(
            "webhooks.timeout_ms",
            n(webhooks.timeout_ms),
            1,
            10 * MINUTE * 1000,
        );
        range("webhooks.max_age_secs", n(webhooks.max_age_secs), 1, YEAR);
        for (i, delay) in webhooks.retry_schedule_secs.iter().enumerate() {
            range(
                &format!("webhooks.retry_schedule_secs[{i}]"),
                n(*delay),
                1,
                30 * DAY,
            );
        }
        range("webhooks.max_in_flight", z(webhooks.max_in_flight), 1, 10_000);
        range(
            "webhooks.poll_interval_ms",
            n(webhooks.poll_interval_ms),
            1,
            HOUR * 1000,
        );
        range("webhooks.retention_secs", n(webhooks.retention_secs), 1, YEAR);
        range(
            "webhooks.prune_interval_secs",
            n(webhooks.prune_interval_secs),
            1,
            DAY,
        );

        range(
            "events.publish_batch",
            i128::from(self.events.publish_batch),
            1,
            100_000,
        );

        let auth = &self.auth;
        range("auth.access_ttl_secs", n(auth.access_ttl_secs), 1, DAY);
        range("auth.refresh_ttl_secs", n(auth.refresh_ttl_secs), 1, YEAR);
        range("auth.hash_concurrency", z(auth.hash_concurrency), 0, 1024);

        let limits = &self.rate_limit;
        range("rate_limit.api_max", i128::from(limits.api_max), 1, 100_000_000);
        range("rate_limit.auth_max", i128::from(limits.auth_max), 1, 100_000_000);
        range("rate_limit.window_secs", n(limits.window_secs), 1, DAY);
        // Shorter than a /32 would count a whole provider as one client.
        range("rate_limit.ipv6_prefix", i128::from(limits.ipv6_prefix), 32, 128);

        range(
            "oauth.google.timeout_ms",
            n(self.oauth.google.timeout_ms),
            1,
            10 * MINUTE * 1000,
        );
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.server.host, self.server.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config"))
    }

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn layers_files_conventional_and_app_variables() {
        let s = Settings::load_from(
            dir(),
            &vars(&[
                ("APP_ENVIRONMENT", "test"),
                ("PORT", "9999"),
                ("DATABASE_URL", "postgres://a@b/c"),
                ("ALLOWED_ORIGINS", "https://a.example, https://b.example"),
                ("APP__RATE_LIMIT__ENABLED", "true"),
                ("APP__RATE_LIMIT__API_MAX", "7"),
                ("APP__SERVER__TRUSTED_PROXIES", "10.0.0.1,10.0.0.2"),
            ]),
        )
        .expect("settings");
        assert_eq!(s.environment, Environment::Test);
        assert_eq!(s.server.port, 9999);
        assert_eq!(s.database.url.expose_secret(), "postgres://a@b/c");
        assert_eq!(
            s.server.allowed_origins,
            ["https://a.example", "https://b.example"]
        );
        assert!(s.rate_limit.enabled);
        assert_eq!(s.rate_limit.api_max, 7);
        assert_eq!(s.server.trusted_proxies.len(), 2);
    }

    #[test]
    fn app_variables_beat_conventional_ones() {
        let s = Settings::load_from(
            dir(),
            &vars(&[
                ("APP_ENVIRONMENT", "test"),
                ("PORT", "1"),
                ("APP__SERVER__PORT", "2"),
            ]),
        )
        .expect("settings");
        assert_eq!(s.server.port, 2);
    }

    #[test]
    fn production_requires_a_long_secret() {
        let err =
            Settings::load_from(dir(), &vars(&[("APP_ENVIRONMENT", "production")])).expect_err("must refuse");
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
        let err = Settings::load_from(
            dir(),
            &vars(&[("APP_ENVIRONMENT", "production"), ("JWT_SECRET", "short")]),
        )
        .expect_err("must refuse");
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
        let fresh = format!("{:x}{:x}", rand::random::<u128>(), rand::random::<u128>());
        let ok = Settings::load_from(
            dir(),
            &vars(&[("APP_ENVIRONMENT", "production"), ("JWT_SECRET", &fresh)]),
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn production_refuses_a_secret_published_in_the_repository() {
        for published in [
            // config/test.toml's
            "test-secret-that-is-at-least-32-bytes-long!",
            // the one this very test file shows
            "super-secret-value-that-is-32-bytes-long",
        ] {
            let err = Settings::load_from(
                dir(),
                &vars(&[("APP_ENVIRONMENT", "production"), ("JWT_SECRET", published)]),
            )
            .expect_err("must refuse");
            assert!(err.to_string().contains("published"), "{err}");
            // Elsewhere it is only a test key.
            assert!(Settings::load_from(
                dir(),
                &vars(&[("APP_ENVIRONMENT", "test"), ("JWT_SECRET", published)])
            )
            .is_ok());
        }
    }

    #[test]
    fn development_without_secret_gets_a_random_one() {
        let a = Settings::load_from(dir(), &vars(&[])).expect("settings");
        let b = Settings::load_from(dir(), &vars(&[])).expect("settings");
        assert!(a.auth.jwt_secret.expose_secret().len() >= 32);
        assert_ne!(
            a.auth.jwt_secret.expose_secret(),
            b.auth.jwt_secret.expose_secret()
        );
    }

    fn refused(pairs: &[(&str, &str)]) -> String {
        let mut all = vec![("APP_ENVIRONMENT", "test")];
        all.extend_from_slice(pairs);
        Settings::load_from(dir(), &vars(&all))
            .expect_err("must refuse")
            .to_string()
    }

    #[test]
    fn the_shipped_files_are_within_every_range() {
        for env in ["development", "test", "production"] {
            let fresh = format!("{:x}{:x}", rand::random::<u128>(), rand::random::<u128>());
            let s = Settings::load_from(dir(), &vars(&[("APP_ENVIRONMENT", env), ("JWT_SECRET", &fresh)]));
            assert!(s.is_ok(), "{env}: {s:?}");
        }
    }

    #[test]
    fn a_duration_too_long_for_chrono_is_refused_with_its_key() {
        assert_eq!(
            refused(&[("APP__WEBHOOKS__RETENTION_SECS", "99999999999999")]),
            "webhooks.retention_secs must be between 1 and 31536000; it is 99999999999999"
        );
        assert_eq!(
            refused(&[("APP__ORDERS__IDEMPOTENCY_TTL_SECS", "18446744073709551615")]),
            "orders.idempotency_ttl_secs must be between 1 and 31536000; it is 18446744073709551615"
        );
        // The bounds themselves are accepted.
        let s = Settings::load_from(
            dir(),
            &vars(&[
                ("APP_ENVIRONMENT", "test"),
                ("APP__WEBHOOKS__RETENTION_SECS", "31536000"),
                ("APP__WEBHOOKS__PRUNE_INTERVAL_SECS", "1"),
            ]),
        )
        .expect("settings");
        assert_eq!(s.webhooks.retention_secs, 31_536_000);
    }

    #[test]
    fn zero_intervals_pool_sizes_and_batches_are_refused() {
        assert_eq!(
            refused(&[("APP__WEBHOOKS__PRUNE_INTERVAL_SECS", "0")]),
            "webhooks.prune_interval_secs must be between 1 and 86400; it is 0"
        );
        assert_eq!(
            refused(&[("APP__DATABASE__POOLS__READS__MAX_SIZE", "0")]),
            "database.pools.reads.max_size must be between 1 and 1000; it is 0"
        );
        assert_eq!(
            refused(&[("APP__INVENTORY__MAX_BATCH", "0")]),
            "inventory.max_batch must be between 1 and 10000; it is 0"
        );
        assert_eq!(
            refused(&[("APP__RESERVATIONS__EXPIRY_INTERVAL_MS", "5")]),
            "reservations.expiry_interval_ms must be between 10 and 3600000; it is 5"
        );
        assert_eq!(
            refused(&[("APP__WEBHOOKS__RETRY_SCHEDULE_SECS", "5,0")]),
            "webhooks.retry_schedule_secs[1] must be between 1 and 2592000; it is 0"
        );
        assert_eq!(
            refused(&[("APP__RATE_LIMIT__IPV6_PREFIX", "129")]),
            "rate_limit.ipv6_prefix must be between 32 and 128; it is 129"
        );
    }

    #[test]
    fn every_out_of_range_value_is_reported_at_once() {
        assert_eq!(
            refused(&[
                ("APP__SERVER__JSON_LIMIT", "0"),
                ("APP__AUTH__ACCESS_TTL_SECS", "0"),
                ("APP__EVENTS__PUBLISH_BATCH", "-1"),
                ("APP__RESERVATIONS__TTL_SECS", "7200"),
            ]),
            "server.json_limit must be between 1 and 1073741824; it is 0; \
             events.publish_batch must be between 1 and 100000; it is -1; \
             auth.access_ttl_secs must be between 1 and 86400; it is 0; \
             reservations: need min_ttl_secs (30) <= ttl_secs (7200) <= max_ttl_secs (3600)"
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let s = Settings::load_from(
            dir(),
            &vars(&[
                ("APP_ENVIRONMENT", "test"),
                ("DATABASE_URL", "postgres://u:hunter2pass@h/db"),
                ("JWT_SECRET", "super-secret-value-that-is-32-bytes-long"),
                ("GOOGLE_CLIENT_SECRET", "google-secret-value"),
                ("REDIS_URL", "redis://:redispass@h"),
            ]),
        )
        .expect("settings");
        let debug = format!("{s:?}");
        for secret in [
            "hunter2pass",
            "super-secret-value",
            "google-secret-value",
            "redispass",
        ] {
            assert!(!debug.contains(secret), "{secret} leaked in {debug}");
        }
    }
}
