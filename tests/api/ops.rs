//! Operations: graceful shutdown of the real binary, and the seed command.

use std::{process::Command, time::Duration};

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{blocking, free_port, metric, start_binary, test_settings, Res, TestDb};

#[actix_web::test]
async fn sigterm_finishes_in_flight_orders_and_every_acknowledged_order_is_stored() {
    let db = TestDb::new();
    let settings = test_settings(&db.url);
    storefront::db::migrate::run_pending(&db.url)
        .await
        .expect("migrate");
    db.execute("INSERT INTO products (id, name, price, stock_quantity) VALUES (1, 'Hot', 5, 1000)");
    let tokens: Vec<String> = db.bulk_users(&settings, 60).into_iter().map(|(_, t)| t).collect();

    let (mut child, base) = start_binary(
        &db.url,
        &[
            // Requests wait in the InventoryActor's queue for a while, so the
            // signal arrives while orders are in flight.
            ("APP__INVENTORY__MAX_WAIT_US", "400000"),
        ],
        std::process::Stdio::null(),
    )
    .await;
    let client = reqwest::Client::new();

    let orders = join_all(tokens.iter().map(|t| {
        let req = client
            .post(format!("{base}/api/v1/orders"))
            .bearer_auth(t)
            .json(&json!({"items": [{"product_id": 1, "quantity": 2}]}));
        async move {
            match req.send().await {
                Ok(r) => Some(Res::from(r).await),
                Err(_) => None,
            }
        }
    }));
    let pid = child.id();
    let signal = async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    let (results, ()) = tokio::join!(orders, signal);
    let exit = blocking(move || child.wait().expect("wait"));
    assert!(exit.success(), "exit status {exit:?}");

    let acknowledged: Vec<i64> = results
        .iter()
        .flatten()
        .filter(|r| r.status == StatusCode::CREATED)
        .map(|r| r.data()["id"].as_i64().expect("id"))
        .collect();
    assert!(
        !acknowledged.is_empty(),
        "no order was acknowledged during shutdown"
    );
    let stored = db.texts(&format!(
        "SELECT count(*)::text AS name FROM orders o WHERE id IN ({}) AND EXISTS (SELECT 1 FROM order_items i WHERE i.order_id = o.id)",
        acknowledged.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
    ));
    assert_eq!(
        stored,
        [acknowledged.len().to_string()],
        "every acknowledged order is stored with its items"
    );
    let stock: i64 = db.texts("SELECT stock_quantity::text AS name FROM products WHERE id = 1")[0]
        .parse()
        .expect("int");
    let ordered: i64 = db.texts("SELECT coalesce(sum(quantity), 0)::text AS name FROM order_items")[0]
        .parse()
        .expect("int");
    assert_eq!(stock + ordered, 1000);
}

#[actix_web::test]
async fn seed_writes_a_catalog_once() {
    let db = TestDb::new();
    storefront::db::migrate::run_pending(&db.url)
        .await
        .expect("migrate");
    let report = storefront::seed::run(&db.url, 3000, true).await.expect("seed");
    assert_eq!(report.products, 3000);
    assert!(!report.skipped);
    assert_eq!(db.texts("SELECT count(*)::text AS name FROM products"), ["3000"]);
    assert_eq!(db.texts("SELECT count(*)::text AS name FROM categories"), ["20"]);
    assert_eq!(
        db.texts("SELECT count(DISTINCT name)::text AS name FROM products"),
        ["3000"]
    );
    assert_eq!(
        db.texts("SELECT count(*)::text AS name FROM products WHERE price <= 0 OR stock_quantity < 0"),
        ["0"]
    );
    assert_eq!(
        db.texts("SELECT role AS name FROM users ORDER BY role"),
        ["super_admin", "user"]
    );
    // Statistics are fresh.
    assert_eq!(
        db.texts("SELECT (reltuples >= 2000)::text AS name FROM pg_class WHERE oid = 'products'::regclass"),
        ["true"]
    );
    let again = storefront::seed::run(&db.url, 3000, true).await.expect("seed");
    assert!(again.skipped);
    assert_eq!(db.texts("SELECT count(*)::text AS name FROM products"), ["3000"]);
}

