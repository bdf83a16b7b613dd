//! Checkout holds: every rule of the reservations API, concurrency across
//! instances, the confirm/expiry race, kill -9 and Redis down.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    spawn_app, spawn_app_with, spawn_app_with_redis, start_binary, test_settings, wait_for_redis, OwnRedis,
    Res, TestApp, TestDb,
};

async fn hold(app: &TestApp, token: &str, product: i64, quantity: i64) -> Res {
    app.post(
        "/api/v1/reservations",
        Some(token),
        json!({"items": [{"product_id": product, "quantity": quantity}]}),
    )
    .await
}

fn id_of(r: &Res) -> String {
    r.data()["id"].as_str().expect("reservation id").to_owned()
}

/// `stock_quantity + reserved_quantity + units in orders not cancelled`,
/// which must equal the initial stock plus adjustments at any quiet moment.
fn books(db: &TestDb, product: i64) -> i64 {
    db.count_of(&format!(
        "SELECT stock_quantity + reserved_quantity + (SELECT coalesce(sum(i.quantity), 0) FROM order_items i \
           JOIN orders o ON o.id = i.order_id WHERE i.product_id = {product} AND o.status <> 'cancelled') \
         FROM products WHERE id = {product}"
    ))
}

/// `reserved_quantity` must equal the units of the product's active holds.
fn reserved_matches_active_holds(db: &TestDb, product: i64) -> bool {
    db.count_of(&format!(
        "SELECT (reserved_quantity = (SELECT coalesce(sum(i.quantity), 0) FROM reservation_items i \
           JOIN reservations r ON r.id = i.reservation_id WHERE i.product_id = {product} AND r.status = 'active'))::int \
         FROM products WHERE id = {product}"
    )) == 1
}

fn levels(r: &Res) -> (i64, i64) {
    (
        r.data()["stock_quantity"].as_i64().expect("stock"),
        r.data()["reserved_quantity"].as_i64().expect("reserved"),
    )
}

