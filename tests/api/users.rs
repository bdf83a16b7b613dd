//! User management and its RBAC rules.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{spawn_app, PASSWORD};

#[actix_web::test]
async fn listing_users_is_admin_only_and_searchable() {
    let app = spawn_app().await;
    let user = app.user("plain@example.com").await;
    let admin = app.user_with_role("admin@example.com", "admin").await;
    app.register("zoe.smith@example.com", "Zoe Smith").await;
    app.register("other@example.com", "Percent 100% _name").await;

    let r = app.get("/api/v1/users", Some(&user.access)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["success"], json!(false));
    assert_eq!(
        app.get("/api/v1/users", None).await.status,
        StatusCode::UNAUTHORIZED
    );

    let r = app.get("/api/v1/users?page=1&limit=2", Some(&admin.access)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.data()["total"], json!(4));
    assert_eq!(r.data()["page"], json!(1));
    assert_eq!(r.data()["limit"], json!(2));
    assert_eq!(r.data()["items"].as_array().map(Vec::len), Some(2));

    let r = app.get("/api/v1/users?search=SMITH", Some(&admin.access)).await;
    assert_eq!(r.data()["total"], json!(1));
    assert_eq!(r.data()["items"][0]["email"], json!("zoe.smith@example.com"));
    // LIKE metacharacters match literally.
    let r = app.get("/api/v1/users?search=100%25", Some(&admin.access)).await;
    assert_eq!(r.data()["total"], json!(1));
    let r = app.get("/api/v1/users?search=%25", Some(&admin.access)).await;
    assert_eq!(r.data()["total"], json!(1));

    let r = app
        .get("/api/v1/users?limit=101&page=0", Some(&admin.access))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_fields(), ["limit", "page"]);
}

#[actix_web::test]
async fn v2_keyset_walk_returns_every_user_once_and_rejects_tampered_cursors() {
    let app = spawn_app().await;
    let admin = app.user_with_role("admin@example.com", "admin").await;
    for i in 0..6 {
        app.register(&format!("u{i}@example.com"), "Walker").await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v2/users?limit=3&cursor={c}"),
            None => "/api/v2/users?limit=3".to_owned(),
        };
        let r = app.get(&path, Some(&admin.access)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert!(r.data().get("total").is_none());
        for u in r.data()["items"].as_array().expect("items") {
            seen.push(u["id"].as_i64().expect("id"));
        }
        match r.data()["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first");
    sorted.dedup();
    assert_eq!(sorted.len(), 7, "each user exactly once: {seen:?}");

    // /api (latest) is v2.
    let r = app.get("/api/users?limit=3", Some(&admin.access)).await;
    let c = r.data()["next_cursor"].as_str().expect("cursor").to_owned();
    let mut tampered = c.clone().into_bytes();
    tampered[2] = if tampered[2] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let r = app
        .get(&format!("/api/v2/users?cursor={tampered}"), Some(&admin.access))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_fields(), ["cursor"]);
}

