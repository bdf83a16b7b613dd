//! Holes an attacker with a customer account (or none) would try: rate
//! limits dodged by spelling, values echoed back, cacheable tokens, CORS
//! refusals outside the envelope.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, Res, TestApp, PASSWORD};

fn limited(s: &mut storefront::config::Settings, auth_max: u32) {
    s.rate_limit.enabled = true;
    s.rate_limit.api_max = 1000;
    s.rate_limit.auth_max = auth_max;
    s.rate_limit.window_secs = 60;
}

/// A login attempt with a wrong password at `path`, spelled as given (the
/// client sends it as is).
async fn attempt(app: &TestApp, path: &str, xff: Option<&str>) -> Res {
    let mut req = app
        .client
        .post(app.url(path))
        .json(&json!({"email": "victim@example.com", "password": "Wrong-pass-1"}));
    if let Some(ip) = xff {
        req = req.header("x-forwarded-for", ip);
    }
    Res::from(req.send().await.expect("send")).await
}

#[actix_web::test]
async fn every_spelling_of_the_login_path_counts_against_the_login_limit() {
    let app = spawn_app_with(|s| limited(s, 4)).await;
    // Percent-encoded spellings reach the login handler; with a trailing
    // slash no route matches, and the attempt still counts.
    for (spelling, status) in [
        ("/api/v1/auth/%6Cogin", StatusCode::UNAUTHORIZED),
        ("/%61pi/v1/auth/login", StatusCode::UNAUTHORIZED),
        ("/api/%76%31/auth/login", StatusCode::UNAUTHORIZED),
        ("/api/v2/auth/login/", StatusCode::NOT_FOUND),
    ] {
        let r = attempt(&app, spelling, None).await;
        assert_eq!(r.status, status, "{spelling}: {}", r.text);
        assert_eq!(r.body["success"], json!(false), "{spelling}");
    }
    // The fifth attempt, however it is spelled, is over the limit.
    for spelling in ["/api/v1/auth/login", "/api/auth/%6Cogin", "//api//v1/auth/login"] {
        let r = attempt(&app, spelling, None).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{spelling}: {}", r.text);
        assert_eq!(r.body["success"], json!(false));
    }
}

