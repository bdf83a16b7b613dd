//! OAuth login end to end against a fake OpenID provider running in the test
//! (an actix server on port 0 with authorize, token and userinfo endpoints).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::helpers::{spawn_app, spawn_app_with, TestApp, PASSWORD};

#[derive(Clone)]
struct Profile {
    sub: String,
    email: Option<String>,
    verified: bool,
    name: String,
}

#[derive(Default)]
struct FakeState {
    profile: Option<Profile>,
    deny: bool,
    token_status: Option<u16>,
    token_delay: Duration,
    token_redirect: bool,
    redirect_followed: bool,
    userinfo_status: Option<u16>,
    /// code → (PKCE challenge, profile)
    codes: HashMap<String, (String, Profile)>,
    verified_pkce: usize,
}

#[derive(Clone)]
struct Fake {
    base: String,
    state: Arc<Mutex<FakeState>>,
}

impl Fake {
    fn set(&self, f: impl FnOnce(&mut FakeState)) {
        f(&mut self.state.lock().expect("lock"));
    }
    fn get<T>(&self, f: impl FnOnce(&FakeState) -> T) -> T {
        f(&self.state.lock().expect("lock"))
    }
}

fn query(req: &HttpRequest) -> HashMap<String, String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect()
}

async fn authorize(req: HttpRequest, st: web::Data<Arc<Mutex<FakeState>>>) -> HttpResponse {
    let q = query(&req);
    let mut s = st.lock().expect("lock");
    let redirect = q["redirect_uri"].clone();
    let state = q["state"].clone();
    let to = if s.deny {
        format!("{redirect}?error=access_denied&state={state}")
    } else {
        let code = format!("code-{}", s.codes.len());
        let profile = s.profile.clone().expect("profile");
        s.codes
            .insert(code.clone(), (q["code_challenge"].clone(), profile));
        format!("{redirect}?code={code}&state={state}")
    };
    HttpResponse::Found().insert_header(("location", to)).finish()
}

async fn token(
    st: web::Data<Arc<Mutex<FakeState>>>,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    let (delay, status, redirect) = {
        let s = st.lock().expect("lock");
        (s.token_delay, s.token_status, s.token_redirect)
    };
    tokio::time::sleep(delay).await;
    if redirect {
        return HttpResponse::Found()
            .insert_header(("location", "/followed"))
            .finish();
    }
    if let Some(code) = status {
        return HttpResponse::build(actix_web::http::StatusCode::from_u16(code).expect("status"))
            .json(json!({"error": "server_error"}));
    }
    let mut s = st.lock().expect("lock");
    let Some((challenge, _)) = s.codes.get(&form["code"]).cloned() else {
        return HttpResponse::BadRequest().json(json!({"error": "invalid_grant"}));
    };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != challenge {
        return HttpResponse::BadRequest()
            .json(json!({"error": "invalid_grant", "error_description": "PKCE"}));
    }
    s.verified_pkce += 1;
    HttpResponse::Ok().json(
        json!({"access_token": format!("at-{}", form["code"]), "token_type": "Bearer", "expires_in": 3600}),
    )
}

async fn userinfo(req: HttpRequest, st: web::Data<Arc<Mutex<FakeState>>>) -> HttpResponse {
    let s = st.lock().expect("lock");
    if let Some(code) = s.userinfo_status {
        return HttpResponse::build(actix_web::http::StatusCode::from_u16(code).expect("status")).finish();
    }
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let code = auth.trim_start_matches("Bearer at-");
    let Some((_, p)) = s.codes.get(code) else {
        return HttpResponse::Unauthorized().finish();
    };
    HttpResponse::Ok()
        .json(json!({"sub": p.sub, "email": p.email, "email_verified": p.verified, "name": p.name}))
}

async fn followed(st: web::Data<Arc<Mutex<FakeState>>>) -> HttpResponse {
    st.lock().expect("lock").redirect_followed = true;
    HttpResponse::Ok().json(json!({"access_token": "stolen", "token_type": "Bearer"}))
}

