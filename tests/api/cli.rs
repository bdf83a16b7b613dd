//! The binary's commands: `seed` per environment (demo accounts never with a
//! published password in production) and settings refused at start-up.

use std::{
    process::{Command, Output, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use serde_json::json;
use storefront::seed::{ADMIN_PASSWORD_VAR, CUSTOMER_PASSWORD_VAR, DEMO_ADMIN, DEMO_CUSTOMER};

use crate::helpers::{blocking, free_port, spawn_on, test_settings, TestDb};

fn fresh_secret() -> String {
    format!("{:x}{:x}", rand::random::<u128>(), rand::random::<u128>())
}

/// Runs the binary with `args` and `env` (nothing else of the demo
/// accounts' variables), killed if it has not exited within 60 s.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_storefront"));
    cmd.args(args)
        .env_remove(ADMIN_PASSWORD_VAR)
        .env_remove(CUSTOMER_PASSWORD_VAR)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    blocking(move || {
        let mut child = cmd.spawn().expect("start the binary");
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().expect("output")
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn count(db: &TestDb, table: &str) -> String {
    db.texts(&format!("SELECT count(*)::text AS name FROM {table}"))
        .pop()
        .expect("a count")
}

/// The production seed command on `db`'s schema.
fn production_seed(db: &TestDb, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let secret = fresh_secret();
    let mut args = vec!["seed", "--products", "5"];
    args.extend_from_slice(extra);
    let mut all = vec![
        ("APP_ENVIRONMENT", "production"),
        ("DATABASE_URL", db.url.as_str()),
        ("JWT_SECRET", secret.as_str()),
    ];
    all.extend_from_slice(env);
    run(&args, &all)
}

#[actix_web::test]
async fn seed_in_production_creates_the_catalog_and_no_accounts() {
    let db = TestDb::new();
    let out = production_seed(&db, &[], &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert_eq!(count(&db, "products"), "5");
    assert_eq!(count(&db, "categories"), "20");
    assert_eq!(count(&db, "users"), "0", "{stdout}");
    assert!(
        stdout.contains("no demo accounts (APP_ENVIRONMENT=production; --demo-accounts creates them)"),
        "{stdout}"
    );
    assert!(!stdout.contains(DEMO_ADMIN.1), "{stdout}");
}

/// The password `seed` printed for `email`.
fn printed_password<'a>(stdout: &'a str, email: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("demo account {email} ")))
        .and_then(|l| l.split_once(": password "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no password for {email} in {stdout}"))
}

#[actix_web::test]
async fn seed_in_production_with_demo_accounts_never_uses_the_published_passwords() {
    let db = Arc::new(TestDb::new());
    let chosen = "Chosen-Customer-5821";
    let out = production_seed(&db, &["--demo-accounts"], &[(CUSTOMER_PASSWORD_VAR, chosen)]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert_eq!(count(&db, "products"), "5");
    assert_eq!(
        db.texts("SELECT email || ' ' || role AS name FROM users ORDER BY email"),
        [
            format!("{} super_admin", DEMO_ADMIN.0),
            format!("{} user", DEMO_CUSTOMER.0)
        ]
    );
    // The admin's password was generated and shown once; the customer's
    // came from its variable and is not printed.
    let generated = printed_password(&stdout, DEMO_ADMIN.0).to_owned();
    assert_eq!(generated.len(), 20, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "demo account {} (user): password from {CUSTOMER_PASSWORD_VAR}",
            DEMO_CUSTOMER.0
        )),
        "{stdout}"
    );
    assert!(!stdout.contains(chosen), "{stdout}");

    let app = spawn_on(db.clone(), test_settings(&db.url)).await;
    for (email, published) in [DEMO_ADMIN, DEMO_CUSTOMER] {
        let r = app.login(email, published).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{email}: {}", r.text);
    }
    let r = app.login(DEMO_ADMIN.0, &generated).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.data()["user"]["role"], json!("super_admin"));
    let r = app.login(DEMO_CUSTOMER.0, chosen).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.data()["user"]["role"], json!("user"));

    // A second run leaves the accounts, and their passwords, alone.
    let again = production_seed(&db, &["--demo-accounts"], &[]);
    let stdout = text(&again.stdout);
    assert!(again.status.success(), "{stdout}{}", text(&again.stderr));
    assert!(
        stdout.contains(&format!(
            "demo account {} (super_admin) already exists; its password is unchanged",
            DEMO_ADMIN.0
        )),
        "{stdout}"
    );
    assert_eq!(app.login(DEMO_ADMIN.0, &generated).await.status, StatusCode::OK);
}

#[actix_web::test]
async fn seed_in_production_refuses_a_published_demo_password() {
    let db = TestDb::new();
    let out = production_seed(&db, &["--demo-accounts"], &[(ADMIN_PASSWORD_VAR, DEMO_ADMIN.1)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{ADMIN_PASSWORD_VAR}: the password appears in storefront's repository"
        )),
        "{stderr}"
    );
    // Refused before anything was written.
    assert_eq!(
        db.texts("SELECT count(*)::text AS name FROM pg_tables WHERE schemaname = current_schema()"),
        ["0"]
    );
}

#[actix_web::test]
async fn serve_refuses_to_start_with_an_out_of_range_setting_and_names_it() {
    let db = TestDb::new();
    let port = free_port().to_string();
    let out = run(
        &["serve"],
        &[
            ("APP_ENVIRONMENT", "test"),
            ("DATABASE_URL", db.url.as_str()),
            ("PORT", port.as_str()),
            ("APP__WEBHOOKS__RETENTION_SECS", "99999999999999"),
            ("APP__DATABASE__POOLS__USER__MAX_SIZE", "0"),
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("webhooks.retention_secs must be between 1 and 31536000; it is 99999999999999"),
        "{stderr}"
    );
    assert!(
        stderr.contains("database.pools.user.max_size must be between 1 and 1000; it is 0"),
        "{stderr}"
    );
}
