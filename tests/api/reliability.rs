//! Faults: the server is killed mid-sale, the database drops every
//! connection under load, Redis stops and starts under load, an actor's
//! handler panics.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    spawn_app, spawn_app_with_redis, start_binary, test_settings, wait_for_redis, OwnRedis, Res, TestDb,
};

/// What one flash-sale client saw: the orders acknowledged with 201 (id and
/// Idempotency-Key), and the key of the request that got no answer at all.
#[derive(Default)]
struct Client {
    acknowledged: Vec<(i64, String)>,
    unanswered: Option<String>,
}

/// kill -9 in the middle of a flash sale, then a restart: every order a client
/// got a 201 for is stored with its items, nothing is half-written, the books
/// balance, and a client retrying an unanswered request with its
/// Idempotency-Key ends up with exactly one order for it.
#[actix_web::test]
async fn kill_9_mid_sale_loses_no_acknowledged_order() {
    const STOCK: i64 = 1_000_000;
    let db = TestDb::new();
    let settings = test_settings(&db.url);
    storefront::db::migrate::run_pending(&db.url)
        .await
        .expect("migrate");
    db.execute(&format!(
        "INSERT INTO products (id, name, price, stock_quantity) VALUES (1, 'Hot', 5, {STOCK})"
    ));
    let shoppers = db.bulk_users(&settings, 48);
    let env = [
        ("APP__RATE_LIMIT__ENABLED", "false"),
        ("APP__ORDERS__IDEMPOTENCY_STALE_SECS", "1"),
    ];
    let (mut child, base) = start_binary(&db.url, &env, std::process::Stdio::null()).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");

    let sale = join_all(shoppers.iter().enumerate().map(|(c, (_, token))| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let mut seen = Client::default();
            for n in 0.. {
                let key = format!("c{c}-{n}");
                let sent = http
                    .post(format!("{base}/api/v1/orders"))
                    .bearer_auth(token)
                    .header("idempotency-key", &key)
                    .json(&json!({"items": [{"product_id": 1, "quantity": 1}]}))
                    .send()
                    .await;
                match sent {
                    Ok(r) => {
                        let r = Res::from(r).await;
                        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
                        seen.acknowledged
                            .push((r.data()["id"].as_i64().expect("id"), key));
                    }
                    Err(_) => {
                        seen.unanswered = Some(key);
                        break;
                    }
                }
            }
            seen
        }
    }));
    let kill = async {
        // Let the sale get going, then pull the plug.
        while db.count_of("SELECT count(*) FROM orders") < 500 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.kill().expect("kill -9");
        child.wait().expect("wait")
    };
    let (clients, exit) = tokio::join!(sale, kill);
    assert!(!exit.success());

    let acknowledged: Vec<i64> = clients
        .iter()
        .flat_map(|c| c.acknowledged.iter().map(|(id, _)| *id))
        .collect();
    // Responses trail commits: some committed orders were never acknowledged.
    assert!(
        acknowledged.len() >= 100,
        "only {} orders acknowledged",
        acknowledged.len()
    );
    let stored = db.count_of(&format!(
        "SELECT count(*) FROM orders o WHERE id IN ({}) AND status = 'pending' \
         AND EXISTS (SELECT 1 FROM order_items i WHERE i.order_id = o.id AND i.product_id = 1 AND i.quantity = 1)",
        acknowledged.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
    ));
    assert_eq!(
        stored,
        acknowledged.len() as i64,
        "an acknowledged order is missing"
    );
    assert_eq!(
        db.count_of("SELECT count(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM order_items i WHERE i.order_id = o.id)"),
        0,
        "an order without items"
    );
    let books = || {
        db.count_of("SELECT stock_quantity + (SELECT coalesce(sum(quantity), 0) FROM order_items) FROM products WHERE id = 1")
    };
    assert_eq!(books(), STOCK);

    // Restart on the same database; clients retry what got no answer.
    let (mut child, base) = start_binary(&db.url, &env, std::process::Stdio::null()).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let token_of: HashMap<usize, &str> = shoppers
        .iter()
        .enumerate()
        .map(|(c, (_, t))| (c, t.as_str()))
        .collect();
    let mut retried = 0;
    for (c, client) in clients.iter().enumerate() {
        let Some(key) = &client.unanswered else { continue };
        let r = Res::from(
            http.post(format!("{base}/api/v1/orders"))
                .bearer_auth(token_of[&c])
                .header("idempotency-key", key)
                .json(&json!({"items": [{"product_id": 1, "quantity": 1}]}))
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "retry of {key}: {}", r.text);
        let again = Res::from(
            http.post(format!("{base}/api/v1/orders"))
                .bearer_auth(token_of[&c])
                .header("idempotency-key", key)
                .json(&json!({"items": [{"product_id": 1, "quantity": 1}]}))
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!(
            again.data()["id"],
            r.data()["id"],
            "the retry replays, not re-orders"
        );
        retried += 1;
    }
    assert!(retried > 0, "no request was cut off by the kill");
    // One order per key: no key led to two orders.
    assert_eq!(
        db.count_of("SELECT count(*) FROM idempotency_keys WHERE order_id IS NOT NULL"),
        db.count_of("SELECT count(*) FROM orders")
    );
    let (c, (id, _)) = clients
        .iter()
        .enumerate()
        .find_map(|(c, seen)| seen.acknowledged.first().map(|a| (c, a)))
        .expect("an acknowledged order");
    let r = Res::from(
        http.get(format!("{base}/api/v1/orders/{id}"))
            .bearer_auth(token_of[&c])
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.data()["items"][0]["quantity"], json!(1));
    assert_eq!(books(), STOCK);
    child.kill().expect("kill");
    child.wait().expect("wait");
}

