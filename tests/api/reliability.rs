//! Faults: the database drops every connection of the server under load.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::spawn_app;

/// After pg_terminate_backend on all of the server's connections, requests
/// get 2xx or 503 with Retry-After (never a 500, never a hang), and the server
/// recovers by itself, without a restart.
#[actix_web::test]
async fn the_server_recovers_after_postgres_drops_its_connections() {
    let app = spawn_app().await;
    let admin = app.user_with_role("admin@example.com", "admin").await.access;
    let product = app.product(&admin, "Sturdy", "3.00", 100_000).await;
    let user = app.user("u@example.com").await.access;
    let order = || {
        app.post(
            "/api/v1/orders",
            Some(&user),
            json!({"items": [{"product_id": product, "quantity": 1}]}),
        )
    };
    // Warm every pool.
    for _ in 0..3 {
        assert_eq!(order().await.status, StatusCode::CREATED);
        assert_eq!(
            app.get(&format!("/api/v1/products/{product}"), Some(&admin))
                .await
                .status,
            StatusCode::OK
        );
        assert_eq!(
            app.get("/api/v1/orders", Some(&user)).await.status,
            StatusCode::OK
        );
        assert_eq!(
            app.get("/api/v1/auth/me", Some(&user)).await.status,
            StatusCode::OK
        );
    }
    let killed = app.db.texts(&format!(
        "SELECT count(pg_terminate_backend(pid))::text AS name FROM pg_stat_activity \
         WHERE application_name = '{}' AND pid <> pg_backend_pid()",
        app.db.schema
    ));
    assert_ne!(killed, ["0"], "no server connection was terminated");

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut recovered = false;
    let mut unavailable = 0;
    while Instant::now() < deadline {
        let started = Instant::now();
        let results = [
            order().await,
            app.get("/api/v1/orders", Some(&user)).await,
            app.get("/api/v1/auth/me", Some(&user)).await,
            app.put(
                &format!("/api/v1/products/{product}"),
                Some(&admin),
                json!({"name": "Sturdier"}),
            )
            .await,
        ];
        assert!(started.elapsed() < Duration::from_secs(10), "requests hung");
        for r in &results {
            assert!(
                r.status.is_success() || r.status == StatusCode::SERVICE_UNAVAILABLE,
                "{}: {}",
                r.status,
                r.text
            );
            if r.status == StatusCode::SERVICE_UNAVAILABLE {
                unavailable += 1;
                assert!(r.header("retry-after").is_some());
                assert!(!r.text.contains("terminating"), "internals leaked: {}", r.text);
            }
        }
        if results.iter().all(|r| r.status.is_success()) {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "still failing after 20 s ({unavailable} answers were 503)"
    );
    eprintln!("answers with 503 before recovery: {unavailable}");
    let r = app.get("/health/ready", None).await;
    assert_eq!(r.status, StatusCode::OK);
}
