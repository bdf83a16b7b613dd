//! Registration, login, refresh rotation with reuse detection, logout, /me,
//! and attacks on the access token.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use reqwest::StatusCode;
use serde_json::json;
use storefront::{
    auth::{Claims, JwtKeys},
    domain::Role,
};

use crate::helpers::{spawn_app, PASSWORD};

#[actix_web::test]
async fn register_login_me_walkthrough() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/api/v1/users",
            None,
            json!({"email": "  Alice@Example.COM ", "password": PASSWORD, "name": "  Alice  ",
                   "role": "super_admin", "is_active": false, "id": 999}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["success"], json!(true));
    assert_eq!(r.body["statusCode"], json!(201));
    let user = r.data();
    assert_eq!(user["email"], json!("alice@example.com"));
    assert_eq!(user["name"], json!("Alice"));
    // Fields a caller may not set are ignored.
    assert_eq!(user["role"], json!("user"));
    assert_eq!(user["is_active"], json!(true));
    assert_ne!(user["id"], json!(999));
    let keys: Vec<&String> = user.as_object().expect("object").keys().collect();
    assert_eq!(
        keys,
        [
            "created_at",
            "email",
            "id",
            "is_active",
            "name",
            "role",
            "updated_at"
        ]
    );

    let r = app.login("ALICE@example.com", PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let d = r.data();
    assert_eq!(d["token_type"], json!("Bearer"));
    assert_eq!(d["expires_in"], json!(900));
    assert_eq!(d["user"]["email"], json!("alice@example.com"));
    let access = d["access_token"].as_str().expect("token");

    let r = app.get("/api/v1/auth/me", Some(access)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.data()["email"], json!("alice@example.com"));
    // The same under /api and /api/v2.
    assert_eq!(app.get("/api/auth/me", Some(access)).await.status, StatusCode::OK);
    assert_eq!(
        app.get("/api/v2/auth/me", Some(access)).await.status,
        StatusCode::OK
    );

    // Stored as an Argon2id PHC string, never returned.
    let hashes = app.db.texts("SELECT password_hash AS name FROM users");
    assert!(
        hashes[0].starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{}",
        hashes[0]
    );
}

#[actix_web::test]
async fn registration_validation_names_every_field() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/api/v1/users",
            None,
            json!({"email": "nope", "password": "short", "name": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["message"], json!("Validation Error"));
    assert_eq!(r.error_fields(), ["email", "password", "name"]);
    let r = app.post("/api/v1/users", None, json!({})).await;
    assert_eq!(r.error_fields(), ["email", "password", "name"]);
    for bad in ["alllowercase1", "ALLUPPERCASE1", "NoDigitsHere"] {
        let r = app
            .post(
                "/api/v1/users",
                None,
                json!({"email": "a@b.co", "password": bad, "name": "Al"}),
            )
            .await;
        assert_eq!(r.error_fields(), ["password"], "{bad}");
    }
    let r = app
        .post(
            "/api/v1/users",
            None,
            json!({"email": "a@b.co", "password": PASSWORD, "name": "x".repeat(51)}),
        )
        .await;
    assert_eq!(r.error_fields(), ["name"]);
}

#[actix_web::test]
async fn duplicate_email_regardless_of_case_is_409() {
    let app = spawn_app().await;
    assert_eq!(
        app.register("bob@example.com", "Bob").await.status,
        StatusCode::CREATED
    );
    let r = app.register("BOB@Example.com", "Bob").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.error_fields(), ["email"]);
}

#[actix_web::test]
async fn concurrent_duplicate_registrations_create_one_user() {
    let app = spawn_app().await;
    let futs = (0..8).map(|i| {
        app.register(
            if i % 2 == 0 {
                "race@example.com"
            } else {
                "RACE@example.com"
            },
            "Racer",
        )
    });
    let results = futures_util::future::join_all(futs).await;
    let created = results.iter().filter(|r| r.status == StatusCode::CREATED).count();
    let conflicts = results
        .iter()
        .filter(|r| r.status == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, conflicts), (1, 7));
    assert_eq!(app.db.texts("SELECT count(*)::text AS name FROM users"), ["1"]);
}