/// Under a steady load of orders, reads and writes, pg_terminate_backend on
/// every server connection (twice): each request gets 2xx or 503 with
/// Retry-After within the acquire timeout (never a 500, never a hang), and the
/// server recovers by itself, without a restart.
#[actix_web::test]
async fn the_server_recovers_after_postgres_drops_its_connections_under_load() {
    let app = spawn_app().await;
    survive_database_fault(&app, async {
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            let killed = app.db.count_of(&format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = '{}' AND pid <> pg_backend_pid()",
                app.db.schema
            ));
            assert!(killed > 0, "no server connection was terminated");
        }
    })
    .await;
}

/// The same with a real restart of the Postgres server (the command in
/// STOREFRONT_PG_RESTART, e.g. `pg_ctlcluster 15 main restart -m fast`).
/// Webhook delivery of the orders placed meanwhile resumes by itself.
/// It takes the database away from every other test, so it is ignored in the
/// main run; `scripts/test.sh` runs it alone afterwards.
#[actix_web::test]
#[ignore = "restarts the shared Postgres; scripts/test.sh runs it alone"]
async fn the_server_recovers_after_a_postgres_restart_under_load() {
    let command = std::env::var("STOREFRONT_PG_RESTART")
        .expect("STOREFRONT_PG_RESTART: the command that restarts the Postgres server");
    let app = spawn_app().await;
    // Webhook delivery runs through the restart too, and resumes by itself.
    let receiver = crate::events::Receiver::start(crate::events::ok());
    let hooks = app.user_with_role("hooks@example.com", "admin").await.access;
    crate::events::endpoint(&app, &hooks, &receiver.url("/restart"), &["order.created"]).await;
    survive_database_fault(&app, async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let status = tokio::process::Command::new("sh")
            .args(["-c", &command])
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .expect("run the restart command");
        assert!(status.success(), "{command}: {status}");
    })
    .await;
    let placed: std::collections::HashSet<i64> = app
        .db
        .texts("SELECT id::text AS name FROM orders")
        .iter()
        .map(|id| id.parse().expect("id"))
        .collect();
    assert!(!placed.is_empty());
    let got = receiver
        .wait_for("/restart", 60, |r| {
            let ids: std::collections::HashSet<i64> =
                r.iter().filter_map(|r| r.json()["data"]["id"].as_i64()).collect();
            placed.is_subset(&ids)
        })
        .await;
    let delivered: std::collections::HashSet<i64> = got
        .iter()
        .filter_map(|r| r.json()["data"]["id"].as_i64())
        .collect();
    assert_eq!(
        placed.difference(&delivered).count(),
        0,
        "orders placed around the restart were never delivered"
    );
}

