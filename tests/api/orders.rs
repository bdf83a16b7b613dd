//! Orders: placement, pricing, validation, reads, the status machine,
//! cancellation with restock, and Idempotency-Key.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};

struct Shop {
    admin: String,
    user: String,
    user_id: i64,
    other: String,
    pen: i64,
    book: i64,
}

async fn shop(app: &TestApp) -> Shop {
    let admin = app.user_with_role("admin@example.com", "admin").await.access;
    let u = app.user("buyer@example.com").await;
    let other = app.user("other@example.com").await.access;
    let pen = app.product(&admin, "Pen", "1.25", 10).await;
    let book = app.product(&admin, "Book", "12.00", 3).await;
    Shop {
        admin,
        user: u.access,
        user_id: u.id,
        other,
        pen,
        book,
    }
}

#[actix_web::test]
async fn placing_an_order_prices_sums_and_takes_stock() {
    let app = spawn_app().await;
    let s = shop(&app).await;
    let r = app
        .post(
            "/api/v1/orders",
            Some(&s.user),
            json!({"items": [{"product_id": s.pen, "quantity": 2}, {"product_id": s.book, "quantity": 1},
                             {"product_id": s.pen, "quantity": 1}], "user_id": 999, "status": "paid"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let o = r.data();
    assert_eq!(o["status"], json!("pending"));
    assert_eq!(o["user_id"], json!(s.user_id));
    assert_eq!(o["total_amount"], json!("15.75"));
    let items = o["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "lines for one product are summed");
    assert_eq!(items[0]["product_id"], json!(s.pen));
    assert_eq!(items[0]["quantity"], json!(3));
    assert_eq!(items[0]["unit_price"], json!("1.25"));
    let keys: Vec<&String> = o.as_object().expect("obj").keys().collect();
    assert_eq!(
        keys,
        [
            "created_at",
            "id",
            "items",
            "status",
            "total_amount",
            "updated_at",
            "user_id"
        ]
    );
    assert_eq!(app.stock_of(s.pen), 7);
    assert_eq!(app.stock_of(s.book), 2);

    // The unit price is the price at placement: a later change leaves it.
    app.put(
        &format!("/api/v1/products/{}", s.pen),
        Some(&s.admin),
        json!({"price": "9.00"}),
    )
    .await;
    let id = o["id"].as_i64().expect("id");
    let r = app.get(&format!("/api/v1/orders/{id}"), Some(&s.user)).await;
    assert_eq!(r.data()["items"][0]["unit_price"], json!("1.25"));
    assert_eq!(r.data()["total_amount"], json!("15.75"));
}

#[actix_web::test]
async fn order_validation() {
    let app = spawn_app().await;
    let s = shop(&app).await;
    let r = app
        .post(
            "/api/v1/orders",
            None,
            json!({"items": [{"product_id": s.pen, "quantity": 1}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    for (body, fields) in [
        (json!({}), vec!["items"]),
        (json!({"items": []}), vec!["items"]),
        (
            json!({"items": [{"product_id": s.pen, "quantity": 0}]}),
            vec!["items[0].quantity"],
        ),
        (
            json!({"items": [{"product_id": s.pen, "quantity": 1001}]}),
            vec!["items[0].quantity"],
        ),
        (
            json!({"items": [{"quantity": 1}, {"product_id": "x", "quantity": 1}]}),
            vec!["items[0].product_id", "items[1].product_id"],
        ),
    ] {
        let r = app.post("/api/v1/orders", Some(&s.user), body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.error_fields(), fields, "{body}");
    }
    let many: Vec<Value> = (0..101)
        .map(|_| json!({"product_id": s.pen, "quantity": 1}))
        .collect();
    let r = app
        .post("/api/v1/orders", Some(&s.user), json!({"items": many}))
        .await;
    assert_eq!(r.error_fields(), ["items"]);

    // Unknown or inactive products: 422 naming the lines, nothing changes.
    app.delete(&format!("/api/v1/products/{}", s.book), Some(&s.admin))
        .await;
    let r = app
        .post(
            "/api/v1/orders",
            Some(&s.user),
            json!({"items": [{"product_id": s.pen, "quantity": 1}, {"product_id": s.book, "quantity": 1}, {"product_id": 999999, "quantity": 1}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.error_fields(), ["items[1].product_id", "items[2].product_id"]);
    assert_eq!(app.stock_of(s.pen), 10);
    assert_eq!(app.count("SELECT count(*) FROM orders"), 0);
}

#[actix_web::test]
async fn a_multi_line_order_with_a_short_line_changes_nothing() {
    let app = spawn_app().await;
    let s = shop(&app).await;
    let r = app
        .post(
            "/api/v1/orders",
            Some(&s.user),
            json!({"items": [{"product_id": s.pen, "quantity": 5}, {"product_id": s.book, "quantity": 4}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.error_fields(), ["items[1].product_id"]);
    assert_eq!(app.stock_of(s.pen), 10);
    assert_eq!(app.stock_of(s.book), 3);
    assert_eq!(app.count("SELECT count(*) FROM orders"), 0);
    assert_eq!(app.count("SELECT count(*) FROM order_items"), 0);
}

#[actix_web::test]
async fn reads_and_listing_respect_ownership() {
    let app = spawn_app().await;
    let s = shop(&app).await;
    let mine = app
        .post(
            "/api/v1/orders",
            Some(&s.user),
            json!({"items": [{"product_id": s.pen, "quantity": 1}]}),
        )
        .await;
    let id = mine.data()["id"].as_i64().expect("id");
    let theirs = app
        .post(
            "/api/v1/orders",
            Some(&s.other),
            json!({"items": [{"product_id": s.pen, "quantity": 1}]}),
        )
        .await;
    let their_id = theirs.data()["id"].as_i64().expect("id");

    assert_eq!(
        app.get(&format!("/api/v1/orders/{id}"), Some(&s.user))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.get(&format!("/api/v1/orders/{their_id}"), Some(&s.user))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&format!("/api/v1/orders/{their_id}"), Some(&s.admin))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.get("/api/v1/orders/999999", Some(&s.admin)).await.status,
        StatusCode::NOT_FOUND
    );

    let r = app
        .get(&format!("/api/v1/orders?user_id={}", 0), Some(&s.user))
        .await;
    assert_eq!(
        r.data()["total"],
        json!(1),
        "users only see their own, whatever they filter"
    );
    assert_eq!(r.data()["items"][0]["id"], json!(id));
    let r = app.get("/api/v1/orders", Some(&s.admin)).await;
    assert_eq!(r.data()["total"], json!(2));
    let r = app
        .get(&format!("/api/v1/orders?user_id={}", s.user_id), Some(&s.admin))
        .await;
    assert_eq!(r.data()["total"], json!(1));
    app.post(&format!("/api/v1/orders/{id}/cancel"), Some(&s.user), json!({}))
        .await;
    let r = app.get("/api/v1/orders?status=cancelled", Some(&s.admin)).await;
    assert_eq!(r.data()["total"], json!(1));
    let r = app.get("/api/v1/orders?status=bogus", Some(&s.admin)).await;
    assert_eq!(r.error_fields(), ["status"]);
    // v2 keyset.
    let r = app.get("/api/v2/orders?limit=1", Some(&s.admin)).await;
    assert_eq!(r.data()["items"][0]["id"], json!(their_id), "newest first");
    let c = r.data()["next_cursor"].as_str().expect("cursor");
    let r = app
        .get(&format!("/api/v2/orders?limit=1&cursor={c}"), Some(&s.admin))
        .await;
    assert_eq!(r.data()["items"][0]["id"], json!(id));
    assert_eq!(r.data()["next_cursor"], Value::Null);
}

#[actix_web::test]
async fn cancellation_restocks_once_and_follows_the_rules() {
    let app = spawn_app().await;
    let s = shop(&app).await;
    let place = |token: String| {
        let app = &app;
        let pen = s.pen;
        async move {
            let r = app
                .post(
                    "/api/v1/orders",
                    Some(&token),
                    json!({"items": [{"product_id": pen, "quantity": 2}]}),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            r.data()["id"].as_i64().expect("id")
        }
    };
    let id = place(s.user.clone()).await;
    assert_eq!(app.stock_of(s.pen), 8);
    // Another user cannot see it, so cannot cancel it.
    let r = app
        .post(&format!("/api/v1/orders/{id}/cancel"), Some(&s.other), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .post(&format!("/api/v1/orders/{id}/cancel"), Some(&s.user), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.data()["status"], json!("cancelled"));
    assert_eq!(app.stock_of(s.pen), 10);
    let r = app
        .post(&format!("/api/v1/orders/{id}/cancel"), Some(&s.user), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(app.stock_of(s.pen), 10, "a second cancel does not restock again");

    // Owners cannot cancel a paid order; admins can.
    let id = place(s.user.clone()).await;
    let r = app
        .patch(
            &format!("/api/v1/orders/{id}/status"),
            Some(&s.admin),
            json!({"status": "paid"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app
        .post(&format!("/api/v1/orders/{id}/cancel"), Some(&s.user), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = app
        .post(&format!("/api/v1/orders/{id}/cancel"), Some(&s.admin), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(app.stock_of(s.pen), 10);
}

#[actix_web::test]
async fn the_full_status_transition_table() {
    let app = spawn_app().await;
    let s = shop(&app).await;
    let statuses = ["pending", "paid", "shipped", "delivered", "cancelled"];
    let allowed = [
        ("pending", "paid"),
        ("paid", "shipped"),
        ("shipped", "delivered"),
        ("pending", "cancelled"),
        ("paid", "cancelled"),
    ];
    // The path from pending to each status.
    let path_to = |target: &str| -> Vec<&'static str> {
        match target {
            "pending" => vec![],
            "paid" => vec!["paid"],
            "shipped" => vec!["paid", "shipped"],
            "delivered" => vec!["paid", "shipped", "delivered"],
            _ => vec!["cancelled"],
        }
    };
    for from in statuses {
        for to in statuses {
            let r = app
                .post(
                    "/api/v1/orders",
                    Some(&s.user),
                    json!({"items": [{"product_id": s.pen, "quantity": 1}]}),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            let id = r.data()["id"].as_i64().expect("id");
            let url = format!("/api/v1/orders/{id}/status");
            for step in path_to(from) {
                let r = app.patch(&url, Some(&s.admin), json!({"status": step})).await;
                assert_eq!(r.status, StatusCode::OK, "{from}: step {step}: {}", r.text);
            }
            let stock_before = app.stock_of(s.pen);
            let r = app.patch(&url, Some(&s.admin), json!({"status": to})).await;
            let ok = allowed.contains(&(from, to));
            let expected = if ok { StatusCode::OK } else { StatusCode::CONFLICT };
            assert_eq!(r.status, expected, "{from} -> {to}: {}", r.text);
            let restocked = app.stock_of(s.pen) - stock_before;
            assert_eq!(
                restocked,
                i64::from(ok && to == "cancelled"),
                "{from} -> {to} restock"
            );
            if ok {
                assert_eq!(r.data()["status"], json!(to));
            }
            // Refill for the next round.
            if app.stock_of(s.pen) < 3 {
                app.post(
                    &format!("/api/v1/products/{}/stock", s.pen),
                    Some(&s.admin),
                    json!({"delta": 10}),
                )
                .await;
            }
        }
    }
    let r = app
        .post(
            "/api/v1/orders",
            Some(&s.user),
            json!({"items": [{"product_id": s.pen, "quantity": 1}]}),
        )
        .await;
    let url = format!("/api/v1/orders/{}/status", r.data()["id"]);
    assert_eq!(
        app.patch(&url, Some(&s.user), json!({"status": "paid"}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let r = app
        .patch(&url, Some(&s.admin), json!({"status": "refunded"}))
        .await;
    assert_eq!(r.error_fields(), ["status"]);
}

#[actix_web::test]
async fn idempotency_key_replays_refuses_other_bodies_and_scopes_to_the_user() {
    let app = spawn_app().await;
    let s = shop(&app).await;
    let body = json!({"items": [{"product_id": s.pen, "quantity": 1}]});
    let send = |token: &str, key: &str, body: Value| {
        let req = app
            .client
            .post(app.url("/api/v1/orders"))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&body);
        async move { crate::helpers::Res::from(req.send().await.expect("send")).await }
    };
    let first = send(&s.user, "key-1", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert!(first.header("idempotent-replayed").is_none());
    let again = send(&s.user, "key-1", body.clone()).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.text, first.text, "the first response, byte for byte");
    assert_eq!(app.count("SELECT count(*) FROM orders"), 1);
    assert_eq!(app.stock_of(s.pen), 9);

    let other_body = json!({"items": [{"product_id": s.pen, "quantity": 2}]});
    let r = send(&s.user, "key-1", other_body).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Keys are per user.
    let r = send(&s.other, "key-1", body.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.header("idempotent-replayed").is_none());
    assert_eq!(app.count("SELECT count(*) FROM orders"), 2);

    // A refused order frees its key: after a restock the retry succeeds.
    let big = json!({"items": [{"product_id": s.book, "quantity": 3}]});
    app.post(
        &format!("/api/v1/products/{}/stock", s.book),
        Some(&s.admin),
        json!({"delta": -1}),
    )
    .await;
    assert_eq!(
        send(&s.user, "key-2", big.clone()).await.status,
        StatusCode::CONFLICT
    );
    app.post(
        &format!("/api/v1/products/{}/stock", s.book),
        Some(&s.admin),
        json!({"delta": 1}),
    )
    .await;
    assert_eq!(send(&s.user, "key-2", big).await.status, StatusCode::CREATED);

    // Bad keys.
    for key in [" ".repeat(0), "x".repeat(256), "caf\u{e9}".into()] {
        let req = app
            .client
            .post(app.url("/api/v1/orders"))
            .bearer_auth(&s.user)
            .header("idempotency-key", key.as_bytes())
            .json(&body);
        let r = crate::helpers::Res::from(req.send().await.expect("send")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{key:?}");
        assert_eq!(r.error_fields(), ["Idempotency-Key"]);
    }

    // Keys older than the TTL are forgotten.
    app.db
        .execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'key-1'");
    let r = send(&s.user, "key-1", body.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.header("idempotent-replayed").is_none());
}

#[actix_web::test]
async fn in_flight_key_is_409_and_a_stale_claim_is_taken_over() {
    let app = spawn_app().await;
    let s = shop(&app).await;
    // A claim whose request is still running (or died just now).
    app.db.execute(&format!(
        "INSERT INTO idempotency_keys (user_id, scope, key, request_hash) VALUES ({}, 'orders', 'busy', '\\x00')",
        s.user_id
    ));
    let req = || {
        app.client
            .post(app.url("/api/v1/orders"))
            .bearer_auth(&s.user)
            .header("idempotency-key", "busy")
            .json(&json!({"items": [{"product_id": s.pen, "quantity": 1}]}))
    };
    let r = crate::helpers::Res::from(req().send().await.expect("send")).await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "different body hash: {}",
        r.text
    );
    let hash = {
        // Same lines, so the same hash: replace the stored one with ours by
        // claiming under another key first.
        let r = crate::helpers::Res::from(
            app.client
                .post(app.url("/api/v1/orders"))
                .bearer_auth(&s.user)
                .header("idempotency-key", "probe")
                .json(&json!({"items": [{"product_id": s.pen, "quantity": 1}]}))
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
        app.db
            .texts("SELECT encode(request_hash, 'hex') AS name FROM idempotency_keys WHERE key = 'probe'")[0]
            .clone()
    };
    app.db.execute(&format!(
        "UPDATE idempotency_keys SET request_hash = '\\x{hash}' WHERE key = 'busy'"
    ));
    let r = crate::helpers::Res::from(req().send().await.expect("send")).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    // After the stale timeout the claim is taken over and the order placed.
    app.db
        .execute("UPDATE idempotency_keys SET created_at = now() - interval '2 minutes' WHERE key = 'busy'");
    let r = crate::helpers::Res::from(req().send().await.expect("send")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

/// A request stalled past the stale window (its product row is locked from
/// here) loses its claim to the retry; the retry's order is the only one, and
/// the stalled request creates nothing of its own.
#[actix_web::test]
async fn a_stalled_request_whose_claim_was_taken_over_creates_no_second_order() {
    let app = crate::helpers::spawn_app_with(|s| s.orders.idempotency_stale_secs = 1).await;
    let s = shop(&app).await;
    let url = app.db.url.clone();
    let pen = s.pen;
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        use diesel::{connection::SimpleConnection, Connection};
        let mut conn = crate::helpers::SyncConn::establish(&url).expect("connect");
        conn.batch_execute(&format!(
            "BEGIN; SELECT 1 FROM products WHERE id = {pen} FOR UPDATE"
        ))
        .expect("lock");
        locked_tx.send(()).expect("signal");
        std::thread::sleep(std::time::Duration::from_millis(3500));
        conn.batch_execute("COMMIT").expect("commit");
    });
    locked_rx.recv().expect("lock held");
    let send = || {
        let req = app
            .client
            .post(app.url("/api/v1/orders"))
            .bearer_auth(&s.user)
            .header("idempotency-key", "stalled")
            .json(&json!({"items": [{"product_id": s.pen, "quantity": 1}]}));
        async move { crate::helpers::Res::from(req.send().await.expect("send")).await }
    };
    let first = send();
    let retry = async {
        // Past the stale window of the first request's claim.
        tokio::time::sleep(std::time::Duration::from_millis(1800)).await;
        send().await
    };
    let (first, retry) = futures_util::future::join(first, retry).await;
    holder.join().expect("lock holder");

    assert_eq!(
        app.count("SELECT count(*) FROM orders"),
        1,
        "{} / {}",
        first.text,
        retry.text
    );
    assert_eq!(app.stock_of(s.pen), 9);
    let order_id = app.count("SELECT id FROM orders");
    assert_eq!(
        app.count("SELECT order_id FROM idempotency_keys WHERE key = 'stalled' AND response_status = 201"),
        order_id
    );
    // One of them created the order; the other answers as the key does:
    // the same order replayed, or 409 while the retry was still running.
    let created: Vec<_> = [&first, &retry]
        .into_iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .collect();
    assert!(!created.is_empty(), "{} / {}", first.text, retry.text);
    for r in &created {
        assert_eq!(r.data()["id"], json!(order_id), "{}", r.text);
    }
    for r in [&first, &retry] {
        assert!(
            r.status == StatusCode::CREATED || r.status == StatusCode::CONFLICT,
            "{}: {}",
            r.status,
            r.text
        );
    }
}