#[actix_web::test]
async fn checks_of_current_password_count_against_the_login_limit() {
    let app = spawn_app_with(|s| limited(s, 3)).await;
    let me = app.user("guesser@example.com").await; // login 1
    let path = format!("/api/v1/users/{}", me.id);
    for guess in ["Guess-1-abc", "Guess-2-abc"] {
        // logins 2 and 3: wrong current_password
        let r = app
            .put(
                &path,
                Some(&me.access),
                json!({"password": "New-passw0rd", "current_password": guess}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    }
    let r = app
        .put(
            &path,
            Some(&me.access),
            json!({"password": "New-passw0rd", "current_password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    let r = app.login("guesser@example.com", PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
}

/// Behind a proxy given as a CIDR range, IPv6 clients are counted per /64:
/// rotating addresses within one allocation does not reset the counter.
#[actix_web::test]
async fn ipv6_clients_behind_a_proxy_range_are_counted_per_64() {
    let app = spawn_app_with(|s| {
        limited(s, 2);
        s.server.trusted_proxies = vec!["127.0.0.0/8".parse().expect("range")];
    })
    .await;
    for ip in ["2001:db8:1:2::1", "2001:db8:1:2::2"] {
        let r = attempt(&app, "/api/v1/auth/login", Some(ip)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{ip}: {}", r.text);
    }
    let r = attempt(
        &app,
        "/api/v1/auth/login",
        Some("2001:db8:1:2:ffff:ffff:ffff:ffff"),
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    // Another /64 has its own counter.
    let r = attempt(&app, "/api/v1/auth/login", Some("2001:db8:1:3::1")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
}

#[actix_web::test]
async fn a_wrong_typed_value_is_named_never_echoed() {
    let app = spawn_app_with(|_| {}).await;
    let r = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "a@example.com", "password": 31415926535897_i64}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(!r.text.contains("31415926535897"), "{}", r.text);
    assert_eq!(r.error_fields(), ["password"]);
    assert_eq!(r.body["errors"][0]["message"], json!("must be a string"));
}

#[actix_web::test]
async fn responses_that_carry_tokens_are_never_stored() {
    let app = spawn_app_with(|_| {}).await;
    let me = app.user("cache@example.com").await;
    let r = app.login("cache@example.com", PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = app
        .post("/api/v1/auth/refresh", None, json!({"refresh_token": me.refresh}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

#[actix_web::test]
async fn a_refused_cors_preflight_is_the_envelope() {
    let app = spawn_app_with(|_| {}).await;
    let r = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/v1/products"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .expect("send");
    let status = r.status();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(content_type.starts_with("application/json"), "{content_type}");
    assert_eq!(body["success"], json!(false), "{body}");
    assert_eq!(body["statusCode"], json!(400));
    assert_eq!(
        body["message"],
        json!("CORS request refused: origin, method or headers not allowed")
    );
    // An allowed origin still gets its preflight answered.
    let r = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/v1/products"))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("http://localhost:3000")
    );
}

/// Roles and activity come from the database for every privileged request,
/// not from the access token's claims alone.
#[actix_web::test]
async fn a_demoted_or_deactivated_admin_loses_admin_rights_at_once() {
    let app = spawn_app_with(|_| {}).await;
    let admin = app.user_with_role("demoted@example.com", "admin").await;
    let body = json!({"name": "Lamps"});
    let r = app
        .post("/api/v1/categories", Some(&admin.access), body.clone())
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    app.db
        .execute(&format!("UPDATE users SET role = 'user' WHERE id = {}", admin.id));
    let r = app
        .post(
            "/api/v1/categories",
            Some(&admin.access),
            json!({"name": "Desks"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = app.get("/api/v1/users", Some(&admin.access)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);

    let other = app.user_with_role("deactivated@example.com", "admin").await;
    app.db.execute(&format!(
        "UPDATE users SET is_active = false WHERE id = {}",
        other.id
    ));
    let r = app.get("/api/v1/users", Some(&other.access)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert_eq!(app.count("SELECT count(*) FROM categories"), 1);
}

#[actix_web::test]
async fn another_accounts_email_or_password_needs_a_strictly_higher_role() {
    let app = spawn_app_with(|_| {}).await;
    let a = app.user_with_role("admin-a@example.com", "admin").await;
    let b = app.user_with_role("admin-b@example.com", "admin").await;
    let root = app.user_with_role("root@example.com", "super_admin").await;
    let path = format!("/api/v1/users/{}", b.id);
    for change in [
        json!({"password": "Taken-0ver-pw"}),
        json!({"email": "attacker@example.com"}),
    ] {
        let r = app.put(&path, Some(&a.access), change).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    }
    assert_eq!(
        app.login("admin-b@example.com", PASSWORD).await.status,
        StatusCode::OK
    );
    // A peer may still fix a name; a higher role may reset the password.
    let r = app.put(&path, Some(&a.access), json!({"name": "Bea"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app
        .put(&path, Some(&root.access), json!({"password": "Reset-by-r00t"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        app.login("admin-b@example.com", "Reset-by-r00t").await.status,
        StatusCode::OK
    );
}

#[actix_web::test]
async fn a_deactivated_users_token_stops_working_for_writes_at_once() {
    let app = spawn_app_with(|_| {}).await;
    let admin = app.user_with_role("shop@example.com", "admin").await;
    let product = app.product(&admin.access, "Lamp", "10.00", 5).await;
    let me = app.user("leaving@example.com").await;
    let order = json!({"items": [{"product_id": product, "quantity": 1}]});
    let r = app.post("/api/v1/orders", Some(&me.access), order.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let first = r.data()["id"].as_i64().expect("id");

    app.db.execute(&format!(
        "UPDATE users SET is_active = false WHERE id = {}",
        me.id
    ));
    let r = app.post("/api/v1/orders", Some(&me.access), order).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let r = app
        .post(
            &format!("/api/v1/orders/{first}/cancel"),
            Some(&me.access),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let r = app
        .put(
            &format!("/api/v1/users/{}", me.id),
            Some(&me.access),
            json!({"name": "Still here"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert_eq!(app.stock_of(product), 4);
    assert_eq!(
        app.count("SELECT count(*) FROM orders WHERE status = 'pending'"),
        1
    );
}

#[actix_web::test]
async fn metrics_can_require_a_bearer_token() {
    let token = format!("scrape-{}", uuid::Uuid::new_v4().simple());
    let app = spawn_app_with(|s| s.metrics.bearer_token = token.clone().into()).await;
    let get = |auth: Option<String>| {
        let mut req = app.client.get(app.url("/metrics"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        async move { req.send().await.expect("send").status() }
    };
    assert_eq!(get(None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(get(Some("Bearer wrong".into())).await, StatusCode::UNAUTHORIZED);
    assert_eq!(get(Some(format!("Bearer {token}"))).await, StatusCode::OK);
    // Unset (the default), /metrics stays open.
    let open = spawn_app_with(|_| {}).await;
    let r = open.client.get(open.url("/metrics")).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::OK);
}