/// Runs `fault` while 16 clients keep ordering, listing, reading and updating;
/// every answer must be a 2xx or a 503 with Retry-After, none slower than the
/// acquire timeout (+2 s). Then waits (20 s at most) until a full round of
/// requests succeeds again, by itself, and checks the books.
async fn survive_database_fault(app: &crate::helpers::TestApp, fault: impl std::future::Future<Output = ()>) {
    let admin = app.user_with_role("admin@example.com", "admin").await.access;
    let product = app.product(&admin, "Sturdy", "3.00", 1_000_000).await;
    let users = app.bulk_users(16);
    let limit = Duration::from_millis(app.settings.database.acquire_timeout_ms) + Duration::from_secs(2);
    let stop = std::cell::Cell::new(false);
    let (ok, unavailable) = (std::cell::Cell::new(0_u32), std::cell::Cell::new(0_u32));

    let load = join_all(users.iter().enumerate().map(|(i, (_, user))| {
        let (admin, stop, ok, unavailable) = (&admin, &stop, &ok, &unavailable);
        async move {
            while !stop.get() {
                let started = Instant::now();
                let r = match i % 8 {
                    0..=3 => {
                        app.post(
                            "/api/v1/orders",
                            Some(user),
                            json!({"items": [{"product_id": product, "quantity": 1}]}),
                        )
                        .await
                    }
                    4 | 5 => app.get("/api/v1/orders", Some(user)).await,
                    6 => app.get("/api/v1/auth/me", Some(user)).await,
                    _ => {
                        app.put(
                            &format!("/api/v1/products/{product}"),
                            Some(admin),
                            json!({"description": format!("d{i}")}),
                        )
                        .await
                    }
                };
                assert!(
                    started.elapsed() < limit,
                    "a request took {:?}",
                    started.elapsed()
                );
                if r.status == StatusCode::SERVICE_UNAVAILABLE {
                    assert!(r.header("retry-after").is_some());
                    assert!(!r.text.contains("terminating"), "internals leaked: {}", r.text);
                    unavailable.set(unavailable.get() + 1);
                } else {
                    assert!(r.status.is_success(), "{}: {}", r.status, r.text);
                    ok.set(ok.get() + 1);
                }
            }
        }
    }));
    let faults = async {
        fault.await;
        // Recovered: a full round of every kind of request succeeds, by itself.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let results = [
                app.post(
                    "/api/v1/orders",
                    Some(&users[0].1),
                    json!({"items": [{"product_id": product, "quantity": 1}]}),
                )
                .await,
                app.get("/api/v1/orders", Some(&users[0].1)).await,
                app.get("/api/v1/auth/me", Some(&users[0].1)).await,
                app.put(
                    &format!("/api/v1/products/{product}"),
                    Some(&admin),
                    json!({"name": "Sturdier"}),
                )
                .await,
                app.get("/health/ready", None).await,
            ];
            if results.iter().all(|r| r.status.is_success()) {
                break;
            }
            assert!(Instant::now() < deadline, "still failing 20 s after the fault");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.set(true);
    };
    tokio::join!(load, faults);
    eprintln!(
        "under load: {} answers OK, {} were 503",
        ok.get(),
        unavailable.get()
    );
    assert!(ok.get() > 100, "the load did not run");
    assert!(unavailable.get() > 0, "the fault was not felt");
    assert_eq!(
        app.stock_of(product) + app.count("SELECT coalesce(sum(quantity), 0) FROM order_items"),
        1_000_000
    );
}

