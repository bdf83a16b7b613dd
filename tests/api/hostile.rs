//! Hostile input: every case gets the exact 4xx the contract gives, with an
//! envelope naming the offending field (or, for a string that is merely
//! unusual, is stored and returned verbatim), and the process stays healthy.
//! The limits are listed in README.md, "Limits on input".

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{spawn_app, spawn_app_with, Res, TestApp};

/// Strings that break naive SQL building, LIKE patterns, JSON or logs.
const NASTY: &[&str] = &[
    "Robert'); DROP TABLE users; --",
    "' OR '1'='1",
    "\" OR \"\"=\"",
    "1; SELECT pg_sleep(10)",
    "%",
    "_",
    "\\",
    "$1",
    "')) UNION SELECT password_hash FROM users --",
    "{\"$gt\": \"\"}",
    "a\u{0}b",
    "\u{202e}evil",
];

async fn healthy(app: &TestApp) {
    let r = app.get("/health/ready", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app.get("/api/v1/products", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() \
             AND table_name IN ('users', 'products', 'orders')"
        ),
        3,
        "tables are still there"
    );
}

/// `r` is an error envelope with `status` whose `errors` name exactly
/// `fields` (none: `errors` is null or empty).
fn refused(what: &str, r: &Res, status: StatusCode, fields: &[&str]) {
    assert_eq!(r.status, status, "{what}: {}", r.text);
    assert_eq!(r.body["success"], json!(false), "{what}: envelope: {}", r.text);
    assert_eq!(r.body["statusCode"], json!(status.as_u16()), "{what}: {}", r.text);
    assert_eq!(r.error_fields(), fields, "{what}: {}", r.text);
}

/// `r` is a success envelope with `status`.
fn succeeded(what: &str, r: &Res, status: StatusCode) {
    assert_eq!(r.status, status, "{what}: {}", r.text);
    assert_eq!(r.body["success"], json!(true), "{what}: envelope: {}", r.text);
}

/// Whether `s` meets the password rule: 8..128 characters with a lowercase
/// letter, an uppercase letter and a digit.
fn strong_password(s: &str) -> bool {
    (8..=128).contains(&s.chars().count())
        && s.chars().any(|c| c.is_ascii_lowercase())
        && s.chars().any(|c| c.is_ascii_uppercase())
        && s.chars().any(|c| c.is_ascii_digit())
}

/// Sends raw bytes on a fresh connection and returns the status code.
async fn raw(app: &TestApp, request: &[u8]) -> u16 {
    let addr = app.address.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server did not answer or close the connection");
    let head = String::from_utf8_lossy(&buf);
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"))
}