fn start_fake() -> Fake {
    let state: Arc<Mutex<FakeState>> = Arc::default();
    let data = web::Data::new(state.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/authorize", web::get().to(authorize))
            .route("/token", web::post().to(token))
            .route("/followed", web::post().to(followed))
            .route("/userinfo", web::get().to(userinfo))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .expect("bind");
    let port = server.addrs()[0].port();
    actix_web::rt::spawn(server.run());
    Fake {
        base: format!("http://127.0.0.1:{port}"),
        state,
    }
}

async fn app_with_fake(fake: &Fake) -> TestApp {
    let base = fake.base.clone();
    spawn_app_with(move |s| {
        let g = &mut s.oauth.google;
        g.client_id = "client-id".into();
        g.client_secret = "client-secret".to_owned().into();
        g.auth_url = format!("{base}/authorize");
        g.token_url = format!("{base}/token");
        g.userinfo_url = format!("{base}/userinfo");
        g.success_redirect = "http://frontend.test/ok".into();
        g.failure_redirect = "http://frontend.test/failed".into();
        g.timeout_ms = 300;
    })
    .await
}

/// The browser's part: start, visit the provider, come back with the cookie.
struct Flow {
    provider_url: String,
    cookie: String,
    set_cookie: String,
    callback: String,
}

async fn begin(app: &TestApp, fake: &Fake) -> Flow {
    let r = app
        .client
        .get(app.url("/auth/google"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::FOUND);
    let provider_url = r.headers()["location"].to_str().expect("ascii").to_owned();
    let set_cookie = r.headers()["set-cookie"].to_str().expect("ascii").to_owned();
    let cookie = set_cookie.split(';').next().expect("pair").to_owned();
    let r = app.client.get(&provider_url).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::FOUND, "{}", fake.base);
    // oauth.google.redirect_url names port 8080; this test's app runs elsewhere.
    let callback =
        r.headers()["location"]
            .to_str()
            .expect("ascii")
            .replacen("http://127.0.0.1:8080", &app.address, 1);
    Flow {
        provider_url,
        cookie,
        set_cookie,
        callback,
    }
}

/// Sends the callback with `cookie`; returns where the app redirects to.
async fn finish(app: &TestApp, callback: &str, cookie: Option<&str>) -> String {
    let mut req = app.client.get(callback);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let r = req.send().await.expect("send");
    assert_eq!(r.status(), StatusCode::FOUND, "never a 500");
    // The success redirect carries tokens: no cache may keep any of them.
    assert_eq!(
        r.headers().get("cache-control").and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    r.headers()["location"].to_str().expect("ascii").to_owned()
}

async fn login(app: &TestApp, fake: &Fake) -> String {
    let flow = begin(app, fake).await;
    finish(app, &flow.callback, Some(&flow.cookie)).await
}

fn profile(sub: &str, email: &str, verified: bool) -> Option<Profile> {
    Some(Profile {
        sub: sub.into(),
        email: Some(email.into()),
        verified,
        name: "Grace Hopper".into(),
    })
}

fn fragment(location: &str) -> HashMap<String, String> {
    let (_, frag) = location.split_once('#').expect("fragment");
    url::form_urlencoded::parse(frag.as_bytes())
        .into_owned()
        .collect()
}

fn failure(location: &str) -> &str {
    location
        .strip_prefix("http://frontend.test/failed?error=")
        .unwrap_or_else(|| panic!("not a failure: {location}"))
}

#[actix_web::test]
async fn without_client_credentials_the_routes_answer_503() {
    let app = spawn_app().await;
    for path in ["/auth/google", "/auth/google/callback?code=x&state=y"] {
        let r = app.get(path, None).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(
            r.body["message"]
                .as_str()
                .is_some_and(|m| m.contains("GOOGLE_CLIENT_ID")),
            "{}",
            r.text
        );
    }
}

#[actix_web::test]
async fn a_new_google_user_is_created_and_gets_tokens_in_the_fragment() {
    let fake = start_fake();
    let app = app_with_fake(&fake).await;
    fake.set(|s| s.profile = profile("g-1", "Grace@Example.com", true));
    let flow = begin(&app, &fake).await;
    // PKCE S256, the scopes, and a single-use state bound by an HttpOnly cookie.
    let q: HashMap<String, String> =
        url::form_urlencoded::parse(flow.provider_url.split_once('?').expect("query").1.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["scope"], "openid email profile");
    assert_eq!(q["response_type"], "code");
    assert!(flow.cookie.ends_with(&q["state"]));
    for attr in ["HttpOnly", "SameSite=Lax", "Max-Age=600", "Path=/auth/google"] {
        assert!(flow.set_cookie.contains(attr), "{attr} in {}", flow.set_cookie);
    }
    let location = finish(&app, &flow.callback, Some(&flow.cookie)).await;
    assert!(location.starts_with("http://frontend.test/ok#"), "{location}");
    assert!(
        !location.split('#').next().expect("url").contains("token"),
        "tokens never in the query"
    );
    let f = fragment(&location);
    assert_eq!(f["token_type"], "Bearer");
    assert_eq!(
        fake.get(|s| s.verified_pkce),
        1,
        "the provider saw a matching code_verifier"
    );
    let me = app.get("/api/v1/auth/me", Some(&f["access_token"])).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.data()["email"], json!("grace@example.com"));
    assert_eq!(me.data()["name"], json!("Grace Hopper"));
    assert_eq!(
        app.db
            .texts("SELECT coalesce(password_hash, 'none') AS name FROM users"),
        ["none"]
    );
    let r = app
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": f["refresh_token"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);

    // The same Google account again: the same user.
    let again = fragment(&login(&app, &fake).await);
    let me2 = app.get("/api/v1/auth/me", Some(&again["access_token"])).await;
    assert_eq!(me2.data()["id"], me.data()["id"]);
    assert_eq!(app.count("SELECT count(*) FROM users"), 1);
}

#[actix_web::test]
async fn a_verified_email_links_an_existing_account_an_unverified_one_never() {
    let fake = start_fake();
    let app = app_with_fake(&fake).await;
    // Someone registered ada's address with a password of their own.
    let existing = app.user("ada@example.com").await;

    fake.set(|s| s.profile = profile("g-evil", "ada@example.com", false));
    assert_eq!(failure(&login(&app, &fake).await), "email_not_verified");
    assert_eq!(
        app.db
            .texts("SELECT coalesce(google_id, 'none') AS name FROM users"),
        ["none"]
    );

    fake.set(|s| s.profile = profile("g-ada", "ADA@example.com", true));
    let f = fragment(&login(&app, &fake).await);
    let me = app.get("/api/v1/auth/me", Some(&f["access_token"])).await;
    assert_eq!(me.data()["id"], json!(existing.id));
    assert_eq!(app.db.texts("SELECT google_id AS name FROM users"), ["g-ada"]);
    // The owner of the verified email wins: the password set before it was
    // verified stops working, and so does every login made with it.
    assert_eq!(
        app.login("ada@example.com", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = app
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": existing.refresh}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert_eq!(
        app.count("SELECT count(*) FROM users WHERE password_hash IS NULL"),
        1
    );

    // Deactivated accounts cannot log in this way either.
    app.db.execute("UPDATE users SET is_active = false");
    assert_eq!(failure(&login(&app, &fake).await), "account_disabled");
}

#[actix_web::test]
async fn every_failure_redirects_with_an_error_code() {
    let fake = start_fake();
    let app = app_with_fake(&fake).await;
    fake.set(|s| s.profile = profile("g-2", "x@example.com", true));

    // Denied consent.
    fake.set(|s| s.deny = true);
    assert_eq!(failure(&login(&app, &fake).await), "access_denied");
    fake.set(|s| s.deny = false);

    // Bad state: no cookie, another browser's cookie, a made-up state.
    let flow = begin(&app, &fake).await;
    assert_eq!(
        failure(&finish(&app, &flow.callback, None).await),
        "invalid_state"
    );
    let other = begin(&app, &fake).await;
    assert_eq!(
        failure(&finish(&app, &flow.callback, Some(&other.cookie)).await),
        "invalid_state"
    );
    let forged = format!("{}/auth/google/callback?code=c&state=made-up", app.address);
    assert_eq!(
        failure(&finish(&app, &forged, Some("sf_oauth_state=made-up")).await),
        "invalid_state"
    );

    // Replayed state.
    let flow = begin(&app, &fake).await;
    assert!(finish(&app, &flow.callback, Some(&flow.cookie))
        .await
        .contains("#access_token="));
    assert_eq!(
        failure(&finish(&app, &flow.callback, Some(&flow.cookie)).await),
        "state_reused"
    );

    // Expired state (older than 10 minutes).
    let flow = begin(&app, &fake).await;
    app.db
        .execute("UPDATE oauth_states SET created_at = now() - interval '11 minutes' WHERE used_at IS NULL");
    assert_eq!(
        failure(&finish(&app, &flow.callback, Some(&flow.cookie)).await),
        "state_expired"
    );

    // Provider errors: the token endpoint fails, the userinfo endpoint fails.
    fake.set(|s| s.token_status = Some(500));
    assert_eq!(failure(&login(&app, &fake).await), "provider_error");
    fake.set(|s| {
        s.token_status = None;
        s.userinfo_status = Some(500);
    });
    assert_eq!(failure(&login(&app, &fake).await), "provider_error");
    fake.set(|s| s.userinfo_status = None);

    // A redirect from the provider is not followed.
    fake.set(|s| s.token_redirect = true);
    assert_eq!(failure(&login(&app, &fake).await), "provider_error");
    assert!(!fake.get(|s| s.redirect_followed));
    fake.set(|s| s.token_redirect = false);

    // A provider slower than oauth.google.timeout_ms (300 ms here).
    fake.set(|s| s.token_delay = Duration::from_millis(1500));
    assert_eq!(failure(&login(&app, &fake).await), "provider_timeout");
    fake.set(|s| s.token_delay = Duration::ZERO);

    // Garbage in the callback's query is a redirect too.
    let r = app
        .client
        .get(app.url("/auth/google/callback?code=%ZZ&state=%"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::FOUND);
}