/// Two instances share a Redis (cache and rate limits) under a steady load of
/// cached reads and orders. Redis is killed, a price changes during the
/// outage, and Redis comes back *with its old data*: no request fails or
/// hangs at any point, and afterwards neither instance serves the stale price
/// although the old entries are still in Redis.
#[actix_web::test]
async fn redis_stopped_and_started_under_load_costs_no_error_and_no_stale_read() {
    let mut redis = OwnRedis::start_persistent();
    let (a, _keys) = spawn_app_with_redis(&redis.url(), |s| {
        s.rate_limit.enabled = true;
        s.rate_limit.api_max = 1_000_000;
        s.rate_limit.window_secs = 600;
    })
    .await;
    let b = a.second_instance().await;
    wait_for_redis(&a, "up").await;
    wait_for_redis(&b, "up").await;
    let admin = a.user_with_role("admin@example.com", "admin").await.access;
    let product = a.product(&admin, "Umbrella", "5.00", 1_000_000).await;
    let path = format!("/api/v1/products/{product}");
    let users = a.bulk_users(8);
    let stop = std::cell::Cell::new(false);
    let served = std::cell::Cell::new(0_u32);

    let load = join_all(users.iter().enumerate().map(|(i, (_, user))| {
        let (app, path, stop, served) = (if i % 2 == 0 { &a } else { &b }, &path, &stop, &served);
        async move {
            while !stop.get() {
                let started = Instant::now();
                let r = if i % 4 < 2 {
                    app.get(path, None).await
                } else {
                    app.post(
                        "/api/v1/orders",
                        Some(user),
                        json!({"items": [{"product_id": product, "quantity": 1}]}),
                    )
                    .await
                };
                assert!(r.status.is_success(), "{}: {}", r.status, r.text);
                assert!(
                    started.elapsed() < Duration::from_secs(3),
                    "took {:?}",
                    started.elapsed()
                );
                served.set(served.get() + 1);
            }
        }
    }));
    let faults = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Both instances have the product cached under the current version.
        for app in [&a, &b] {
            assert_eq!(app.get(&path, None).await.data()["price"], json!("5.00"));
        }
        redis.stop();
        wait_for_redis(&a, "down").await;
        let r = a.put(&path, Some(&admin), json!({"price": "7.00"})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        for app in [&a, &b] {
            assert_eq!(app.get(&path, None).await.data()["price"], json!("7.00"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        redis.restart();
        wait_for_redis(&a, "up").await;
        wait_for_redis(&b, "up").await;
        let hits = |app: &crate::helpers::TestApp| app.state.metrics.cache_hits.get();
        let before = (hits(&a), hits(&b));
        tokio::time::sleep(Duration::from_millis(500)).await;
        for app in [&a, &b] {
            for _ in 0..3 {
                assert_eq!(
                    app.get(&path, None).await.data()["price"],
                    json!("7.00"),
                    "stale read"
                );
            }
        }
        assert!(
            hits(&a) > before.0 && hits(&b) > before.1,
            "the cache is used again"
        );
        stop.set(true);
    };
    tokio::join!(load, faults);
    assert!(served.get() > 100, "the load did not run");
    assert_eq!(
        a.stock_of(product) + a.count("SELECT coalesce(sum(quantity), 0) FROM order_items"),
        1_000_000
    );
}

/// A panic inside a UserActor handler answers that request 503 (opaque, with
/// Retry-After) and the actor goes on serving: the next login works.
#[actix_web::test]
async fn a_panicking_user_actor_handler_answers_503_and_the_actor_goes_on() {
    let app = spawn_app().await;
    app.user("survivor@example.com").await;
    app.state
        .users
        .send(storefront::actors::PanicNextMessage)
        .await
        .expect("send");
    let r = app.login("survivor@example.com", crate::helpers::PASSWORD).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.body["success"], json!(false));
    assert_eq!(r.header("retry-after"), Some("5"));
    assert!(!r.text.contains("panic"), "{}", r.text);
    for _ in 0..3 {
        let r = app.login("survivor@example.com", crate::helpers::PASSWORD).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let r = app.register("after@example.com", "After Panic").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}
