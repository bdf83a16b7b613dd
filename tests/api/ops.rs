//! Operations: graceful shutdown of the real binary, and the seed command.

use std::{process::Command, time::Duration};

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{blocking, test_settings, Res, TestDb};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[actix_web::test]
async fn sigterm_finishes_in_flight_orders_and_every_acknowledged_order_is_stored() {
    let db = TestDb::new();
    let settings = test_settings(&db.url);
    storefront::db::migrate::run_pending(&db.url)
        .await
        .expect("migrate");
    db.execute("INSERT INTO products (id, name, price, stock_quantity) VALUES (1, 'Hot', 5, 1000)");
    let users = db.texts(
        "INSERT INTO users (email, name) SELECT 's' || g || '@example.com', 'Shopper' FROM generate_series(1, 60) g \
         RETURNING id::text AS name",
    );
    let keys = storefront::auth::JwtKeys::new(
        &settings.auth.jwt_secret,
        &settings.auth.issuer,
        &settings.auth.audience,
        Duration::from_secs(900),
    );
    let tokens: Vec<String> = users
        .iter()
        .map(|id| {
            keys.issue(id.parse().expect("id"), storefront::domain::Role::User)
                .expect("sign")
        })
        .collect();

    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_storefront"))
        .arg("serve")
        .env("APP_ENVIRONMENT", "test")
        .env("DATABASE_URL", &db.url)
        .env("PORT", port.to_string())
        .env("APP__SERVER__WORKERS", "2")
        // Requests wait in the InventoryActor's queue for a while, so the
        // signal arrives while orders are in flight.
        .env("APP__INVENTORY__MAX_WAIT_US", "400000")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the binary");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("{base}/health/ready")).send().await {
            if r.status() == StatusCode::OK {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "server did not become ready");

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
    let app = crate::helpers::spawn_app().await;
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
    let r = app.client.get(app.url("/metrics")).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/plain"));
    let text = r.text().await.expect("body");
    for needle in [
        r#"storefront_http_requests_total{method="POST",route="/api/v1/orders",status="201"} 1"#,
        r#"storefront_http_requests_total{method="POST",route="/api/v1/orders",status="409"} 1"#,
        r#"storefront_http_request_duration_seconds_bucket{method="GET",route="/api/v1/products/{id}",status="200""#,
        "storefront_inventory_batch_size_count 2",
        "storefront_inventory_queue_depth 0",
        "storefront_orders_placed_total 1",
        r#"storefront_orders_rejected_total{reason="insufficient_stock"} 1"#,
        r#"storefront_db_pool_connections{pool="inventory",state="idle"}"#,
        r#"storefront_db_pool_connections{pool="user",state="in_use"}"#,
        "storefront_cache_hits_total 1",
        "storefront_cache_misses_total",
    ] {
        assert!(text.contains(needle), "missing {needle}\n{text}");
    }
}