#[actix_web::test]
async fn sql_and_pattern_metacharacters_in_every_string_field_are_data() {
    let app = spawn_app_with(|s| {
        // Configured, so the callback parses its parameters; the provider is
        // never reached (every state is unknown).
        let g = &mut s.oauth.google;
        g.client_id = "client-id".into();
        g.client_secret = "client-secret".to_owned().into();
        g.token_url = "http://127.0.0.1:9/token".into();
    })
    .await;
    let admin = app.user_with_role("admin@example.com", "super_admin").await;
    let user = app.user("u@example.com").await;
    let cat = app
        .post(
            "/api/v1/categories",
            Some(&admin.access),
            json!({"name": "Plain"}),
        )
        .await
        .data()["id"]
        .as_i64()
        .expect("id");
    // Enough stock for an order under every valid Idempotency-Key.
    let plain = app.product(&admin.access, "Plain thing", "1.00", 100).await;
    let failure = format!(
        "{}?error=invalid_state",
        app.settings.oauth.google.failure_redirect
    );

    for (i, s) in NASTY.iter().enumerate() {
        // NUL cannot be stored in Postgres text: refused as invalid.
        let clean = !s.contains('\u{0}');
        let what = |field: &str| format!("{field} = {s:?}");

        // Users: registration, login, search, update.
        let r = app
            .post(
                "/api/v1/users",
                None,
                json!({"email": format!("{s}@example.com"), "password": "Passw0rd!x", "name": "Name"}),
            )
            .await;
        // Three are valid local parts (atext only); those addresses are
        // stored as given, the others refused.
        if ["%", "_", "$1"].contains(s) {
            succeeded(&what("email"), &r, StatusCode::CREATED);
            assert_eq!(
                r.data()["email"],
                json!(format!("{s}@example.com").to_lowercase())
            );
        } else {
            refused(&what("email"), &r, StatusCode::BAD_REQUEST, &["email"]);
        }
        let email = format!("n{i}@example.com");
        let r = app
            .post(
                "/api/v1/users",
                None,
                json!({"email": email, "password": format!("Passw0rd!{s}"), "name": format!("N {s}")}),
            )
            .await;
        if clean {
            succeeded(&what("name"), &r, StatusCode::CREATED);
            assert_eq!(r.data()["name"], json!(format!("N {s}").trim()));
            let r = app.login(&email, &format!("Passw0rd!{s}")).await;
            succeeded(&what("password"), &r, StatusCode::OK);
        } else {
            refused(&what("name"), &r, StatusCode::BAD_REQUEST, &["name"]);
        }
        let r = app.login(s, s).await;
        refused(&what("login"), &r, StatusCode::UNAUTHORIZED, &[]);
        assert_eq!(r.body["message"], json!("Invalid email or password"));
        for body in [
            json!({"refresh_token": s}),
            json!({"refresh_token": format!("{s}.{s}.{s}")}),
        ] {
            let r = app.post("/api/v1/auth/refresh", None, body.clone()).await;
            refused(&what("refresh_token"), &r, StatusCode::UNAUTHORIZED, &[]);
            // Logging out a token that is no login of the caller's ends
            // nothing and answers as any logout does.
            let r = app.post("/api/v1/auth/logout", Some(&user.access), body).await;
            succeeded(&what("logout refresh_token"), &r, StatusCode::OK);
        }
        let r = app
            .put(
                &format!("/api/v1/users/{}", user.id),
                Some(&user.access),
                json!({"name": format!("U {s}"), "email": s, "current_password": s, "password": s}),
            )
            .await;
        // None of them is an email address; one is a strong password.
        let fields: Vec<&str> = [
            (!clean).then_some("name"),
            Some("email"),
            (!strong_password(s)).then_some("password"),
        ]
        .into_iter()
        .flatten()
        .collect();
        refused(&what("user update"), &r, StatusCode::BAD_REQUEST, &fields);
        let r = app
            .put(
                &format!("/api/v1/users/{}/role", user.id),
                Some(&admin.access),
                json!({"role": s}),
            )
            .await;
        refused(&what("role"), &r, StatusCode::BAD_REQUEST, &["role"]);
        let r = app
            .client
            .get(app.url("/api/v1/users"))
            .query(&[("search", *s)])
            .bearer_auth(&admin.access)
            .send()
            .await
            .expect("send");
        let r = Res::from(r).await;
        if clean {
            succeeded(&what("users search"), &r, StatusCode::OK);
        } else {
            refused(&what("users search"), &r, StatusCode::BAD_REQUEST, &["search"]);
        }

        // Catalog writes store the text verbatim.
        let r = app
            .post(
                "/api/v1/categories",
                Some(&admin.access),
                json!({"name": format!("C{i} {s}"), "description": s}),
            )
            .await;
        if clean {
            succeeded(&what("category"), &r, StatusCode::CREATED);
            assert_eq!(r.data()["name"], json!(format!("C{i} {s}")));
            let id = r.data()["id"].as_i64().expect("id");
            let r = app.get(&format!("/api/v1/categories/{id}"), None).await;
            assert_eq!(r.data()["description"], json!(s.trim()));
        } else {
            refused(
                &what("category"),
                &r,
                StatusCode::BAD_REQUEST,
                &["name", "description"],
            );
        }
        let r = app
            .post(
                "/api/v1/products",
                Some(&admin.access),
                json!({"name": format!("P{i} {s}"), "description": s, "price": "2.00", "category_id": cat}),
            )
            .await;
        if clean {
            succeeded(&what("product"), &r, StatusCode::CREATED);
            assert_eq!(r.data()["name"], json!(format!("P{i} {s}")));
        } else {
            refused(
                &what("product"),
                &r,
                StatusCode::BAD_REQUEST,
                &["name", "description"],
            );
        }
        // Text fields take the string (unless it has a NUL); the typed ones
        // never do.
        for (field, text) in [
            ("name", true),
            ("description", true),
            ("price", false),
            ("category_id", false),
            ("is_active", false),
        ] {
            let r = app
                .put(
                    &format!("/api/v1/products/{plain}"),
                    Some(&admin.access),
                    json!({ field: s }),
                )
                .await;
            let what = what(&format!("product update {field}"));
            if text && clean {
                succeeded(&what, &r, StatusCode::OK);
                assert_eq!(r.data()[field], json!(s.trim()), "{what}");
            } else {
                refused(&what, &r, StatusCode::BAD_REQUEST, &[field]);
            }
        }
        let r = app
            .post(
                &format!("/api/v1/products/{plain}/stock"),
                Some(&admin.access),
                json!({"delta": s}),
            )
            .await;
        refused(&what("delta"), &r, StatusCode::BAD_REQUEST, &["delta"]);
        let r = app
            .put(
                &format!("/api/v1/categories/{cat}"),
                Some(&admin.access),
                json!({"name": s}),
            )
            .await;
        if clean {
            succeeded(&what("category update"), &r, StatusCode::OK);
            assert_eq!(r.data()["name"], json!(s.trim()));
        } else {
            refused(&what("category update"), &r, StatusCode::BAD_REQUEST, &["name"]);
        }

        // Every query parameter of the public list, both versions.
        for version in ["v1", "v2"] {
            for param in [
                "search",
                "sort",
                "category_id",
                "min_price",
                "max_price",
                "in_stock",
                "cursor",
                "page",
                "limit",
            ] {
                let r = app
                    .client
                    .get(app.url(&format!("/api/{version}/products")))
                    .query(&[(param, *s)])
                    .send()
                    .await
                    .expect("send");
                let r = Res::from(r).await;
                let what = what(&format!("{version} products ?{param}"));
                // A parameter the version does not use is ignored; a search
                // is any text.
                let unused = (version, param) == ("v1", "cursor") || (version, param) == ("v2", "page");
                if unused || (param == "search" && clean) {
                    succeeded(&what, &r, StatusCode::OK);
                } else {
                    refused(&what, &r, StatusCode::BAD_REQUEST, &[param]);
                }
            }
        }

        // Orders: fields, filters and the Idempotency-Key.
        let r = app
            .post(
                "/api/v1/orders",
                Some(&user.access),
                json!({"items": [{"product_id": s, "quantity": s}]}),
            )
            .await;
        refused(
            &what("items"),
            &r,
            StatusCode::BAD_REQUEST,
            &["items[0].product_id", "items[0].quantity"],
        );
        // A key is data: each creates its own order, and the same key again
        // replays that order and no other (no pattern matching). A header
        // value outside visible ASCII is no valid key.
        let key = s.replace('\u{0}', " ");
        let place = || {
            app.client
                .post(app.url("/api/v1/orders"))
                .bearer_auth(&user.access)
                .header("idempotency-key", key.as_str())
                .json(&json!({"items": [{"product_id": plain, "quantity": 1}]}))
                .send()
        };
        let r = Res::from(place().await.expect("send")).await;
        if key.is_ascii() {
            succeeded(&what("Idempotency-Key"), &r, StatusCode::CREATED);
            assert_eq!(r.header("idempotent-replayed"), None);
            let again = Res::from(place().await.expect("send")).await;
            succeeded(&what("Idempotency-Key replay"), &again, StatusCode::CREATED);
            assert_eq!(again.header("idempotent-replayed"), Some("true"));
            assert_eq!(again.data()["id"], r.data()["id"], "{}", what("Idempotency-Key"));
        } else {
            refused(
                &what("Idempotency-Key"),
                &r,
                StatusCode::BAD_REQUEST,
                &["Idempotency-Key"],
            );
        }
        let r = app
            .client
            .get(app.url("/api/v1/orders"))
            .query(&[("status", *s), ("user_id", *s)])
            .bearer_auth(&admin.access)
            .send()
            .await
            .expect("send");
        let r = Res::from(r).await;
        refused(
            &what("orders filter"),
            &r,
            StatusCode::BAD_REQUEST,
            &["user_id", "status"],
        );
        let r = app
            .patch(
                "/api/v1/orders/1/status",
                Some(&admin.access),
                json!({"status": s}),
            )
            .await;
        refused(&what("status"), &r, StatusCode::BAD_REQUEST, &["status"]);

        // OAuth callback parameters.
        let r = app
            .client
            .get(app.url("/auth/google/callback"))
            .query(&[("code", *s), ("state", *s), ("error", *s)])
            .send()
            .await
            .expect("send");
        // A failure of the callback goes to the failure page; an unknown
        // state is checked first, whatever else came along.
        assert_eq!(r.status(), StatusCode::FOUND, "{}", what("oauth"));
        assert_eq!(
            r.headers().get("location").and_then(|v| v.to_str().ok()),
            Some(failure.as_str()),
            "{}",
            what("oauth")
        );
    }
    // One order per valid key, 11 in all.
    assert_eq!(app.count("SELECT count(*) FROM orders"), 11);
    assert_eq!(app.stock_of(plain), 89);

    // LIKE metacharacters match literally: "%" finds only names containing "%".
    let r = app.get("/api/v1/products?search=%25&limit=100", None).await;
    let names: Vec<&str> = r.data()["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["P4 %"]);
    // "_" finds exactly the users with one in their name or email: the
    // address "_@…" and the names made of "_", "pg_sleep" and "password_hash".
    let r = app
        .get("/api/v1/users?search=_&limit=100", Some(&admin.access))
        .await;
    let mut emails: Vec<&str> = r.data()["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|u| u["email"].as_str())
        .collect();
    emails.sort_unstable();
    assert_eq!(
        emails,
        [
            "_@example.com",
            "n3@example.com",
            "n5@example.com",
            "n8@example.com"
        ]
    );
    healthy(&app).await;
}

#[actix_web::test]
async fn overflowing_and_malformed_ids_are_400_everywhere() {
    let app = spawn_app().await;
    let admin = app
        .user_with_role("admin@example.com", "super_admin")
        .await
        .access;
    let product = app.product(&admin, "Thing", "1.00", 2_000_000_000).await;
    for id in [
        "99999999999999999999",
        "9223372036854775808",
        "-9223372036854775809",
        "1e3",
        "0x10",
        "%FF",
        "1%00",
        "abc",
    ] {
        for (method, path, body) in [
            (reqwest::Method::GET, format!("/api/v1/users/{id}"), None),
            (
                reqwest::Method::PUT,
                format!("/api/v1/users/{id}"),
                Some(json!({"name": "Xy"})),
            ),
            (
                reqwest::Method::PUT,
                format!("/api/v1/users/{id}/role"),
                Some(json!({"role": "admin"})),
            ),
            (reqwest::Method::DELETE, format!("/api/v1/users/{id}"), None),
            (reqwest::Method::GET, format!("/api/v1/categories/{id}"), None),
            (
                reqwest::Method::PUT,
                format!("/api/v1/categories/{id}"),
                Some(json!({"name": "Xy"})),
            ),
            (reqwest::Method::DELETE, format!("/api/v1/categories/{id}"), None),
            (reqwest::Method::GET, format!("/api/v1/products/{id}"), None),
            (reqwest::Method::GET, format!("/api/v2/products/{id}"), None),
            (
                reqwest::Method::PUT,
                format!("/api/v1/products/{id}"),
                Some(json!({"name": "Xy"})),
            ),
            (reqwest::Method::DELETE, format!("/api/v1/products/{id}"), None),
            (
                reqwest::Method::POST,
                format!("/api/v1/products/{id}/stock"),
                Some(json!({"delta": 1})),
            ),
            (reqwest::Method::GET, format!("/api/v1/orders/{id}"), None),
            (reqwest::Method::POST, format!("/api/v1/orders/{id}/cancel"), None),
            (
                reqwest::Method::PATCH,
                format!("/api/v1/orders/{id}/status"),
                Some(json!({"status": "paid"})),
            ),
        ] {
            let r = app.request(method.clone(), &path, Some(&admin), body).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{method} {path}: {}", r.text);
            assert_eq!(r.error_fields(), ["id"], "{method} {path}");
        }
        for query in ["limit", "page", "category_id", "user_id"] {
            let path = if query == "user_id" { "orders" } else { "products" };
            let r = app
                .get(&format!("/api/v1/{path}?{query}={id}"), Some(&admin))
                .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "?{query}={id}: {}", r.text);
        }
    }
    // Numbers in bodies that do not fit.
    for (body, field) in [
        (json!({"name": "Big", "price": "1e400"}), "price"),
        (
            json!({"name": "Big", "price": "99999999999999999999999.00"}),
            "price",
        ),
        (json!({"name": "Big", "price": 1e308}), "price"),
        (
            json!({"name": "Big", "price": "1.00", "stock_quantity": 9_223_372_036_854_775_807_i64}),
            "stock_quantity",
        ),
        (
            json!({"name": "Big", "price": "1.00", "stock_quantity": 2_147_483_648_i64}),
            "stock_quantity",
        ),
        (
            json!({"name": "Big", "price": "1.00", "category_id": 9_223_372_036_854_775_807_i64}),
            "category_id",
        ),
    ] {
        let r = app.post("/api/v1/products", Some(&admin), body.clone()).await;
        refused(&body.to_string(), &r, StatusCode::BAD_REQUEST, &[field]);
    }
    let raw_big = r#"{"name": "Big", "price": "1.00", "stock_quantity": 99999999999999999999999}"#;
    let r = app
        .client
        .post(app.url("/api/v1/products"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(raw_big)
        .send()
        .await
        .expect("send");
    let r = Res::from(r).await;
    refused(
        "raw big stock_quantity",
        &r,
        StatusCode::BAD_REQUEST,
        &["stock_quantity"],
    );
    // A stock delta that would overflow the column is refused, not a 500.
    for delta in [i64::from(i32::MAX), i64::MAX, i64::MIN] {
        let r = app
            .post(
                &format!("/api/v1/products/{product}/stock"),
                Some(&admin),
                json!({"delta": delta}),
            )
            .await;
        refused(&format!("delta {delta}"), &r, StatusCode::BAD_REQUEST, &["delta"]);
    }
    assert_eq!(app.stock_of(product), 2_000_000_000);
    healthy(&app).await;
}

#[actix_web::test]
async fn huge_bodies_nesting_item_arrays_and_invalid_utf8_are_4xx() {
    let app = spawn_app().await;
    let user = app.user("u@example.com").await.access;
    let url = app.url("/api/v1/orders");
    let send = |body: Vec<u8>| {
        app.client
            .post(&url)
            .bearer_auth(&user)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // Over the default 10 MiB limit.
    let big = format!("{{\"items\": [], \"pad\": \"{}\"}}", "x".repeat(11 << 20));
    let r = send(big.into_bytes()).await.expect("send");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // A Content-Length far beyond the limit is refused before any body arrives.
    let status = raw(
        &app,
        format!(
            "POST /api/v1/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {user}\r\n\
             Content-Type: application/json\r\nContent-Length: 100000000000\r\nConnection: close\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status, 413);
    // 1,000 lines: parsing stops at the 101st, and `items` is named.
    let lines = |n: i64| -> Vec<Value> { (1..=n).map(|i| json!({"product_id": i, "quantity": 1})).collect() };
    let r = send(serde_json::to_vec(&json!({ "items": lines(1000) })).expect("json"))
        .await
        .expect("send");
    let r = Res::from(r).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_fields(), ["items"]);
    // 200,000 lines, inside the size limit: refused before parsing.
    let r = send(serde_json::to_vec(&json!({ "items": lines(200_000) })).expect("json"))
        .await
        .expect("send");
    let r = Res::from(r).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("more than 4096")),
        "{}",
        r.text
    );
    // Nesting: arrays, objects, and nesting inside an item.
    for deep in [
        format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
        format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000)),
        format!(
            "{{\"items\": [{{\"product_id\": {}1{}, \"quantity\": 1}}]}}",
            "[".repeat(5000),
            "]".repeat(5000)
        ),
    ] {
        let r = send(deep.into_bytes()).await.expect("send");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
    // Invalid UTF-8 in the body, in a path and in a header.
    for body in [
        b"{\"items\": [{\"product_id\": 1, \"quantity\": 1}], \"x\": \"\xff\xfe\"}".to_vec(),
        b"\xef\xbb\xbf{\"items\": []}".to_vec(),
        b"{\"items\xc3\x28\": []}".to_vec(),
    ] {
        let r = send(body).await.expect("send");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
    let r = app
        .client
        .post(app.url("/api/v1/users"))
        .header("content-type", "application/json")
        .body(b"{\"email\": \"a@b.co\", \"password\": \"Passw0rd!\", \"name\": \"\xc0\xaf\"}".to_vec())
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let mut request =
        format!("POST /api/v1/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {user}\r\n").into_bytes();
    request.extend_from_slice(b"Idempotency-Key: k\xff\r\nContent-Type: application/json\r\n");
    request.extend_from_slice(b"Content-Length: 2\r\nConnection: close\r\n\r\n{}");
    let status = raw(&app, &request).await;
    assert_eq!(status, 400);
    let status = raw(
        &app,
        b"GET /api/v1/products/\xff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400);
    healthy(&app).await;
}

#[actix_web::test]
async fn control_characters_in_headers_and_very_long_tokens_are_4xx() {
    let app = spawn_app().await;
    let user = app.user("u@example.com").await.access;
    let order = |extra: &str| {
        format!(
            "POST /api/v1/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {user}\r\n{extra}\
             Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        )
    };
    for extra in [
        "Idempotency-Key: abc\rX-Injected: 1\r\n",
        "Idempotency-Key: abc\r\n X-Injected: 1\r\n",
        "Idempotency-Key: abc\u{1}def\r\n",
        "Idempotency-Key: abc\u{7f}\r\n",
        "X-Request-Id: abc\rdef\r\n",
        "X-Forwarded-For: 1.2.3.4\r\n\tSet-Cookie: x=1\r\n",
        "Idempotency-Key: abc\ndef\r\n",
    ] {
        let status = raw(&app, order(extra).as_bytes()).await;
        assert_eq!(status, 400, "{extra:?}");
    }
    // An empty line ends the head early: what follows is body, without a
    // Content-Type.
    let status = raw(&app, order("\r\nX-Injected: 1\r\n").as_bytes()).await;
    assert_eq!(status, 415);
    // A tab is legal HTTP but not a valid key: the envelope names the header.
    let r = app
        .client
        .post(app.url("/api/v1/orders"))
        .bearer_auth(&user)
        .header("idempotency-key", "abc\tdef")
        .json(&json!({"items": [{"product_id": 1, "quantity": 1}]}))
        .send()
        .await
        .expect("send");
    let r = Res::from(r).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_fields(), ["Idempotency-Key"]);
    let r = app
        .client
        .post(app.url("/api/v1/orders"))
        .bearer_auth(&user)
        .header("idempotency-key", "k".repeat(256))
        .json(&json!({"items": [{"product_id": 1, "quantity": 1}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // CR/LF smuggled through percent-encoding stays data: no header appears.
    let r = app
        .client
        .get(app.url("/api/v1/products?search=%0d%0aSet-Cookie:%20x=1"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("set-cookie").is_none());

    // Very long tokens: a 4 KiB and a 16 KiB bearer token are 401s; past the
    // header limit the request is refused with 431 before any work is done.
    for len in [4 << 10, 16 << 10] {
        let r = app.get("/api/v1/auth/me", Some(&"a".repeat(len))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{len}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        let r = app
            .get(
                "/api/v1/auth/me",
                Some(&format!("{}.{}.{}", "e".repeat(len), "e".repeat(len), "e")),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{len} three parts");
    }
    let r = app
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": "r".repeat(1 << 20)}),
        )
        .await;
    refused(
        "1 MiB refresh token",
        &r,
        StatusCode::BAD_REQUEST,
        &["refresh_token"],
    );
    let r = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "u@example.com", "password": "p".repeat(1 << 20)}),
        )
        .await;
    refused("1 MiB password", &r, StatusCode::BAD_REQUEST, &["password"]);
    // Past the head limit: a 1 MiB token, thousands of headers, a 1 MiB URL.
    let status = raw(
        &app,
        format!(
            "GET /api/v1/auth/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            "a".repeat(1 << 20)
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status, 431);
    let many: String = (0..2000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let status = raw(&app, order(&many).as_bytes()).await;
    assert_eq!(status, 431);
    let url = format!(
        "GET /api/v1/products?search={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let status = raw(&app, url.as_bytes()).await;
    assert_eq!(status, 431);
    healthy(&app).await;
}

/// Memory stays a small multiple of what is sent: 16 order bodies at the size
/// limit, each made of ~350,000 tiny lines (parsed whole, such a body grew
/// the server by ~770 MiB), sent at once to the real binary, leave its peak
/// RSS under 400 MB, and it answers normally afterwards.
#[actix_web::test]
async fn bodies_of_countless_tiny_items_cost_little_memory() {
    let db = crate::helpers::TestDb::new();
    storefront::db::migrate::run_pending(&db.url)
        .await
        .expect("migrate");
    let (mut server, base) = crate::helpers::start_binary(&db.url, &[], std::process::Stdio::null()).await;
    let client = reqwest::Client::new();
    let register = client
        .post(format!("{base}/api/v1/users"))
        .json(&json!({"email": "big@example.com", "password": crate::helpers::PASSWORD, "name": "Big"}))
        .send()
        .await
        .expect("register");
    assert_eq!(register.status(), StatusCode::CREATED);
    let login: Value = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": "big@example.com", "password": crate::helpers::PASSWORD}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let token = login["data"]["access_token"].as_str().expect("token").to_owned();

    let limit = 10 * 1024 * 1024;
    let line = r#"{"product_id":1,"quantity":1},"#;
    let mut body = String::with_capacity(limit);
    body.push_str(r#"{"items":["#);
    while body.len() + line.len() + 40 < limit {
        body.push_str(line);
    }
    body.push_str(r#"{"product_id":1,"quantity":1}]}"#);
    assert!(body.len() <= limit);
    let body = actix_web::web::Bytes::from(body);
    let sends = (0..16).map(|_| {
        let (client, url, token, body) = (
            client.clone(),
            format!("{base}/api/v1/orders"),
            token.clone(),
            body.clone(),
        );
        async move {
            client
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map(|r| r.status())
        }
    });
    for status in futures_util::future::join_all(sends).await {
        let status = status.expect("an answer");
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    let peak_kb: u64 = std::fs::read_to_string(format!("/proc/{}/status", server.id()))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    let ready = client
        .get(format!("{base}/api/v1/products"))
        .send()
        .await
        .expect("products");
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(ready.status(), StatusCode::OK);
    assert!(peak_kb < 400 * 1024, "peak RSS {} MB", peak_kb / 1024);
}