#[actix_web::test]
async fn a_hold_moves_stock_into_reserved_and_its_confirm_makes_one_order_at_the_held_prices() {
    let app = spawn_app().await;
    let admin = app.user_with_role("admin@example.com", "admin").await.access;
    let buyer = app.user("buyer@example.com").await.access;
    let other = app.user("other@example.com").await.access;
    let product = app.product(&admin, "Lamp", "20.00", 10).await;

    let r = hold(&app, &buyer, product, 3).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = id_of(&r);
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    assert_eq!(r.data()["status"], "active");
    assert_eq!(r.data()["order_id"], Value::Null);
    assert_eq!(r.data()["total_amount"], "60.00");
    assert_eq!(
        r.data()["items"],
        json!([{"product_id": product, "quantity": 3, "unit_price": "20.00"}])
    );
    let created = chrono::DateTime::parse_from_rfc3339(r.data()["created_at"].as_str().expect("created_at"))
        .expect("timestamp");
    let expires = chrono::DateTime::parse_from_rfc3339(r.data()["expires_at"].as_str().expect("expires_at"))
        .expect("timestamp");
    assert_eq!((expires - created).num_seconds(), 600, "the default ttl");

    // Every product view shows the held units apart from the stock.
    let path = format!("/api/v1/products/{product}");
    assert_eq!(levels(&app.get(&path, None).await), (7, 3));
    assert_eq!(levels(&app.get(&path, Some(&admin)).await), (7, 3));
    let list = app.get("/api/v2/products?limit=5", None).await;
    assert_eq!(list.data()["items"][0]["reserved_quantity"], 3, "{}", list.text);
    let list = app.get("/api/v1/products?search=lamp", None).await;
    assert_eq!(list.data()["items"][0]["reserved_quantity"], 3, "{}", list.text);

    // Owner and admin see it; anyone else, or a malformed id, gets 404.
    let at = format!("/api/v1/reservations/{id}");
    assert_eq!(app.get(&at, Some(&buyer)).await.data()["id"], json!(id));
    assert_eq!(app.get(&at, Some(&admin)).await.status, StatusCode::OK);
    assert_eq!(app.get(&at, Some(&other)).await.status, StatusCode::NOT_FOUND);
    for bad in ["nope", "123", "00000000-0000-0000-0000-00000000000g"] {
        let p = format!("/api/v1/reservations/{bad}");
        assert_eq!(app.get(&p, Some(&buyer)).await.status, StatusCode::NOT_FOUND);
        assert_eq!(app.delete(&p, Some(&buyer)).await.status, StatusCode::NOT_FOUND);
        let c = app.post(&format!("{p}/confirm"), Some(&buyer), json!({})).await;
        assert_eq!(c.status, StatusCode::NOT_FOUND, "{}", c.text);
    }
    assert_eq!(app.get(&at, None).await.status, StatusCode::UNAUTHORIZED);

    // The price moves; the hold keeps its own.
    let r = app.put(&path, Some(&admin), json!({"price": "25.00"})).await;
    assert_eq!(r.status, StatusCode::OK);

    // Only the owner confirms: an admin and a stranger get 404.
    let confirm = format!("{at}/confirm");
    for token in [&admin, &other] {
        let r = app.post(&confirm, Some(token), json!({})).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    }
    let r = app.post(&confirm, Some(&buyer), json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let order = r.data().clone();
    assert_eq!(order["status"], "pending");
    assert_eq!(order["total_amount"], "60.00");
    assert_eq!(order["items"][0]["unit_price"], "20.00");
    assert_eq!(order["items"][0]["quantity"], 3);
    let again = app.post(&confirm, Some(&buyer), json!({})).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.data()["id"], order["id"]);
    assert_eq!(app.count("SELECT count(*) FROM orders"), 1);

    let r = app.get(&at, Some(&buyer)).await;
    assert_eq!(r.data()["status"], "confirmed");
    assert_eq!(r.data()["order_id"], order["id"]);
    assert_eq!(levels(&app.get(&path, None).await), (7, 0));
    assert_eq!(books(&app.db, product), 10);

    // A confirmed hold is not released, even after its order is cancelled.
    assert_eq!(app.delete(&at, Some(&buyer)).await.status, StatusCode::CONFLICT);
    let cancel = format!("/api/v1/orders/{}/cancel", order["id"]);
    assert_eq!(
        app.post(&cancel, Some(&buyer), json!({})).await.status,
        StatusCode::OK
    );
    assert_eq!(
        levels(&app.get(&path, None).await),
        (10, 0),
        "the cancel restocked"
    );
    let r = app.delete(&at, Some(&admin)).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(levels(&app.get(&path, None).await), (10, 0));
    assert_eq!(books(&app.db, product), 10);
}

#[actix_web::test]
async fn release_gives_the_units_back_once_and_a_released_hold_is_gone() {
    let app = spawn_app().await;
    let admin = app.user_with_role("admin@example.com", "admin").await.access;
    let buyer = app.user("buyer@example.com").await.access;
    let other = app.user("other@example.com").await.access;
    let product = app.product(&admin, "Kettle", "30.00", 5).await;

    let id = id_of(&hold(&app, &buyer, product, 2).await);
    let at = format!("/api/v1/reservations/{id}");
    assert_eq!(app.delete(&at, Some(&other)).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.stock_of(product), 3);

    let r = app.delete(&at, Some(&buyer)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.data()["status"], "released");
    assert_eq!(app.stock_of(product), 5);
    let again = app.delete(&at, Some(&buyer)).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.data(), r.data(), "unchanged, same updated_at");
    assert_eq!(app.stock_of(product), 5, "released once");

    let r = app.post(&format!("{at}/confirm"), Some(&buyer), json!({})).await;
    assert_eq!(r.status, StatusCode::GONE, "{}", r.text);
    assert_eq!(r.body["success"], false);
    assert_eq!(app.count("SELECT count(*) FROM orders"), 0);

    // An admin may release anyone's hold.
    let id = id_of(&hold(&app, &buyer, product, 1).await);
    let r = app
        .delete(&format!("/api/v1/reservations/{id}"), Some(&admin))
        .await;
    assert_eq!(r.data()["status"], "released");
    assert_eq!(books(&app.db, product), 5);
    assert!(reserved_matches_active_holds(&app.db, product));
}

