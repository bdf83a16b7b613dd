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
fn published(secret: &str) -> bool {
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
        if self.auth.access_ttl_secs == 0 || self.auth.refresh_ttl_secs == 0 {
            return Err(SettingsError::Invalid("auth TTLs must be positive".into()));
        }
        let r = &self.reservations;
        if !(1 <= r.min_ttl_secs && r.min_ttl_secs <= r.ttl_secs && r.ttl_secs <= r.max_ttl_secs) {
            return Err(SettingsError::Invalid(format!(
                "reservations: need 1 <= min_ttl_secs ({}) <= ttl_secs ({}) <= max_ttl_secs ({})",
                r.min_ttl_secs, r.ttl_secs, r.max_ttl_secs
            )));
        }
        let w = &self.webhooks;
        if w.timeout_ms == 0 || w.max_in_flight == 0 || w.poll_interval_ms == 0 {
            return Err(SettingsError::Invalid(
                "webhooks: timeout_ms, max_in_flight and poll_interval_ms must be positive".into(),
            ));
        }
        if w.retry_schedule_secs.is_empty() || w.retry_schedule_secs.contains(&0) {
            return Err(SettingsError::Invalid(
                "webhooks.retry_schedule_secs needs at least one delay, each at least 1 second".into(),
            ));
        }
        if self.events.publish_batch < 1 {
            return Err(SettingsError::Invalid(
                "events.publish_batch must be positive".into(),
            ));
        }
        if self.events.nats_url().is_some() {
            let subject = &self.events.nats_subject_prefix;
            if self.events.nats_stream.is_empty() || subject.is_empty() || subject.contains(['*', '>', ' ']) {
                return Err(SettingsError::Invalid(
                    "events: nats_stream and nats_subject_prefix must be set (the prefix without wildcards \
                     or spaces)"
                        .into(),
                ));
            }
        }
        if self.server.json_limit == 0 {
            return Err(SettingsError::Invalid(
                "server.json_limit must be positive".into(),
            ));
        }
        Ok(())
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
