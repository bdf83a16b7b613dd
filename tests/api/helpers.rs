//! `spawn_app`: the production `Application` on port 0 with an isolated,
//! migrated database schema per test, dropped afterwards.
//!
//! Isolation is a schema per test in one shared database (`storefront_test`),
//! reached through `search_path`; measured here a schema + migrations costs
//! ~45 ms and its drop ~15 ms, against ~45 ms + ~85 ms for a
//! `CREATE DATABASE … TEMPLATE` clone and its drop.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU32, Ordering},
        Once,
    },
};

use diesel::{connection::SimpleConnection, sql_query, Connection, QueryableByName, RunQueryDsl};
use diesel_async::{async_connection_wrapper::AsyncConnectionWrapper, AsyncPgConnection};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};
use storefront::{config::Settings, startup::Application};

pub type SyncConn = AsyncConnectionWrapper<AsyncPgConnection>;

/// Server (without database) the tests use; override with STOREFRONT_TEST_PG.
pub fn pg_server() -> String {
    std::env::var("STOREFRONT_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub const TEST_DB: &str = "storefront_test";

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SETUP: Once = Once::new();

/// Runs blocking database work on its own thread (no runtime there, so the
/// sync wrapper may create one).
pub fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().expect("blocking helper panicked")
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

/// Creates the shared test database once, and drops schemas left behind by
/// test processes that no longer exist (crashed runs).
fn setup_once() {
    SETUP.call_once(|| {
        blocking(|| {
            let mut admin = SyncConn::establish(&format!("{}/postgres", pg_server()))
                .expect("connect to Postgres; is it running? (see README)");
            let exists: Vec<Name> = sql_query(format!(
                "SELECT datname AS name FROM pg_database WHERE datname = '{TEST_DB}'"
            ))
            .load(&mut admin)
            .expect("query pg_database");
            if exists.is_empty() {
                // Another process may win the race; that is fine.
                let _ = sql_query(format!("CREATE DATABASE {TEST_DB}")).execute(&mut admin);
            }
            let mut conn = SyncConn::establish(&format!("{}/{TEST_DB}", pg_server())).expect("connect");
            let _ = sql_query("CREATE EXTENSION IF NOT EXISTS pg_trgm").execute(&mut conn);
            let schemas: Vec<Name> =
                sql_query("SELECT nspname AS name FROM pg_namespace WHERE nspname LIKE 't\\_%\\_%'")
                    .load(&mut conn)
                    .expect("list schemas");
            for s in schemas {
                let pid = s.name.split('_').nth(1).and_then(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()) {
                    let _ = sql_query(format!("DROP SCHEMA IF EXISTS {} CASCADE", s.name)).execute(&mut conn);
                }
            }
        })
    });
}

/// One test's schema; dropped (with everything in it) on drop.
pub struct TestDb {
    pub schema: String,
    pub url: String,
}

impl TestDb {
    pub fn new() -> Self {
        setup_once();
        let schema = format!(
            "t_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let base = format!("{}/{TEST_DB}", pg_server());
        let s = schema.clone();
        blocking(move || {
            let mut conn = SyncConn::establish(&base).expect("connect");
            sql_query(format!("CREATE SCHEMA {s}"))
                .execute(&mut conn)
                .expect("create schema");
        });
        let url = format!(
            "{}/{TEST_DB}?options=-csearch_path%3D{schema}%2Cpublic&application_name={schema}",
            pg_server()
        );
        Self { schema, url }
    }

    /// Runs SQL in this test's schema.
    pub fn execute(&self, sql: &str) -> usize {
        let (url, sql) = (self.url.clone(), sql.to_owned());
        blocking(move || {
            let mut conn = SyncConn::establish(&url).expect("connect");
            sql_query(sql).execute(&mut conn).expect("execute")
        })
    }

    /// Runs several statements (simple protocol), e.g. a transaction.
    pub fn batch(&self, sql: &str) {
        let (url, sql) = (self.url.clone(), sql.to_owned());
        blocking(move || {
            let mut conn = SyncConn::establish(&url).expect("connect");
            conn.batch_execute(&sql).expect("batch")
        })
    }

    /// The plan Postgres chooses for `sql`.
    /// `EXPLAIN sql` on a connection set up with `session_setup` (the same
    /// settings the server's pool gives its connections).
    pub fn explain(&self, session_setup: &str, sql: &str) -> String {
        #[derive(QueryableByName)]
        struct Line {
            #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
            line: String,
        }
        let (url, sql) = (self.url.clone(), format!("EXPLAIN {sql}"));
        let setup = session_setup.to_owned();
        blocking(move || {
            let mut conn = SyncConn::establish(&url).expect("connect");
            conn.batch_execute(&setup).expect("session setup");
            let rows: Vec<Line> = sql_query(sql).load(&mut conn).expect("explain");
            rows.into_iter().map(|r| r.line).collect::<Vec<_>>().join("\n")
        })
    }

    /// Runs a query returning one text column.
    pub fn texts(&self, sql: &str) -> Vec<String> {
        let (url, sql) = (self.url.clone(), sql.to_owned());
        blocking(move || {
            let mut conn = SyncConn::establish(&url).expect("connect");
            let rows: Vec<Name> = sql_query(sql).load(&mut conn).expect("query");
            rows.into_iter().map(|r| r.name).collect()
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let base = format!("{}/{TEST_DB}", pg_server());
        let schema = self.schema.clone();
        blocking(move || {
            if let Ok(mut conn) = SyncConn::establish(&base) {
                // Connections of this test's pools may linger for a moment.
                let _ = sql_query(format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = '{schema}' AND pid <> pg_backend_pid()"
                ))
                .execute(&mut conn);
                let _ = sql_query(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&mut conn);
            }
        });
    }
}

pub fn test_settings(db_url: &str) -> Settings {
    let mut vars: HashMap<String, String> = HashMap::new();
    vars.insert("APP_ENVIRONMENT".into(), "test".into());
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config"));
    let mut settings = Settings::load_from(dir, &vars).expect("test settings");
    settings.database.url = db_url.to_owned().into();
    settings
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub db: std::sync::Arc<TestDb>,
    pub state: actix_web::web::Data<storefront::http::AppState>,
    pub settings: Settings,
    stopper: storefront::startup::Stopper,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stopper.stop();
    }
}

fn init_logs() {
    if std::env::var("TEST_LOG").is_ok() {
        storefront::telemetry::init(&storefront::config::LogSettings {
            format: storefront::config::LogFormat::Pretty,
            level: std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        });
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawns the application on a new schema, after `customise` has adjusted
/// the settings.
pub async fn spawn_app_with(customise: impl FnOnce(&mut Settings)) -> TestApp {
    init_logs();
    let db = TestDb::new();
    let mut settings = test_settings(&db.url);
    customise(&mut settings);
    spawn_on(std::sync::Arc::new(db), settings).await
}

/// Spawns an application on an existing schema (a second instance).
pub async fn spawn_on(db: std::sync::Arc<TestDb>, settings: Settings) -> TestApp {
    let app = Application::build(settings.clone())
        .await
        .expect("build application");
    let state = app.state();
    let app = app.handle_signals(false);
    let address = format!("http://127.0.0.1:{}", app.port());
    let stopper = app.stopper();
    actix_web::rt::spawn(app.run_until_stopped());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    TestApp {
        address,
        client,
        db,
        state,
        settings,
        stopper,
    }
}

/// A decoded response: status, headers and JSON body (Null when not JSON).
pub struct Res {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Res {
    pub async fn from(r: Response) -> Self {
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            headers,
            body,
            text,
        }
    }

    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `field`s named in `errors`.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub const PASSWORD: &str = "Passw0rd!";

/// A registered user and a valid token pair.
pub struct Login {
    pub id: i64,
    pub access: String,
    pub refresh: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn request(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Res {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Res::from(req.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Res {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Res {
        self.request(Method::POST, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> Res {
        self.request(Method::PUT, path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Res {
        self.request(Method::DELETE, path, token, None).await
    }

    pub async fn register(&self, email: &str, name: &str) -> Res {
        self.post(
            "/api/v1/users",
            None,
            json!({"email": email, "password": PASSWORD, "name": name}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Res {
        self.post(
            "/api/v1/auth/login",
            None,
            json!({"email": email, "password": password}),
        )
        .await
    }

    /// Registers `email` (role set directly in the database when not `user`)
    /// and logs in.
    pub async fn user_with_role(&self, email: &str, role: &str) -> Login {
        let r = self.register(email, "Test User").await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let id = r.data()["id"].as_i64().expect("id");
        if role != "user" {
            self.db
                .execute(&format!("UPDATE users SET role = '{role}' WHERE id = {id}"));
        }
        let r = self.login(email, PASSWORD).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        Login {
            id,
            access: r.data()["access_token"].as_str().expect("access").to_owned(),
            refresh: r.data()["refresh_token"].as_str().expect("refresh").to_owned(),
        }
    }

    pub async fn user(&self, email: &str) -> Login {
        self.user_with_role(email, "user").await
    }
}

impl TestApp {
    pub async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> Res {
        self.request(Method::PATCH, path, token, Some(body)).await
    }

    /// Creates a product as `admin` and returns its id.
    pub async fn product(&self, admin: &str, name: &str, price: &str, stock: i64) -> i64 {
        let r = self
            .post(
                "/api/v1/products",
                Some(admin),
                json!({"name": name, "price": price, "stock_quantity": stock, "description": format!("{name} description")}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.data()["id"].as_i64().expect("id")
    }

    pub fn stock_of(&self, product_id: i64) -> i64 {
        self.db.texts(&format!(
            "SELECT stock_quantity::text AS name FROM products WHERE id = {product_id}"
        ))[0]
            .parse()
            .expect("int")
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.db.count_of(sql)
    }
}

impl TestApp {
    /// Another instance of the application on the same schema.
    pub async fn second_instance(&self) -> TestApp {
        spawn_on(self.db.clone(), self.settings.clone()).await
    }

    /// An access token for `user_id` signed with the application's key.
    /// `n` users inserted directly (no Argon2), each with a token.
    pub fn bulk_users(&self, n: usize) -> Vec<(i64, String)> {
        self.db.bulk_users(&self.settings, n)
    }
}

/// An access token signed with `settings`' key.
pub fn token(settings: &Settings, user_id: i64, role: storefront::domain::Role) -> String {
    storefront::auth::JwtKeys::new(
        &settings.auth.jwt_secret,
        &settings.auth.issuer,
        &settings.auth.audience,
        std::time::Duration::from_secs(900),
    )
    .issue(user_id, role)
    .expect("sign")
}

impl TestDb {
    /// The single integer `sql` selects.
    pub fn count_of(&self, sql: &str) -> i64 {
        self.texts(&format!("SELECT ({sql})::text AS name"))[0]
            .parse()
            .expect("int")
    }

    /// `n` users inserted directly (no Argon2), each with a token signed for
    /// `settings`.
    pub fn bulk_users(&self, settings: &Settings, n: usize) -> Vec<(i64, String)> {
        let ids = self.texts(&format!(
            "INSERT INTO users (email, password_hash, name) \
             SELECT 'bulk' || g || '-' || md5(random()::text) || '@example.com', NULL, 'Bulk ' || g \
             FROM generate_series(1, {n}) g RETURNING id::text AS name"
        ));
        ids.into_iter()
            .map(|id| {
                let id: i64 = id.parse().expect("id");
                (id, token(settings, id, storefront::domain::Role::User))
            })
            .collect()
    }
}

/// The Redis the tests use; override with STOREFRONT_TEST_REDIS.
pub fn redis_url() -> String {
    std::env::var("STOREFRONT_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Deletes every key under a test's prefix when dropped.
pub struct RedisKeys {
    pub url: String,
    pub prefix: String,
}

impl Drop for RedisKeys {
    fn drop(&mut self) {
        let (url, prefix) = (self.url.clone(), self.prefix.clone());
        blocking(move || {
            let Ok(client) = redis::Client::open(url) else {
                return;
            };
            let Ok(mut conn) = client.get_connection() else {
                return;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}:*"))
                .query(&mut conn)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut conn);
            }
        });
    }
}

/// An application using Redis at `url`, with its keys under a prefix of its
/// own (removed afterwards).
pub async fn spawn_app_with_redis(url: &str, customise: impl FnOnce(&mut Settings)) -> (TestApp, RedisKeys) {
    let prefix = format!(
        "sftest{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    let keys = RedisKeys {
        url: url.to_owned(),
        prefix: prefix.clone(),
    };
    let url = url.to_owned();
    let app = spawn_app_with(move |s| {
        s.redis.url = url.into();
        s.redis.prefix = prefix;
        customise(s);
    })
    .await;
    (app, keys)
}

/// Waits until /health/ready reports Redis as `want`.
pub async fn wait_for_redis(app: &TestApp, want: &str) {
    for _ in 0..100 {
        let r = app.get("/health/ready", None).await;
        if r.body["checks"]["redis"] == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("redis never became {want}");
}

/// A redis-server of the test's own on a free port.
pub struct OwnRedis {
    pub port: u16,
    child: Option<std::process::Child>,
    dir: std::path::PathBuf,
    persistent: bool,
}

impl OwnRedis {
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// A Redis that keeps every write on disk (AOF, fsync always), so a
    /// restart after kill -9 comes back with its old data, stale cache
    /// entries included.
    pub fn start_persistent() -> Self {
        Self::start_with(true)
    }

    fn start_with(persistent: bool) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let dir = std::env::temp_dir().join(format!("sf-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut r = Self {
            port,
            child: None,
            dir,
            persistent,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                if self.persistent { "yes" } else { "no" },
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test.sh installs it)");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("redis-server did not start");
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Starts the real binary (test settings) on a free port and waits until it
/// is ready.
pub async fn start_binary(
    db_url: &str,
    env: &[(&str, &str)],
    stdout: std::process::Stdio,
) -> (std::process::Child, String) {
    let port = free_port();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_storefront"));
    cmd.arg("serve")
        .env("APP_ENVIRONMENT", "test")
        .env("DATABASE_URL", db_url)
        .env("PORT", port.to_string())
        .env("APP__SERVER__WORKERS", "2")
        .env("RUST_LOG", "warn")
        .stdout(stdout);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start the binary");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..150 {
        if let Ok(r) = client.get(format!("{base}/health/ready")).send().await {
            if r.status() == StatusCode::OK {
                return (child, base);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("server did not become ready");
}

/// A Prometheus series: metric name and labels.
type Series = (String, std::collections::BTreeMap<String, String>);

/// The value of the sample `series` (`name` or `name{label="value",...}`,
/// labels in any order) in the Prometheus text exposition `text`; `None`
/// when there is no such sample. Whole series are compared, so `x 1` is not
/// found in `x 10`, nor `x{a="1"}` in `x{a="1",b="2"}`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    let (want, _) = parse_series(series)?;
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(parse_series)
        .find(|(s, _)| *s == want)
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
}

/// Splits a sample line into its series and what follows (value, timestamp).
fn parse_series(line: &str) -> Option<(Series, &str)> {
    let line = line.trim_start();
    let end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let (name, mut rest) = line.split_at(end);
    if name.is_empty() {
        return None;
    }
    let mut labels = std::collections::BTreeMap::new();
    if let Some(mut body) = rest.strip_prefix('{') {
        loop {
            body = body.trim_start_matches([',', ' ']);
            if let Some(after) = body.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = body.split_once('=')?;
            let quoted = after.strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let close = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.insert(key.trim().to_owned(), value);
            body = &quoted[close + 1..];
        }
    }
    Some(((name.to_owned(), labels), rest))
}

/// For a test whose external tool is missing: with `switch` (such as
/// STOREFRONT_REQUIRE_DIESEL) set to anything but "" or "0", as CI sets it,
/// that is a failure naming what to install; otherwise the test is skipped
/// with a note. The caller returns afterwards.
pub fn tool_missing(switch: &str, what_to_install: &str) {
    if std::env::var(switch).is_ok_and(|v| !v.is_empty() && v != "0") {
        panic!("{what_to_install} ({switch} is set: this test may not be skipped)");
    }
    eprintln!("skipped: {what_to_install} (with {switch}=1 this is a failure)");
}
