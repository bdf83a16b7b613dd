//! Conventions every response follows: envelope, status codes of extractor
//! failures, request ids, security headers, CORS, compression, health.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with};

#[actix_web::test]
async fn health_live_and_ready() {
    let app = spawn_app().await;
    let r = app.get("/health/live", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({"status": "up"}));
    let r = app.get("/health/ready", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"status": "up", "checks": {"database": "up", "redis": "disabled"}})
    );
}

#[actix_web::test]
async fn ready_reports_database_and_redis_down() {
    // Nothing listens on port 1.
    let app = spawn_app_with(|s| {
        s.database.migrate_on_start = false;
        s.database.url = "postgres://postgres@127.0.0.1:1/nothing".to_owned().into();
        s.database.acquire_timeout_ms = 300;
        s.redis.url = "redis://127.0.0.1:1".to_owned().into();
    })
    .await;
    let r = app.get("/health/ready", None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body["checks"], json!({"database": "down", "redis": "down"}));
    // And an API call that needs the database is a 503 with Retry-After, not a hang.
    let started = std::time::Instant::now();
    let r = app.login("a@example.com", "Passw0rd!").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.body["success"], json!(false));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[actix_web::test]
async fn ready_reports_redis_up_when_configured() {
    let (app, _keys) = crate::helpers::spawn_app_with_redis(&crate::helpers::redis_url(), |_| {}).await;
    let r = app.get("/health/ready", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["checks"]["redis"], json!("up"));
}

#[actix_web::test]
async fn envelope_on_errors_and_unknown_routes() {
    let app = spawn_app().await;
    for path in ["/api/v1/nope", "/api/nope", "/nope"] {
        let r = app.get(path, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.body["success"], json!(false));
        assert_eq!(r.body["statusCode"], json!(404));
        assert!(r.body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(r.body.get("errors").is_some());
    }
    let r = app
        .request(reqwest::Method::PATCH, "/api/v1/auth/login", None, None)
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.body["statusCode"], json!(405));
    assert_eq!(r.body["success"], json!(false));
}

#[actix_web::test]
async fn body_failures_are_415_400_413() {
    let app = spawn_app_with(|s| s.server.json_limit = 1024).await;
    let url = app.url("/api/v1/users");
    let r = app
        .client
        .post(&url)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = app.client.post(&url).body("{}").send().await.expect("send");
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "no content type");

    let r = app
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"email\":")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["statusCode"], json!(400));

    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(2000));
    let r = app
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["statusCode"], json!(413));

    // A value of the wrong type names its field.
    let r = app
        .post(
            "/api/v1/users",
            None,
            json!({"email": 5, "password": "x", "name": "ab"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_fields(), ["email"]);

    // Deep nesting is refused, not parsed.
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let r = app
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(app.get("/health/live", None).await.status, StatusCode::OK);
}

#[actix_web::test]
async fn bad_path_ids_are_400() {
    let app = spawn_app().await;
    let admin = app.user_with_role("admin@example.com", "admin").await;
    for id in ["abc", "99999999999999999999999"] {
        let r = app.get(&format!("/api/v1/users/{id}"), Some(&admin.access)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{id}: {}", r.text);
        assert_eq!(r.error_fields(), ["id"]);
    }
}

#[actix_web::test]
async fn request_id_is_echoed_or_generated() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .expect("send");
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let r = app
        .client
        .get(app.url("/api/v1/nope"))
        .header("x-request-id", "bad id\twith tab")
        .send()
        .await
        .expect("send");
    let id = r.headers()["x-request-id"].to_str().expect("ascii").to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let r = app
        .client
        .get(app.url("/api/v1/nope"))
        .send()
        .await
        .expect("send");
    assert!(r.headers().contains_key("x-request-id"));
}

#[actix_web::test]
async fn helmet_headers_on_every_response() {
    let app = spawn_app().await;
    for path in ["/health/live", "/api/v1/nope", "/api/v1/auth/me"] {
        let r = app.get(path, None).await;
        for (name, value) in storefront::http::middleware::security_headers::HEADERS {
            assert_eq!(r.header(name), Some(*value), "{name} on {path}");
        }
        assert!(r.header("x-powered-by").is_none());
    }
}

#[actix_web::test]
async fn cors_allows_configured_origins_with_credentials() {
    let app = spawn_app_with(|s| s.server.allowed_origins = vec!["https://shop.example".into()]).await;
    let r = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/v1/auth/login"))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type,authorization")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["access-control-allow-origin"], "https://shop.example");
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");

    let r = app
        .client
        .get(app.url("/health/live"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("send");
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[actix_web::test]
async fn responses_compress_when_accepted() {
    let app = spawn_app().await;
    let admin = app.user_with_role("admin@example.com", "admin").await;
    for enc in ["gzip", "br", "zstd"] {
        let r = app
            .client
            .get(app.url("/api/v1/users?limit=100"))
            .bearer_auth(&admin.access)
            .header("accept-encoding", enc)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-encoding"], enc);
    }
}