#[actix_web::test]
async fn users_see_themselves_and_others_get_404() {
    let app = spawn_app().await;
    let a = app.user("a@example.com").await;
    let b = app.user("b@example.com").await;
    let admin = app.user_with_role("admin@example.com", "admin").await;
    assert_eq!(
        app.get(&format!("/api/v1/users/{}", a.id), Some(&a.access))
            .await
            .status,
        StatusCode::OK
    );
    let r = app.get(&format!("/api/v1/users/{}", b.id), Some(&a.access)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .put(
            &format!("/api/v1/users/{}", b.id),
            Some(&a.access),
            json!({"name": "Hacked"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .delete(&format!("/api/v1/users/{}", b.id), Some(&a.access))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // A missing user looks the same.
    assert_eq!(
        app.get("/api/v1/users/999999", Some(&a.access)).await.status,
        StatusCode::NOT_FOUND
    );
    // Admins see anyone.
    let r = app
        .get(&format!("/api/v1/users/{}", b.id), Some(&admin.access))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.data()["email"], json!("b@example.com"));
    assert_eq!(
        app.get("/api/v1/users/999999", Some(&admin.access)).await.status,
        StatusCode::NOT_FOUND
    );
}

#[actix_web::test]
async fn self_update_needs_current_password_for_email_and_password() {
    let app = spawn_app().await;
    let u = app.user("self@example.com").await;
    let path = format!("/api/v1/users/{}", u.id);
    let r = app
        .put(&path, Some(&u.access), json!({"name": "  New Name "}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.data()["name"], json!("New Name"));

    let r = app
        .put(&path, Some(&u.access), json!({"email": "new@example.com"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_fields(), ["current_password"]);
    let r = app
        .put(
            &path,
            Some(&u.access),
            json!({"email": "new@example.com", "current_password": "Wrong1234"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_fields(), ["current_password"]);
    let r = app
        .put(
            &path,
            Some(&u.access),
            json!({"email": " NEW@example.com", "current_password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.data()["email"], json!("new@example.com"));

    // Invalid values name their fields; role and is_active are never applied.
    let r = app
        .put(
            &path,
            Some(&u.access),
            json!({"name": "x", "email": "bad", "password": "weak"}),
        )
        .await;
    assert_eq!(r.error_fields(), ["name", "email", "password"]);
    let r = app
        .put(
            &path,
            Some(&u.access),
            json!({"role": "super_admin", "is_active": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.data()["role"], json!("user"));
    assert_eq!(r.data()["is_active"], json!(true));

    // A password change revokes refresh tokens; the new password works.
    let r = app
        .put(
            &path,
            Some(&u.access),
            json!({"password": "N3wPassword", "current_password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app
        .post("/api/v1/auth/refresh", None, json!({"refresh_token": u.refresh}))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.login("new@example.com", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("new@example.com", "N3wPassword").await.status,
        StatusCode::OK
    );
}

#[actix_web::test]
async fn email_update_to_a_taken_address_is_409() {
    let app = spawn_app().await;
    app.user("taken@example.com").await;
    let u = app.user("mover@example.com").await;
    let r = app
        .put(
            &format!("/api/v1/users/{}", u.id),
            Some(&u.access),
            json!({"email": "TAKEN@example.com", "current_password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
}

#[actix_web::test]
async fn admins_update_others_without_their_password_but_not_higher_roles() {
    let app = spawn_app().await;
    let u = app.user("u@example.com").await;
    let admin = app.user_with_role("admin@example.com", "admin").await;
    let root = app.user_with_role("root@example.com", "super_admin").await;
    let r = app
        .put(
            &format!("/api/v1/users/{}", u.id),
            Some(&admin.access),
            json!({"password": "Res3tPassword"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        app.login("u@example.com", "Res3tPassword").await.status,
        StatusCode::OK
    );
    let r = app
        .put(
            &format!("/api/v1/users/{}", root.id),
            Some(&admin.access),
            json!({"password": "Takeover123"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .delete(&format!("/api/v1/users/{}", root.id), Some(&admin.access))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[actix_web::test]
async fn role_changes_are_for_super_admins_only() {
    let app = spawn_app().await;
    let u = app.user("u@example.com").await;
    let admin = app.user_with_role("admin@example.com", "admin").await;
    let root = app.user_with_role("root@example.com", "super_admin").await;
    let path = format!("/api/v1/users/{}/role", u.id);

    assert_eq!(
        app.put(&path, Some(&u.access), json!({"role": "admin"}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.put(&path, Some(&admin.access), json!({"role": "admin"}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let r = app.put(&path, Some(&root.access), json!({"role": "god"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_fields(), ["role"]);
    let r = app.put(&path, Some(&root.access), json!({"role": "admin"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.data()["role"], json!("admin"));
    // The new role arrives with the next login; old refresh tokens were ended.
    assert_eq!(
        app.post("/api/v1/auth/refresh", None, json!({"refresh_token": u.refresh}))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let again = app.login("u@example.com", PASSWORD).await;
    let token = again.data()["access_token"].as_str().expect("token");
    assert_eq!(app.get("/api/v1/users", Some(token)).await.status, StatusCode::OK);

    // Nobody changes their own role.
    let r = app
        .put(
            &format!("/api/v1/users/{}/role", root.id),
            Some(&root.access),
            json!({"role": "user"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.put(
            "/api/v1/users/999999/role",
            Some(&root.access),
            json!({"role": "admin"})
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
}

#[actix_web::test]
async fn the_last_super_admin_cannot_be_demoted_or_deleted() {
    let app = spawn_app().await;
    let root = app.user_with_role("root@example.com", "super_admin").await;
    let second = app.user_with_role("second@example.com", "super_admin").await;
    // Demote the second: allowed, one is left.
    let r = app
        .put(
            &format!("/api/v1/users/{}/role", second.id),
            Some(&root.access),
            json!({"role": "user"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // The demoted one's still-valid token says super_admin; it must not let
    // them demote the last real one.
    let r = app
        .put(
            &format!("/api/v1/users/{}/role", root.id),
            Some(&second.access),
            json!({"role": "user"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    // Deleting yourself as the last super admin is refused.
    let r = app
        .delete(&format!("/api/v1/users/{}", root.id), Some(&root.access))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    // A deactivated super admin's still-valid token is refused outright.
    let third = app.user_with_role("third@example.com", "super_admin").await;
    app.db.execute(&format!(
        "UPDATE users SET is_active = false WHERE id = {}",
        third.id
    ));
    let r = app
        .put(
            &format!("/api/v1/users/{}/role", root.id),
            Some(&third.access),
            json!({"role": "user"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert_eq!(
        app.db
            .texts("SELECT role AS name FROM users WHERE email = 'root@example.com'"),
        ["super_admin"]
    );
}

#[actix_web::test]
async fn concurrent_demotions_leave_a_super_admin() {
    let app = spawn_app().await;
    let a = app.user_with_role("a@example.com", "super_admin").await;
    let b = app.user_with_role("b@example.com", "super_admin").await;
    let (pa, pb) = (
        format!("/api/v1/users/{}/role", b.id),
        format!("/api/v1/users/{}/role", a.id),
    );
    let (ra, rb) = tokio::join!(
        app.put(&pa, Some(&a.access), json!({"role": "user"})),
        app.put(&pb, Some(&b.access), json!({"role": "user"})),
    );
    let ok = [&ra, &rb].iter().filter(|r| r.status == StatusCode::OK).count();
    assert_eq!(ok, 1, "{} / {}", ra.text, rb.text);
    assert_eq!(
        app.db
            .texts("SELECT count(*)::text AS name FROM users WHERE role = 'super_admin'"),
        ["1"]
    );
}

#[actix_web::test]
async fn delete_is_soft_and_ends_logins() {
    let app = spawn_app().await;
    let u = app.user("leaver@example.com").await;
    let r = app
        .delete(&format!("/api/v1/users/{}", u.id), Some(&u.access))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        app.login("leaver@example.com", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.post("/api/v1/auth/refresh", None, json!({"refresh_token": u.refresh}))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // The row is still there, inactive.
    assert_eq!(
        app.db.texts(&format!(
            "SELECT is_active::text AS name FROM users WHERE id = {}",
            u.id
        )),
        ["false"]
    );
    // Admins delete others.
    let admin = app.user_with_role("admin@example.com", "admin").await;
    let v = app.user("victim@example.com").await;
    assert_eq!(
        app.delete(&format!("/api/v1/users/{}", v.id), Some(&admin.access))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.login("victim@example.com", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// Two super admins deleting each other at the same moment: the account
/// changes lock their rows in one order, so there is no deadlock (never a
/// 500); the first deletion wins and the deleted admin's request is refused.
#[actix_web::test]
async fn super_admins_deleting_each_other_at_once_never_fail_with_500() {
    let app = spawn_app().await;
    let _keeper = app.user_with_role("keeper@example.com", "super_admin").await;
    for round in 0..6 {
        let a = app
            .user_with_role(&format!("a{round}@example.com"), "super_admin")
            .await;
        let b = app
            .user_with_role(&format!("b{round}@example.com"), "super_admin")
            .await;
        let (ra, rb) = futures_util::future::join(
            app.delete(&format!("/api/v1/users/{}", b.id), Some(&a.access)),
            app.delete(&format!("/api/v1/users/{}", a.id), Some(&b.access)),
        )
        .await;
        let statuses = [ra.status, rb.status];
        let ok = statuses.iter().filter(|s| s.is_success()).count();
        assert_eq!(ok, 1, "round {round}: {} / {}", ra.text, rb.text);
        let refused = statuses.iter().find(|s| !s.is_success()).copied();
        assert_eq!(
            refused,
            Some(StatusCode::UNAUTHORIZED),
            "round {round}: {} / {}",
            ra.text,
            rb.text
        );
        assert_eq!(
            app.count(&format!(
                "SELECT count(*) FROM users WHERE id IN ({}, {}) AND is_active",
                a.id, b.id
            )),
            1
        );
    }
}

/// The current password is checked on the row the change writes: two
/// changes made with the same current password cannot both succeed.
#[actix_web::test]
async fn two_password_changes_with_the_same_current_password_cannot_both_win() {
    let app = spawn_app().await;
    let u = app.user("racer@example.com").await;
    let path = format!("/api/v1/users/{}", u.id);
    let change = |new: &'static str| {
        app.put(
            &path,
            Some(&u.access),
            json!({"password": new, "current_password": PASSWORD}),
        )
    };
    let (r1, r2) = futures_util::future::join(change("FirstNew123"), change("SecondNew123")).await;
    let statuses = [r1.status, r2.status];
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{} / {}",
        r1.text,
        r2.text
    );
    let loser = if r1.status == StatusCode::OK { &r2 } else { &r1 };
    assert_eq!(loser.status, StatusCode::BAD_REQUEST, "{}", loser.text);
    assert_eq!(loser.error_fields(), ["current_password"]);
    let winner = if r1.status == StatusCode::OK {
        "FirstNew123"
    } else {
        "SecondNew123"
    };
    assert_eq!(
        app.login("racer@example.com", winner).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.login("racer@example.com", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
}
