//! The OpenAPI document matches the router, and /docs renders offline.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::spawn_app;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

#[actix_web::test]
async fn every_registered_route_is_in_the_spec_and_back() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let spec: Value = r.json().await.expect("json");
    assert_eq!(spec["openapi"], "3.1.0");
    let documented: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| (m.to_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let registered: BTreeSet<(String, String)> = storefront::http::routes::registered().into_iter().collect();
    assert!(registered.len() > 70, "{registered:?}");
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "registered but not in the spec: {undocumented:?}"
    );
    let unrouted: Vec<_> = documented.difference(&registered).collect();
    assert!(
        unrouted.is_empty(),
        "in the spec but not registered: {unrouted:?}"
    );

    // Every operation documents its errors and, where it needs one, its token.
    for (method, path) in &documented {
        let op = &spec["paths"][path][method.to_lowercase()];
        let responses = op["responses"].as_object().expect("responses");
        if path.starts_with("/api/") {
            for code in ["400", "429", "503"] {
                assert!(responses.contains_key(code), "{method} {path} lacks {code}");
            }
            if op["requestBody"].is_object() {
                assert!(
                    responses.contains_key("415") && responses.contains_key("413"),
                    "{method} {path}"
                );
            }
        }
        let public = [
            "/auth/login",
            "/auth/refresh",
            "/auth/google",
            "/health/",
            "/metrics",
            "/bench/",
            "/categories",
            "/products",
        ];
        let is_public_read =
            public.iter().any(|p| path.contains(p)) && (method == "GET" || path.contains("/auth/"));
        let is_register = method == "POST" && path.ends_with("/users");
        if !is_public_read && !is_register {
            assert!(
                op["security"].is_array(),
                "{method} {path} has no security requirement"
            );
            assert!(responses.contains_key("401"), "{method} {path} lacks 401");
        }
    }
    assert!(spec["components"]["securitySchemes"]["bearer_auth"].is_object());
}

/// /docs offers one document per version: each shows its own operations
/// once (v1 or v2, never the unversioned alias), plus the version-independent
/// ones; together they cover what /openapi.json covers under /api/v1 and
/// /api/v2.
#[actix_web::test]
async fn the_docs_show_each_operation_once_per_version() {
    let app = spawn_app().await;
    let get = |path: &'static str| {
        let (client, url) = (app.client.clone(), app.url(path));
        async move {
            let r = client.get(url).send().await.expect("send");
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            r.json::<Value>().await.expect("json")
        }
    };
    let full = get("/openapi.json").await;
    let paths = |doc: &Value| -> BTreeSet<String> {
        doc["paths"].as_object().expect("paths").keys().cloned().collect()
    };
    let all = paths(&full);
    for (doc, prefix, other) in [
        ("/openapi/v1.json", "/api/v1/", "/api/v2/"),
        ("/openapi/v2.json", "/api/v2/", "/api/v1/"),
    ] {
        let spec = get(doc).await;
        let mine = paths(&spec);
        assert!(
            mine.iter()
                .all(|p| p.starts_with(prefix) || !p.starts_with("/api/")),
            "{doc}: {mine:?}"
        );
        assert!(!mine.iter().any(|p| p.starts_with(other)), "{doc}");
        let expected: BTreeSet<String> = all
            .iter()
            .filter(|p| p.starts_with(prefix) || !p.starts_with("/api/"))
            .cloned()
            .collect();
        assert_eq!(mine, expected, "{doc}");
        assert!(mine.len() > 20, "{doc}: {mine:?}");
    }
    // Swagger UI offers both in its selector.
    let r = app
        .client
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let init = r.text().await.expect("js");
    assert!(
        init.contains("/openapi/v1.json") && init.contains("/openapi/v2.json"),
        "{init}"
    );
}

#[actix_web::test]
async fn docs_are_served_by_the_server_itself() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/docs")).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::FOUND);
    let r = app.client.get(app.url("/docs/")).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.expect("html");
    assert!(html.contains("swagger"), "{html}");
    // Its assets come from this server, not a CDN.
    assert!(!html.contains("https://"), "{html}");
    let r = app
        .client
        .get(app.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
}

/// Headless Chromium (Debian's, installed by scripts/test.sh) renders /docs
/// and shows the operations. Skipped without Chromium, unless
/// STOREFRONT_REQUIRE_BROWSER is set.
#[actix_web::test]
async fn docs_render_in_a_headless_browser() {
    let chromium = ["chromium", "chromium-browser"].into_iter().find(|c| {
        std::process::Command::new("which")
            .arg(c)
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(chromium) = chromium else {
        crate::helpers::tool_missing(
            "STOREFRONT_REQUIRE_BROWSER",
            "chromium is not installed: sudo apt-get install -y chromium \
             (scripts/test.sh installs it when run as root)",
        );
        return;
    };
    let app = spawn_app().await;
    let profile = std::env::temp_dir().join(format!("sf-chromium-{}", std::process::id()));
    let url = app.url("/docs/");
    // Async: the test's runtime must keep running while the browser loads.
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(90),
        tokio::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=15000",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium finished within 90 s")
    .expect("run chromium");
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("opblock"),
        "Swagger UI did not render operations:\n{}",
        &dom[..dom.len().min(3000)]
    );
    for operation in ["Place an order", "Log in", "List products"] {
        assert!(dom.contains(operation), "{operation} not shown");
    }
    // One version at a time, chosen in the selector (v2 first).
    assert!(dom.contains("v1 (/api/v1)"), "no version selector");
    assert!(dom.contains("/api/v2/orders"), "v2 not shown first");
    assert!(!dom.contains("/api/v1/orders"), "v1 shown beside v2");
}