#[actix_web::test]
async fn metrics_expose_http_inventory_orders_pools_and_cache() {
    // Expiry sweeps at start-up only: one batch before the requests.
    let app = crate::helpers::spawn_app_with(|s| s.reservations.expiry_interval_ms = 3_600_000).await;
    let admin = app.user_with_role("admin@example.com", "admin").await.access;
    let product = app.product(&admin, "Metered", "2.00", 1).await;
    let user = app.user("m@example.com").await.access;
    for qty in [1, 1] {
        app.post(
            "/api/v1/orders",
            Some(&user),
            json!({"items": [{"product_id": product, "quantity": qty}]}),
        )
        .await;
    }
    app.get(&format!("/api/v1/products/{product}"), None).await;
    app.get(&format!("/api/v1/products/{product}"), None).await;
    let held = app.product(&admin, "Held", "2.00", 1).await;
    let r = app
        .post(
            "/api/v1/reservations",
            Some(&user),
            json!({"items": [{"product_id": held, "quantity": 1}]}),
        )
        .await;
    let id = r.data()["id"].as_str().expect("id").to_owned();
    app.delete(&format!("/api/v1/reservations/{id}"), Some(&user))
        .await;
    let r = app.client.get(app.url("/metrics")).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/plain"));
    let text = r.text().await.expect("body");
    // Five batches of one request each: the start-up expiry sweep, two
    // orders, a hold and its release. Nothing runs while /metrics answers.
    for (series, value) in [
        (
            r#"storefront_http_requests_total{method="POST",route="/api/v1/orders",status="201"}"#,
            1.0,
        ),
        (
            r#"storefront_http_requests_total{method="POST",route="/api/v1/orders",status="409"}"#,
            1.0,
        ),
        (
            r#"storefront_http_requests_total{method="GET",route="/api/v1/products/{id}",status="200"}"#,
            2.0,
        ),
        (
            r#"storefront_http_request_duration_seconds_bucket{method="GET",route="/api/v1/products/{id}",status="200",le="+Inf"}"#,
            2.0,
        ),
        (
            r#"storefront_http_request_duration_seconds_count{method="GET",route="/api/v1/products/{id}",status="200"}"#,
            2.0,
        ),
        ("storefront_inventory_batch_size_count", 5.0),
        ("storefront_inventory_batch_size_sum", 5.0),
        ("storefront_inventory_queue_depth", 0.0),
        ("storefront_inventory_batches_total", 5.0),
        ("storefront_inventory_batch_duration_seconds_count", 5.0),
        (r#"storefront_reservations_total{event="created"}"#, 1.0),
        (r#"storefront_reservations_total{event="released"}"#, 1.0),
        (r#"storefront_reservations_total{event="expired"}"#, 0.0),
        ("storefront_orders_placed_total", 1.0),
        (
            r#"storefront_orders_rejected_total{reason="insufficient_stock"}"#,
            1.0,
        ),
        (
            r#"storefront_db_pool_connections{pool="inventory",state="idle"}"#,
            1.0,
        ),
        (
            r#"storefront_db_pool_connections{pool="inventory",state="in_use"}"#,
            0.0,
        ),
        (
            r#"storefront_db_pool_connections{pool="user",state="in_use"}"#,
            0.0,
        ),
        // The first read of the product misses, the second hits.
        ("storefront_cache_hits_total", 1.0),
        ("storefront_cache_misses_total", 1.0),
    ] {
        assert_eq!(metric(&text, series), Some(value), "{series}\n{text}");
    }
}

/// `metric` compares whole series (name and every label, in any order), so
/// one sample never stands in for another.
#[test]
fn metric_reads_exactly_the_series_asked_for() {
    let text = "# TYPE a counter\na 10\na{x=\"1\",y=\"2\"} 3\nb{route=\"/p/{id}\",le=\"+Inf\"} 2.5\n";
    assert_eq!(metric(text, "a"), Some(10.0));
    assert_eq!(metric(text, r#"a{y="2",x="1"}"#), Some(3.0));
    assert_eq!(metric(text, r#"a{x="1"}"#), None);
    assert_eq!(metric(text, r#"b{le="+Inf",route="/p/{id}"}"#), Some(2.5));
    assert_eq!(metric(text, "b"), None);
    assert_eq!(metric(text, "TYPE"), None);
}

#[actix_web::test]
async fn production_logs_are_json_with_context_and_no_secrets() {
    let db = TestDb::new();
    // Made here: production refuses secrets published in the repository.
    let secret = &format!("production-secret-{}", uuid::Uuid::new_v4().simple());
    // The logs go to a file: debug logs fill a pipe's 64 KiB before the
    // test would read them, and the server would block writing.
    let log_path = std::env::temp_dir().join(format!(
        "storefront-logs-{}-{}.jsonl",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    let log_file = std::fs::File::create(&log_path).expect("log file");
    let (mut child, base) = start_binary(
        &db.url,
        &[
            ("APP_ENVIRONMENT", "production"),
            ("APP__SERVER__HOST", "127.0.0.1"),
            ("JWT_SECRET", secret),
            ("RUST_LOG", "debug"),
        ],
        std::process::Stdio::from(log_file),
    )
    .await;
    let client = reqwest::Client::new();
    let password = "Sup3rSecretPassw0rd";
    let r = client
        .post(format!("{base}/api/v1/users"))
        .json(&json!({"email": "log@example.com", "password": password, "name": "Logger"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::CREATED);
    let login: serde_json::Value = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": "log@example.com", "password": password}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let access = login["data"]["access_token"].as_str().expect("token").to_owned();
    let refresh = login["data"]["refresh_token"].as_str().expect("token").to_owned();
    let r = client
        .get(format!("{base}/api/v1/auth/me"))
        .bearer_auth(&access)
        .header("x-request-id", "log-test-42")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let user_id = r.json::<serde_json::Value>().await.expect("json")["data"]["id"]
        .as_i64()
        .expect("id");
    client
        .post(format!("{base}/api/v1/auth/refresh"))
        .json(&json!({"refresh_token": refresh}))
        .send()
        .await
        .expect("send");
    // A rejected token is logged too, without the token.
    client
        .get(format!("{base}/api/v1/auth/me"))
        .bearer_auth("forged.token.value")
        .send()
        .await
        .expect("send");

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    blocking(move || child.wait().expect("wait"));
    let text = std::fs::read_to_string(&log_path).expect("logs");
    let _ = std::fs::remove_file(&log_path);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 5, "{text}");
    for secret_text in [
        password,
        secret,
        &access,
        &refresh,
        "forged.token.value",
        "argon2",
    ] {
        assert!(!text.contains(secret_text), "{secret_text} leaked into the logs");
    }
    let me = lines
        .iter()
        .find(|l| l["message"] == "request completed" && l["span"]["request_id"] == "log-test-42")
        .unwrap_or_else(|| panic!("no access line for the request id\n{text}"));
    assert_eq!(me["span"]["http.route"], json!("/api/v1/auth/me"));
    assert_eq!(me["span"]["http.method"], json!("GET"));
    assert_eq!(me["span"]["user_id"], json!(user_id));
    assert_eq!(me["status"], json!(200));
    assert!(me["latency_ms"].as_f64().is_some());
    assert_eq!(me["level"], json!("INFO"));
    assert!(me["timestamp"].as_str().is_some());
}

/// No Docker engine runs here, so the image is not built in CI. This keeps
/// its build and run steps identical to the commands CI and scripts/run.sh
/// execute: the same cargo build of the same binary, then migrate and serve.
#[test]
fn dockerfile_builds_and_runs_the_same_commands_as_ci() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let (docker, compose, run) = (
        read("Dockerfile"),
        read("docker-compose.yml"),
        read("scripts/run.sh"),
    );
    let build = "cargo build --release --locked --bin storefront";
    assert_eq!(
        docker.matches(build).count(),
        2,
        "dependency layer and crate layer"
    );
    assert!(run.contains(build));
    assert!(run.contains("./target/release/storefront migrate"));
    assert!(run.contains("exec ./target/release/storefront serve"));
    assert!(docker.contains("COPY --from=build /app/target/release/storefront /usr/local/bin/storefront"));
    assert!(docker.contains(r#"ENTRYPOINT ["storefront"]"#) && docker.contains(r#"CMD ["serve"]"#));
    assert!(compose.contains(r#"command: ["migrate"]"#) && compose.contains(r#"command: ["serve"]"#));
    assert!(
        compose.contains("condition: service_completed_successfully"),
        "app waits for migrations"
    );
    // Everything the binary reads at run time is in the image.
    for copied in [
        "COPY src src",
        "COPY migrations migrations",
        "COPY config config",
        "/app/config",
    ] {
        assert!(docker.contains(copied), "{copied}");
    }
    assert!(docker.contains("USER storefront"), "non-root runtime");
    assert!(docker.contains(r#"CMD ["storefront", "healthcheck"]"#));
    // The binary the image builds is the crate's server binary.
    let manifest = read("Cargo.toml");
    assert!(manifest.contains("[[bin]]\nname = \"storefront\""));
}

#[actix_web::test]
async fn the_healthcheck_command_reports_the_server() {
    let db = TestDb::new();
    let (mut child, base) = start_binary(&db.url, &[], std::process::Stdio::null()).await;
    let port = base.rsplit(':').next().expect("port").to_owned();
    let check = |port: String| {
        blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_storefront"))
                .arg("healthcheck")
                .env("APP_ENVIRONMENT", "test")
                .env("PORT", port)
                .output()
                .expect("run")
                .status
                .success()
        })
    };
    assert!(check(port), "healthy server reported unhealthy");
    assert!(!check(free_port().to_string()), "nothing listening, yet healthy");
    let _ = child.kill();
    let _ = child.wait();
}