#[actix_web::test]
async fn holds_follow_the_order_line_rules_and_the_ttl_bounds() {
    let app = spawn_app().await;
    let admin = app.user_with_role("admin@example.com", "admin").await.access;
    let buyer = app.user("buyer@example.com").await.access;
    let product = app.product(&admin, "Chair", "10.00", 4).await;
    let gone = app.product(&admin, "Old chair", "10.00", 4).await;
    app.delete(&format!("/api/v1/products/{gone}"), Some(&admin))
        .await;
    let line = json!([{"product_id": product, "quantity": 1}]);

    for (ttl, ok) in [
        (json!(29), false),
        (json!(3601), false),
        (json!("60"), false),
        (json!(1.5), false),
        (json!(30), true),
        (json!(3600), true),
    ] {
        let r = app
            .post(
                "/api/v1/reservations",
                Some(&buyer),
                json!({"items": line, "ttl_secs": ttl}),
            )
            .await;
        if ok {
            assert_eq!(r.status, StatusCode::CREATED, "{ttl}: {}", r.text);
            let c =
                chrono::DateTime::parse_from_rfc3339(r.data()["created_at"].as_str().expect("c")).expect("t");
            let e =
                chrono::DateTime::parse_from_rfc3339(r.data()["expires_at"].as_str().expect("e")).expect("t");
            assert_eq!(Some((e - c).num_seconds()), ttl.as_i64());
        } else {
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{ttl}: {}", r.text);
            assert_eq!(r.error_fields(), ["ttl_secs"]);
        }
    }
    // Every bad field at once.
    let r = app
        .post(
            "/api/v1/reservations",
            Some(&buyer),
            json!({"items": [{"product_id": 0, "quantity": 1001}], "ttl_secs": 5}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.error_fields(),
        ["items[0].product_id", "items[0].quantity", "ttl_secs"]
    );
    let r = app.post("/api/v1/reservations", Some(&buyer), json!({})).await;
    assert_eq!(r.error_fields(), ["items"]);

    // 2 of 4 are held: 3 more is short, named per line; nothing is taken.
    let r = app
        .post(
            "/api/v1/reservations",
            Some(&buyer),
            json!({"items": [{"product_id": product, "quantity": 1}, {"product_id": product, "quantity": 2}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.error_fields(), ["items[0].product_id"]);
    let r = app
        .post(
            "/api/v1/reservations",
            Some(&buyer),
            json!({"items": [{"product_id": product, "quantity": 1}, {"product_id": gone, "quantity": 1}, {"product_id": 999999, "quantity": 1}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.error_fields(), ["items[1].product_id", "items[2].product_id"]);
    assert_eq!(app.stock_of(product), 2);
    assert_eq!(books(&app.db, product), 4);

    // Stock adjustments never touch held units.
    let stock = format!("/api/v1/products/{product}/stock");
    let r = app.post(&stock, Some(&admin), json!({"delta": -3})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let r = app.post(&stock, Some(&admin), json!({"delta": -2})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.data()["stock_quantity"], 0);
    assert_eq!(books(&app.db, product), 2, "4 - 2 adjusted");
}

#[actix_web::test]
async fn a_user_holds_at_most_the_limit_of_active_reservations() {
    let app = spawn_app().await;
    let admin = app.user_with_role("admin@example.com", "admin").await.access;
    let buyer = app.user("buyer@example.com").await.access;
    let other = app.user("other@example.com").await.access;
    let product = app.product(&admin, "Pen", "1.00", 100).await;

    let mut ids = Vec::new();
    for _ in 0..5 {
        let r = hold(&app, &buyer, product, 1).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        ids.push(id_of(&r));
    }
    let r = hold(&app, &buyer, product, 1).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("max_active_per_user"), "{}", r.text);
    // The limit is per user.
    assert_eq!(hold(&app, &other, product, 1).await.status, StatusCode::CREATED);

    // Released, confirmed and expired holds do not count.
    app.delete(&format!("/api/v1/reservations/{}", ids[0]), Some(&buyer))
        .await;
    assert_eq!(hold(&app, &buyer, product, 1).await.status, StatusCode::CREATED);
    let r = app
        .post(
            &format!("/api/v1/reservations/{}/confirm", ids[1]),
            Some(&buyer),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(hold(&app, &buyer, product, 1).await.status, StatusCode::CREATED);
    app.db.execute(&format!(
        "UPDATE reservations SET expires_at = now() - interval '1 second' WHERE id = '{}'",
        ids[2]
    ));
    assert_eq!(hold(&app, &buyer, product, 1).await.status, StatusCode::CREATED);
    assert_eq!(hold(&app, &buyer, product, 1).await.status, StatusCode::CONFLICT);
}

#[actix_web::test]
async fn the_per_user_limit_holds_under_concurrency_across_instances() {
    let a = spawn_app().await;
    let b = a.second_instance().await;
    let admin = a.user_with_role("admin@example.com", "admin").await.access;
    let product = a.product(&admin, "Pen", "1.00", 100).await;
    let buyer = a.bulk_users(1).remove(0).1;
    let results = join_all((0..16).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        hold(app, &buyer, product, 1)
    }))
    .await;
    let created = results.iter().filter(|r| r.status == StatusCode::CREATED).count();
    let limited = results
        .iter()
        .filter(|r| r.status == StatusCode::CONFLICT && r.text.contains("max_active_per_user"))
        .count();
    assert_eq!((created, limited), (5, 11));
    assert_eq!(a.stock_of(product), 95);
    assert_eq!(books(&a.db, product), 100);
}

#[actix_web::test]
async fn idempotency_keys_replay_a_hold_and_are_apart_from_orders() {
    let app = spawn_app().await;
    let admin = app.user_with_role("admin@example.com", "admin").await.access;
    let buyer = app.user("buyer@example.com").await.access;
    let product = app.product(&admin, "Mug", "4.00", 10).await;
    let body = json!({"items": [{"product_id": product, "quantity": 2}], "ttl_secs": 120});
    let send = |path: &'static str, body: Value| {
        let c = reqwest::Client::new();
        let (url, token) = (app.url(path), buyer.clone());
        async move {
            Res::from(
                c.post(url)
                    .bearer_auth(token)
                    .header("idempotency-key", "checkout-1")
                    .json(&body)
                    .send()
                    .await
                    .expect("send"),
            )
            .await
        }
    };
    let first = send("/api/v1/reservations", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert!(first.header("idempotent-replayed").is_none());
    let again = send("/api/v1/reservations", body.clone()).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.text, first.text, "the same bytes");
    assert_eq!(app.count("SELECT count(*) FROM reservations"), 1);
    assert_eq!(app.stock_of(product), 8);
    // ttl_secs is part of the body.
    let other_ttl = json!({"items": [{"product_id": product, "quantity": 2}], "ttl_secs": 60});
    let r = send("/api/v1/reservations", other_ttl).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    // The same key on orders is a key of its own.
    let order = send(
        "/api/v1/orders",
        json!({"items": [{"product_id": product, "quantity": 2}]}),
    )
    .await;
    assert_eq!(order.status, StatusCode::CREATED, "{}", order.text);
    assert!(order.header("idempotent-replayed").is_none());
    assert_eq!(app.stock_of(product), 6);
    // A refused hold frees its key: the retry runs again.
    let big = json!({"items": [{"product_id": product, "quantity": 7}]});
    let c = reqwest::Client::new();
    let keyed = |body: Value| {
        c.post(app.url("/api/v1/reservations"))
            .bearer_auth(&buyer)
            .header("idempotency-key", "checkout-2")
            .json(&body)
            .send()
    };
    let r = Res::from(keyed(big.clone()).await.expect("send")).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    app.post(
        &format!("/api/v1/products/{product}/stock"),
        Some(&admin),
        json!({"delta": 1}),
    )
    .await;
    let r = Res::from(keyed(big).await.expect("send")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[actix_web::test]
async fn lists_show_own_holds_and_admins_filter_by_user_and_status() {
    let app = spawn_app().await;
    let admin = app.user_with_role("admin@example.com", "admin").await.access;
    let a = app.user("a@example.com").await;
    let b = app.user("b@example.com").await.access;
    let product = app.product(&admin, "Cup", "2.00", 100).await;
    let mut mine = Vec::new();
    for _ in 0..4 {
        mine.push(id_of(&hold(&app, &a.access, product, 1).await));
    }
    hold(&app, &b, product, 1).await;
    app.delete(&format!("/api/v1/reservations/{}", mine[0]), Some(&a.access))
        .await;

    let r = app.get("/api/v1/reservations?limit=2", Some(&a.access)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.data()["total"], 4);
    assert_eq!(r.data()["items"][0]["id"], json!(mine[3]), "newest first");
    let r = app
        .get("/api/v1/reservations?status=released", Some(&a.access))
        .await;
    assert_eq!(r.data()["total"], 1);
    assert_eq!(r.data()["items"][0]["id"], json!(mine[0]));
    assert_eq!(
        app.get("/api/v1/reservations?status=pending", Some(&a.access))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    // A user's user_id filter is ignored; an admin's applies.
    let r = app.get("/api/v1/reservations?user_id=1", Some(&b)).await;
    assert_eq!(r.data()["total"], 1);
    let r = app.get("/api/v1/reservations", Some(&admin)).await;
    assert_eq!(r.data()["total"], 5);
    let user_a = a.id;
    let r = app
        .get(
            &format!("/api/v1/reservations?user_id={user_a}&status=active"),
            Some(&admin),
        )
        .await;
    assert_eq!(r.data()["total"], 3);

    // v2: every hold once, in order, across pages.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/api/v2/reservations?limit=2".to_owned(),
            Some(c) => format!("/api/v2/reservations?limit=2&cursor={c}"),
        };
        let r = app.get(&path, Some(&a.access)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        for item in r.data()["items"].as_array().expect("items") {
            seen.push(item["id"].as_str().expect("id").to_owned());
        }
        match r.data()["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut newest_first = mine.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    let r = app
        .get("/api/v2/reservations?cursor=forged", Some(&a.access))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[actix_web::test]
async fn a_hold_expires_by_itself_within_a_second_of_its_expiry() {
    let app = spawn_app_with(|s| s.reservations.min_ttl_secs = 1).await;
    let admin = app.user_with_role("admin@example.com", "admin").await.access;
    let buyer = app.user("buyer@example.com").await.access;
    let product = app.product(&admin, "Ticket", "50.00", 3).await;
    let r = app
        .post(
            "/api/v1/reservations",
            Some(&buyer),
            json!({"items": [{"product_id": product, "quantity": 3}], "ttl_secs": 1}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = id_of(&r);
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(r.data()["expires_at"].as_str().expect("expires_at"))
            .expect("timestamp");
    assert_eq!(app.stock_of(product), 0);
    let at = format!("/api/v1/reservations/{id}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = app.get(&at, Some(&buyer)).await;
        if r.data()["status"] == "expired" {
            let updated =
                chrono::DateTime::parse_from_rfc3339(r.data()["updated_at"].as_str().expect("updated_at"))
                    .expect("timestamp");
            let late = updated - expires_at;
            assert!(
                late < chrono::Duration::seconds(1),
                "expired {late} after expires_at"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never expired: {}", r.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        levels(&app.get(&format!("/api/v1/products/{product}"), None).await),
        (3, 0)
    );
    let r = app.post(&format!("{at}/confirm"), Some(&buyer), json!({})).await;
    assert_eq!(r.status, StatusCode::GONE, "{}", r.text);
    let r = app.delete(&at, Some(&buyer)).await;
    assert_eq!(
        (r.status, r.data()["status"].clone()),
        (StatusCode::OK, json!("expired"))
    );
    assert_eq!(books(&app.db, product), 3);
}

#[actix_web::test]
async fn a_confirm_after_expires_at_is_410_even_before_the_expiry_ran() {
    // The sweep runs at start-up only.
    let app = spawn_app_with(|s| s.reservations.expiry_interval_ms = 3_600_000).await;
    let admin = app.user_with_role("admin@example.com", "admin").await.access;
    let buyer = app.user("buyer@example.com").await.access;
    let product = app.product(&admin, "Ticket", "50.00", 3).await;
    let id = id_of(&hold(&app, &buyer, product, 2).await);
    app.db.execute(&format!(
        "UPDATE reservations SET expires_at = now() - interval '1 millisecond' WHERE id = '{id}'"
    ));
    assert_eq!(
        app.count("SELECT count(*) FROM reservations WHERE status = 'active'"),
        1
    );
    let r = app
        .post(
            &format!("/api/v1/reservations/{id}/confirm"),
            Some(&buyer),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::GONE, "{}", r.text);
    assert_eq!(app.count("SELECT count(*) FROM orders"), 0);
    let r = app.get(&format!("/api/v1/reservations/{id}"), Some(&buyer)).await;
    assert_eq!(r.data()["status"], "expired");
    assert_eq!(app.stock_of(product), 3);
    assert_eq!(books(&app.db, product), 3);
}

#[actix_web::test]
async fn concurrent_confirms_of_one_hold_make_one_order() {
    let app = spawn_app().await;
    let b = app.second_instance().await;
    let admin = app.user_with_role("admin@example.com", "admin").await.access;
    let buyer = app.user("buyer@example.com").await.access;
    let product = app.product(&admin, "Sofa", "300.00", 2).await;
    let id = id_of(&hold(&app, &buyer, product, 2).await);
    let path = format!("/api/v1/reservations/{id}/confirm");
    let results = join_all((0..12).map(|i| {
        let target = if i % 2 == 0 { &app } else { &b };
        target.post(&path, Some(&buyer), json!({}))
    }))
    .await;
    let created: Vec<&Res> = results
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .collect();
    assert_eq!(
        created.len(),
        1,
        "{:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let order_id = created[0].data()["id"].clone();
    for r in &results {
        assert!(
            matches!(r.status, StatusCode::OK | StatusCode::CREATED),
            "{}",
            r.text
        );
        assert_eq!(r.data()["id"], order_id);
    }
    assert_eq!(app.count("SELECT count(*) FROM orders"), 1);
    assert_eq!(books(&app.db, product), 2);
    assert_eq!(app.stock_of(product), 0);
}

/// 40 buyers, 20 on each of two instances, each hold one unit of a product
/// with 25: exactly 25 holds, the other 15 are 409, and the books balance.
#[actix_web::test]
async fn forty_concurrent_holds_on_stock_25_across_two_instances() {
    let a = spawn_app().await;
    let b = a.second_instance().await;
    let admin = a.user_with_role("admin@example.com", "admin").await.access;
    let product = a.product(&admin, "Console", "499.00", 25).await;
    let buyers = a.bulk_users(40);
    let results = join_all(buyers.iter().enumerate().map(|(i, (_, token))| {
        let app = if i % 2 == 0 { &a } else { &b };
        hold(app, token, product, 1)
    }))
    .await;
    let created = results.iter().filter(|r| r.status == StatusCode::CREATED).count();
    let short = results
        .iter()
        .filter(|r| r.status == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, short), (25, 15));
    assert_eq!(
        a.count("SELECT count(*) FROM reservations WHERE status = 'active'"),
        25
    );
    let r = b.get(&format!("/api/v1/products/{product}"), None).await;
    assert_eq!(levels(&r), (0, 25));
    assert_eq!(books(&a.db, product), 25);
    assert!(reserved_matches_active_holds(&a.db, product));
}

/// Holds that fall due while their owners confirm them: each ends either
/// confirmed with one order (201) or expired with its units back (410),
/// never both, and the books balance.
#[actix_web::test]
async fn a_confirm_racing_its_own_expiry_ends_in_exactly_one_outcome() {
    let a = spawn_app_with(|s| s.reservations.expiry_interval_ms = 20).await;
    let b = a.second_instance().await;
    let admin = a.user_with_role("admin@example.com", "admin").await.access;
    let product = a.product(&admin, "Drop", "9.00", 60).await;
    let buyers = a.bulk_users(60);
    let mut holds = Vec::new();
    for (_, token) in &buyers {
        let r = hold(&a, token, product, 1).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        holds.push((id_of(&r), token.clone()));
    }
    // Due in 300 ms; the confirms are spread over 0..600 ms.
    a.db.execute("UPDATE reservations SET expires_at = now() + interval '300 milliseconds'");
    let results = join_all(holds.iter().enumerate().map(|(i, (id, token))| {
        let app = if i % 2 == 0 { &a } else { &b };
        async move {
            tokio::time::sleep(Duration::from_millis(10 * i as u64)).await;
            let r = app
                .post(
                    &format!("/api/v1/reservations/{id}/confirm"),
                    Some(token),
                    json!({}),
                )
                .await;
            (id.clone(), r)
        }
    }))
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut confirmed, mut expired) = (0, 0);
    for (id, r) in &results {
        let status = a.db.texts(&format!(
            "SELECT status AS name FROM reservations WHERE id = '{id}'"
        ));
        let orders = a.count(&format!(
            "SELECT count(*) FROM reservations r JOIN orders o ON o.id = r.order_id WHERE r.id = '{id}'"
        ));
        match r.status {
            StatusCode::CREATED => {
                assert_eq!((status[0].as_str(), orders), ("confirmed", 1));
                confirmed += 1;
            }
            StatusCode::GONE => {
                assert_eq!((status[0].as_str(), orders), ("expired", 0));
                expired += 1;
            }
            other => panic!("{other}: {}", r.text),
        }
    }
    assert!(
        confirmed > 0 && expired > 0,
        "{confirmed} confirmed, {expired} expired"
    );
    assert_eq!(a.count("SELECT count(*) FROM orders"), confirmed);
    assert_eq!(a.stock_of(product), expired);
    assert_eq!(books(&a.db, product), 60);
    assert!(reserved_matches_active_holds(&a.db, product));
}

/// A product deactivated while held: its holds may still be confirmed.
#[actix_web::test]
async fn a_hold_on_a_product_deactivated_since_can_still_be_confirmed() {
    let app = spawn_app().await;
    let admin = app.user_with_role("admin@example.com", "admin").await.access;
    let buyer = app.user("buyer@example.com").await.access;
    let product = app.product(&admin, "Last edition", "15.00", 2).await;
    let id = id_of(&hold(&app, &buyer, product, 2).await);
    app.delete(&format!("/api/v1/products/{product}"), Some(&admin))
        .await;
    let r = app
        .post(
            &format!("/api/v1/reservations/{id}/confirm"),
            Some(&buyer),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(books(&app.db, product), 2);
}

/// kill -9 with holds active, then a restart: the holds that fell due while
/// no instance ran expire at start-up, the others stay, and the books
/// balance.
#[actix_web::test]
async fn after_kill_9_overdue_holds_expire_at_start_up() {
    let db = TestDb::new();
    let settings = test_settings(&db.url);
    storefront::db::migrate::run_pending(&db.url)
        .await
        .expect("migrate");
    db.execute("INSERT INTO products (id, name, price, stock_quantity) VALUES (1, 'Hot', 5, 1000)");
    let buyers = db.bulk_users(&settings, 20);
    let env = [("APP__RATE_LIMIT__ENABLED", "false")];
    let (mut child, base) = start_binary(&db.url, &env, std::process::Stdio::null()).await;
    let http = reqwest::Client::new();
    let created = join_all(buyers.iter().map(|(_, token)| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r = http
                .post(format!("{base}/api/v1/reservations"))
                .bearer_auth(token)
                .json(&json!({"items": [{"product_id": 1, "quantity": 3}]}))
                .send()
                .await
                .expect("send");
            r.status()
        }
    }))
    .await;
    assert!(created.iter().all(|s| *s == StatusCode::CREATED), "{created:?}");
    child.kill().expect("kill -9");
    child.wait().expect("wait");
    assert_eq!(
        db.count_of("SELECT stock_quantity FROM products WHERE id = 1"),
        940
    );

    // While no instance runs, half of the holds fall due.
    db.execute(
        "UPDATE reservations SET expires_at = now() - interval '1 minute' \
         WHERE id IN (SELECT id FROM reservations ORDER BY id LIMIT 10)",
    );
    let started = Instant::now();
    let (mut child, _) = start_binary(&db.url, &env, std::process::Stdio::null()).await;
    let deadline = started + Duration::from_secs(10);
    while db.count_of("SELECT count(*) FROM reservations WHERE status = 'expired'") < 10 {
        assert!(
            Instant::now() < deadline,
            "overdue holds did not expire at start-up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        db.count_of("SELECT count(*) FROM reservations WHERE status = 'active'"),
        10
    );
    assert_eq!(
        db.count_of("SELECT stock_quantity * 1000 + reserved_quantity FROM products WHERE id = 1"),
        970 * 1000 + 30
    );
    assert_eq!(books(&db, 1), 1000);
    assert!(reserved_matches_active_holds(&db, 1));
    child.kill().expect("kill");
    child.wait().expect("wait");
}

/// Holds live in Postgres only: with Redis gone, creating, reading,
/// confirming and releasing them work as before, and product views show
/// the held units at once.
#[actix_web::test]
async fn redis_down_changes_nothing_about_holds() {
    let mut redis = OwnRedis::start();
    let (app, _keys) = spawn_app_with_redis(&redis.url(), |_| {}).await;
    wait_for_redis(&app, "up").await;
    let admin = app.user_with_role("admin@example.com", "admin").await.access;
    let buyer = app.user("buyer@example.com").await.access;
    let product = app.product(&admin, "Umbrella", "12.00", 10).await;
    let path = format!("/api/v1/products/{product}");
    assert_eq!(levels(&app.get(&path, None).await), (10, 0));

    redis.stop();
    let first = hold(&app, &buyer, product, 4).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(
        levels(&app.get(&path, None).await),
        (6, 4),
        "no stale cached view"
    );
    let second = hold(&app, &buyer, product, 2).await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.text);
    let r = app
        .post(
            &format!("/api/v1/reservations/{}/confirm", id_of(&first)),
            Some(&buyer),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = app
        .delete(&format!("/api/v1/reservations/{}", id_of(&second)), Some(&buyer))
        .await;
    assert_eq!(r.data()["status"], "released");
    assert_eq!(
        app.get("/api/v1/reservations", Some(&buyer)).await.data()["total"],
        2
    );
    assert_eq!(levels(&app.get(&path, None).await), (6, 0));
    assert_eq!(books(&app.db, product), 10);
    redis.restart();
}
