//! Redis: cache invalidation seen across instances, the shared limiter, the
//! in-process limiter, X-Forwarded-For, and a Redis outage.

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    redis_url, spawn_app, spawn_app_with, spawn_app_with_redis, wait_for_redis, OwnRedis, Res, TestApp,
};

fn hits(app: &TestApp) -> u64 {
    app.state.metrics.cache_hits.get()
}

#[actix_web::test]
async fn invalidation_is_seen_across_two_instances() {
    let (a, _keys) = spawn_app_with_redis(&redis_url(), |_| {}).await;
    let b = a.second_instance().await;
    wait_for_redis(&a, "up").await;
    wait_for_redis(&b, "up").await;
    let admin = a.user_with_role("admin@example.com", "admin").await.access;
    let id = a.product(&admin, "Kettle", "30.00", 5).await;
    let path = format!("/api/v1/products/{id}");

    // B caches it...
    assert_eq!(b.get(&path, None).await.data()["price"], json!("30.00"));
    let before = hits(&b);
    assert_eq!(b.get(&path, None).await.data()["price"], json!("30.00"));
    assert_eq!(hits(&b), before + 1, "second read is a cache hit");
    let list = b.get("/api/v1/products", None).await;
    assert_eq!(list.data()["items"][0]["stock_quantity"], json!(5));

    // ...A changes the price: B's next read has it.
    let r = a.put(&path, Some(&admin), json!({"price": "35.00"})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(b.get(&path, None).await.data()["price"], json!("35.00"));
    // A stock change through A's InventoryActor: B's product and list pages.
    let user = a.user("buyer@example.com").await.access;
    let r = a
        .post(
            "/api/v1/orders",
            Some(&user),
            json!({"items": [{"product_id": id, "quantity": 2}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(b.get(&path, None).await.data()["stock_quantity"], json!(3));
    assert_eq!(
        b.get("/api/v1/products", None).await.data()["items"][0]["stock_quantity"],
        json!(3)
    );
    let r = a
        .post(
            &format!("/api/v1/products/{id}/stock"),
            Some(&admin),
            json!({"delta": 10}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(b.get(&path, None).await.data()["stock_quantity"], json!(13));
    // Soft delete: B stops showing it.
    a.delete(&path, Some(&admin)).await;
    assert_eq!(b.get(&path, None).await.status, StatusCode::NOT_FOUND);
    // Categories too.
    let c = a
        .post("/api/v1/categories", Some(&admin), json!({"name": "Kitchen"}))
        .await;
    let cpath = format!("/api/v1/categories/{}", c.data()["id"]);
    assert_eq!(b.get(&cpath, None).await.data()["name"], json!("Kitchen"));
    a.put(&cpath, Some(&admin), json!({"name": "Cookware"})).await;
    assert_eq!(b.get(&cpath, None).await.data()["name"], json!("Cookware"));
    assert_eq!(
        b.get("/api/v1/categories", None).await.data()["items"][0]["name"],
        json!("Cookware")
    );
}

#[actix_web::test]
async fn a_product_created_after_a_cached_404_is_visible() {
    let (a, _keys) = spawn_app_with_redis(&redis_url(), |_| {}).await;
    wait_for_redis(&a, "up").await;
    let admin = a.user_with_role("admin@example.com", "admin").await.access;
    let next_id = a.product(&admin, "First", "1.00", 1).await + 1;
    assert_eq!(
        a.get(&format!("/api/v1/products/{next_id}"), None).await.status,
        StatusCode::NOT_FOUND
    );
    let id = a.product(&admin, "Second", "1.00", 1).await;
    assert_eq!(id, next_id);
    assert_eq!(
        a.get(&format!("/api/v1/products/{id}"), None).await.status,
        StatusCode::OK
    );
}

fn limited(settings: &mut storefront::config::Settings, api_max: u32, auth_max: u32) {
    settings.rate_limit.enabled = true;
    settings.rate_limit.api_max = api_max;
    settings.rate_limit.auth_max = auth_max;
    settings.rate_limit.window_secs = 60;
}

fn assert_429(r: &Res, limit: u32) {
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    assert_eq!(r.body["statusCode"], json!(429));
    assert_eq!(r.body["success"], json!(false));
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("int");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(r.header("ratelimit-limit"), Some(limit.to_string().as_str()));
    assert_eq!(r.header("ratelimit-remaining"), Some("0"));
    assert!(r.header("ratelimit-reset").is_some());
    assert_eq!(
        r.header("ratelimit-policy"),
        Some(format!("{limit};w=60").as_str())
    );
}

#[actix_web::test]
async fn the_shared_limiter_counts_across_two_instances() {
    let (a, _keys) = spawn_app_with_redis(&redis_url(), |s| limited(s, 6, 100)).await;
    let b = a.second_instance().await;
    wait_for_redis(&a, "up").await;
    wait_for_redis(&b, "up").await;
    for i in 0..3 {
        let r = a.get("/api/v1/products", None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.header("ratelimit-remaining"),
            Some((5 - 2 * i).to_string().as_str())
        );
        let r = b.get("/api/v1/products", None).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    assert_429(&a.get("/api/v1/products", None).await, 6);
    assert_429(&b.get("/api/v1/products", None).await, 6);
    // Health is not under /api and is never limited.
    assert_eq!(b.get("/health/live", None).await.status, StatusCode::OK);
}

#[actix_web::test]
async fn forwarded_for_from_an_untrusted_peer_does_not_get_around_the_limit() {
    let (app, _keys) = spawn_app_with_redis(&redis_url(), |s| limited(s, 3, 100)).await;
    wait_for_redis(&app, "up").await;
    let send = |xff: String| {
        let req = app
            .client
            .get(app.url("/api/v1/products"))
            .header("x-forwarded-for", xff);
        async move { Res::from(req.send().await.expect("send")).await }
    };
    let results = join_all((0..5).map(|i| send(format!("203.0.113.{i}")))).await;
    assert_eq!(results.iter().filter(|r| r.status == StatusCode::OK).count(), 3);
    assert_429(
        results
            .iter()
            .find(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
            .expect("a 429"),
        3,
    );
}

#[actix_web::test]
async fn forwarded_for_from_a_trusted_proxy_names_the_client() {
    let app = spawn_app_with(|s| {
        limited(s, 2, 100);
        s.server.trusted_proxies = vec!["127.0.0.1".parse().expect("ip")];
    })
    .await;
    let send = |xff: &str| {
        let req = app
            .client
            .get(app.url("/api/v1/products"))
            .header("x-forwarded-for", xff);
        async move { Res::from(req.send().await.expect("send")).await }
    };
    assert_eq!(send("198.51.100.1").await.status, StatusCode::OK);
    assert_eq!(send("198.51.100.1").await.status, StatusCode::OK);
    assert_429(&send("198.51.100.1").await, 2);
    // Another client behind the same proxy has its own budget.
    assert_eq!(send("198.51.100.2").await.status, StatusCode::OK);
}

#[actix_web::test]
async fn in_process_login_limit_is_five() {
    let app = spawn_app_with(|s| limited(s, 100, 5)).await;
    for _ in 0..5 {
        let r = app.login("nobody@example.com", "Wrong1234").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = app.login("nobody@example.com", "Wrong1234").await;
    assert_429(&r, 5);
    // Other /api routes still have budget (100).
    assert_eq!(app.get("/api/v1/products", None).await.status, StatusCode::OK);
}

#[actix_web::test]
async fn limits_can_be_switched_off() {
    let app = spawn_app_with(|s| {
        limited(s, 2, 2);
        s.rate_limit.enabled = false;
    })
    .await;
    for _ in 0..5 {
        assert_eq!(app.get("/api/v1/products", None).await.status, StatusCode::OK);
    }
}

#[actix_web::test]
async fn a_redis_outage_degrades_without_5xx_and_recovers_by_itself() {
    let mut redis = OwnRedis::start();
    let (app, _keys) = spawn_app_with_redis(&redis.url(), |s| limited(s, 1000, 1000)).await;
    wait_for_redis(&app, "up").await;
    let admin = app.user_with_role("admin@example.com", "admin").await.access;
    let id = app.product(&admin, "Umbrella", "12.00", 4).await;
    let path = format!("/api/v1/products/{id}");
    app.get(&path, None).await;
    let before = hits(&app);
    assert_eq!(app.get(&path, None).await.status, StatusCode::OK);
    assert_eq!(hits(&app), before + 1, "served from Redis");

    redis.stop();
    // Reads, writes, orders and limits keep working: no 5xx.
    let user = app.user("u@example.com").await.access;
    for _ in 0..5 {
        let r = app.get(&path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let r = app.put(&path, Some(&admin), json!({"price": "13.00"})).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .post(
            "/api/v1/orders",
            Some(&user),
            json!({"items": [{"product_id": id, "quantity": 1}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = app.get(&path, None).await;
    assert_eq!(r.data()["price"], json!("13.00"));
    assert_eq!(r.data()["stock_quantity"], json!(3));
    let r = app.get("/health/ready", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], json!("degraded"));
    assert_eq!(r.body["checks"], json!({"database": "up", "redis": "down"}));

    // Redis comes back: the app notices by itself and uses it again.
    redis.restart();
    wait_for_redis(&app, "up").await;
    app.get(&path, None).await;
    let before = hits(&app);
    let r = app.get(&path, None).await;
    assert_eq!(r.data()["price"], json!("13.00"));
    assert_eq!(hits(&app), before + 1, "cache used again");
}

fn redis_up_metric(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("storefront_redis_up "))
}

#[actix_web::test]
async fn a_redis_outage_keeps_the_instance_ready_but_degraded() {
    let mut redis = OwnRedis::start();
    let (app, _keys) = spawn_app_with_redis(&redis.url(), |_| {}).await;
    wait_for_redis(&app, "up").await;
    let r = app.get("/health/ready", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"status": "up", "checks": {"database": "up", "redis": "up"}})
    );
    assert_eq!(redis_up_metric(&app.get("/metrics", None).await.text), Some("1"));

    redis.stop();
    let r = app.get("/health/ready", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"status": "degraded", "checks": {"database": "up", "redis": "down"}})
    );
    assert_eq!(r.header("retry-after"), None);
    assert_eq!(redis_up_metric(&app.get("/metrics", None).await.text), Some("0"));

    redis.restart();
    wait_for_redis(&app, "up").await;
    let r = app.get("/health/ready", None).await;
    assert_eq!(r.body["status"], json!("up"));
    assert_eq!(redis_up_metric(&app.get("/metrics", None).await.text), Some("1"));
}

#[actix_web::test]
async fn without_redis_there_is_no_redis_up_metric() {
    let app = spawn_app().await;
    let metrics = app.get("/metrics", None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert_eq!(redis_up_metric(&metrics.text), None);
    assert!(
        metrics.text.contains("storefront_cache_hits_total "),
        "{}",
        metrics.text
    );
}

#[actix_web::test]
async fn during_a_redis_outage_limits_fall_back_to_in_process() {
    let mut redis = OwnRedis::start();
    let (app, _keys) = spawn_app_with_redis(&redis.url(), |s| limited(s, 3, 100)).await;
    wait_for_redis(&app, "up").await;
    redis.stop();
    wait_for_redis(&app, "down").await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(app.get("/api/v1/products", None).await.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        3,
        "{statuses:?}"
    );
    assert!(statuses.iter().all(|s| !s.is_server_error()));
}

#[actix_web::test]
async fn without_redis_the_cache_is_in_process() {
    let app = spawn_app().await;
    let admin = app.user_with_role("admin@example.com", "admin").await.access;
    let id = app.product(&admin, "Local", "2.00", 1).await;
    let path = format!("/api/v1/products/{id}");
    app.get(&path, None).await;
    let before = hits(&app);
    app.get(&path, None).await;
    assert_eq!(hits(&app), before + 1);
    app.put(&path, Some(&admin), json!({"price": "3.00"})).await;
    assert_eq!(app.get(&path, None).await.data()["price"], json!("3.00"));
}