#[actix_web::test]
async fn every_login_failure_is_the_same_401() {
    let app = spawn_app().await;
    let u = app.user("carol@example.com").await;
    let r1 = app.login("carol@example.com", "WrongPass1").await;
    let r2 = app.login("nobody@example.com", PASSWORD).await;
    app.db
        .execute(&format!("UPDATE users SET is_active = false WHERE id = {}", u.id));
    let r3 = app.login("carol@example.com", PASSWORD).await;
    for r in [&r1, &r2, &r3] {
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.body["message"], json!("Invalid email or password"));
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    let r = app
        .post("/api/v1/auth/login", None, json!({"email": "carol@example.com"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_fields(), ["password"]);
}

#[actix_web::test]
async fn unknown_email_costs_a_hash_like_a_known_one() {
    let app = spawn_app().await;
    app.user("timing@example.com").await;
    // Interleaved, and the fastest of each kept, so load on the machine
    // does not decide the outcome.
    let (mut known, mut unknown) = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        for (email, best) in [
            ("timing@example.com", &mut known),
            ("unknown@example.com", &mut unknown),
        ] {
            let start = std::time::Instant::now();
            let r = app.login(email, "WrongPass1").await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
            *best = best.min(start.elapsed().as_secs_f64());
        }
    }
    // Both pay for one Argon2 verification; a skipped hash would be many
    // times faster than a real one.
    let ratio = unknown / known;
    assert!(ratio > 0.6, "unknown {unknown:.4}s vs known {known:.4}s");
}

#[actix_web::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let app = spawn_app().await;
    let u = app.user("dave@example.com").await;
    let r = app
        .post("/api/v1/auth/refresh", None, json!({"refresh_token": u.refresh}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let second = r.data()["refresh_token"].as_str().expect("token").to_owned();
    assert_ne!(second, u.refresh);
    assert!(r.data()["access_token"].as_str().is_some());

    // The old one is spent: presenting it again is reuse...
    let r = app
        .post("/api/v1/auth/refresh", None, json!({"refresh_token": u.refresh}))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // ...which revoked every token of that login, including the fresh one.
    let r = app
        .post("/api/v1/auth/refresh", None, json!({"refresh_token": second}))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Another login (family) is unaffected.
    let other = app.login("dave@example.com", PASSWORD).await;
    let token = other.data()["refresh_token"].as_str().expect("token");
    let r = app
        .post("/api/v1/auth/refresh", None, json!({"refresh_token": token}))
        .await;
    assert_eq!(r.status, StatusCode::OK);

    // Stored hashed: the token itself is not in the table.
    let stored = app
        .db
        .texts("SELECT encode(token_hash, 'escape') AS name FROM refresh_tokens");
    assert_eq!(stored.len(), 4, "one row per token issued");
    assert!(stored.iter().all(|s| !s.contains(token)));

    let r = app
        .post("/api/v1/auth/refresh", None, json!({"refresh_token": "made-up"}))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app.post("/api/v1/auth/refresh", None, json!({})).await;
    assert_eq!(r.error_fields(), ["refresh_token"]);
}

#[actix_web::test]
async fn concurrent_refreshes_of_one_token_yield_exactly_one_pair() {
    let app = spawn_app().await;
    let u = app.user("erin@example.com").await;
    let futs = (0..5).map(|_| app.post("/api/v1/auth/refresh", None, json!({"refresh_token": u.refresh})));
    let results = futures_util::future::join_all(futs).await;
    let ok: Vec<&crate::helpers::Res> = results.iter().filter(|r| r.status == StatusCode::OK).collect();
    let refused = results
        .iter()
        .filter(|r| r.status == StatusCode::UNAUTHORIZED)
        .count();
    // One rotation wins; the others present a spent token (reuse).
    assert_eq!(
        (ok.len(), refused),
        (1, 4),
        "{:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    // Reuse revoked the family, so the winner's new refresh token is dead too.
    let second = ok[0].data()["refresh_token"].as_str().expect("token");
    let r = app
        .post("/api/v1/auth/refresh", None, json!({"refresh_token": second}))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
}

#[actix_web::test]
async fn expired_refresh_token_is_401() {
    let app = spawn_app().await;
    let u = app.user("exp@example.com").await;
    app.db
        .execute("UPDATE refresh_tokens SET expires_at = now() - interval '1 second'");
    let r = app
        .post("/api/v1/auth/refresh", None, json!({"refresh_token": u.refresh}))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn logout_ends_the_refresh_token() {
    let app = spawn_app().await;
    let u = app.user("frank@example.com").await;
    let r = app
        .post("/api/v1/auth/logout", None, json!({"refresh_token": u.refresh}))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "logout needs a bearer token");
    let r = app
        .post(
            "/api/v1/auth/logout",
            Some(&u.access),
            json!({"refresh_token": u.refresh}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app
        .post("/api/v1/auth/refresh", None, json!({"refresh_token": u.refresh}))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn logout_cannot_end_another_users_token() {
    let app = spawn_app().await;
    let a = app.user("a@example.com").await;
    let b = app.user("b@example.com").await;
    let r = app
        .post(
            "/api/v1/auth/logout",
            Some(&a.access),
            json!({"refresh_token": b.refresh}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .post("/api/v1/auth/refresh", None, json!({"refresh_token": b.refresh}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "b's token must still work");
}

fn keys(app: &crate::helpers::TestApp, secret: &str) -> JwtKeys {
    JwtKeys::new(
        &secret.to_owned().into(),
        &app.settings.auth.issuer,
        &app.settings.auth.audience,
        std::time::Duration::from_secs(900),
    )
}

fn claims(app: &crate::helpers::TestApp, sub: i64, role: Role, exp_offset: i64) -> Claims {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    Claims {
        sub: sub.to_string(),
        role,
        iat: (now - 10) as u64,
        exp: (now + exp_offset) as u64,
        jti: uuid::Uuid::new_v4().to_string(),
        iss: app.settings.auth.issuer.clone(),
        aud: app.settings.auth.audience.clone(),
    }
}

#[actix_web::test]
async fn jwt_attacks_are_401() {
    let app = spawn_app().await;
    let u = app.user("gina@example.com").await;
    let admin_only = "/api/v1/users";
    let parts: Vec<&str> = u.access.split('.').collect();
    let payload_json: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");

    // alg: none, with an elevated role and no signature.
    let mut elevated = payload_json.clone();
    elevated["role"] = json!("super_admin");
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let none_token = format!("{none_header}.{}.", URL_SAFE_NO_PAD.encode(elevated.to_string()));
    // A tampered payload with the original signature.
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(elevated.to_string()),
        parts[2]
    );
    let secret = "x".repeat(48);
    let real_secret = secrecy::ExposeSecret::expose_secret(&app.settings.auth.jwt_secret).to_owned();
    let wrong_key = keys(&app, &secret)
        .sign(&claims(&app, u.id, Role::SuperAdmin, 600))
        .expect("sign");
    let expired = keys(&app, &real_secret)
        .sign(&claims(&app, u.id, Role::User, -120))
        .expect("sign");
    let mut wrong_aud = claims(&app, u.id, Role::User, 600);
    wrong_aud.aud = "someone-else".into();
    let wrong_aud = keys(&app, &real_secret).sign(&wrong_aud).expect("sign");
    let mut wrong_iss = claims(&app, u.id, Role::User, 600);
    wrong_iss.iss = "someone-else".into();
    let wrong_iss = keys(&app, &real_secret).sign(&wrong_iss).expect("sign");
    let hs384 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
        &claims(&app, u.id, Role::SuperAdmin, 600),
        &jsonwebtoken::EncodingKey::from_secret(real_secret.as_bytes()),
    )
    .expect("sign");
    let huge = "a".repeat(100_000);

    for (name, token) in [
        ("alg none", none_token.as_str()),
        ("tampered", &tampered),
        ("wrong key", &wrong_key),
        ("expired", &expired),
        ("wrong aud", &wrong_aud),
        ("wrong iss", &wrong_iss),
        ("hs384", &hs384),
        ("garbage", "not.a.jwt"),
        ("huge", &huge),
    ] {
        let r = app.get("/api/v1/auth/me", Some(token)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{name}: {}", r.text);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{name}");
        let r = app.get(admin_only, Some(token)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{name} on an admin route");
    }
    let r = app.get("/api/v1/auth/me", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app
        .client
        .get(app.url("/api/v1/auth/me"))
        .header("authorization", format!("Basic {}", u.access))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The genuine token still works.
    assert_eq!(
        app.get("/api/v1/auth/me", Some(&u.access)).await.status,
        StatusCode::OK
    );
}

#[actix_web::test]
async fn no_response_carries_a_password_or_hash() {
    let app = spawn_app().await;
    let admin = app.user_with_role("root@example.com", "super_admin").await;
    let u = app.user("hank@example.com").await;
    let mut bodies = vec![
        app.register("ivy@example.com", "Ivy").await.text,
        app.login("hank@example.com", PASSWORD).await.text,
        app.get("/api/v1/auth/me", Some(&u.access)).await.text,
        app.get("/api/v1/users", Some(&admin.access)).await.text,
        app.get("/api/v2/users", Some(&admin.access)).await.text,
        app.get(&format!("/api/v1/users/{}", u.id), Some(&admin.access))
            .await
            .text,
        app.put(
            &format!("/api/v1/users/{}", u.id),
            Some(&u.access),
            json!({"name": "Hank"}),
        )
        .await
        .text,
        app.put(
            &format!("/api/v1/users/{}/role", u.id),
            Some(&admin.access),
            json!({"role": "admin"}),
        )
        .await
        .text,
        app.post("/api/v1/auth/refresh", None, json!({"refresh_token": u.refresh}))
            .await
            .text,
    ];
    bodies.push(
        app.post(
            "/api/v1/users",
            None,
            json!({"email": "x", "password": PASSWORD, "name": "Zed"}),
        )
        .await
        .text,
    );
    for body in &bodies {
        assert!(!body.contains(PASSWORD), "{body}");
        assert!(!body.contains("argon2"), "{body}");
        assert!(!body.contains("password_hash"), "{body}");
    }
}
