//! Many instances on one database and one Redis: the real binary twice, the
//! real load tester across both, and the shared rate limiter under
//! concurrency.

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{redis_url, spawn_app_with_redis, start_binary, wait_for_redis, RedisKeys, TestDb};

/// Two `storefront serve` processes (shared Postgres, shared Redis with the
/// global limiter in the path) and `loadtest flash-sale` spreading its clients
/// over both until the product sells out: zero oversell, one order row per
/// 201, stock exactly zero.
#[actix_web::test]
async fn the_load_tester_across_two_instances_never_oversells() {
    const STOCK: i64 = 400;
    let db = TestDb::new();
    storefront::db::migrate::run_pending(&db.url)
        .await
        .expect("migrate");
    // The demo accounts the load tester logs in with.
    storefront::seed::run(&db.url, 10, false).await.expect("seed");
    let keys = RedisKeys {
        url: redis_url(),
        prefix: format!("sfinst{}_{}", std::process::id(), db.schema),
    };
    let env = [
        ("APP__REDIS__URL", keys.url.as_str()),
        ("APP__REDIS__PREFIX", keys.prefix.as_str()),
        ("APP__RATE_LIMIT__ENABLED", "true"),
        ("APP__RATE_LIMIT__API_MAX", "1000000"),
        ("APP__RATE_LIMIT__AUTH_MAX", "1000"),
    ];
    let (mut a, base_a) = start_binary(&db.url, &env, std::process::Stdio::null()).await;
    let (mut b, base_b) = start_binary(&db.url, &env, std::process::Stdio::null()).await;
    let out = std::env::temp_dir().join(format!("sf-loadtest-{}", db.schema));
    // The load tester is the workspace's other crate: its binary sits next to
    // the server's (`cargo test` at the root builds both).
    let loadtest = std::path::Path::new(env!("CARGO_BIN_EXE_storefront")).with_file_name("loadtest");
    assert!(
        loadtest.exists(),
        "{} is missing: build it with `cargo build --workspace --bins` (scripts/test.sh does)",
        loadtest.display()
    );
    let run = tokio::process::Command::new(&loadtest)
        .arg("--base-url")
        .arg(format!("{base_a},{base_b}"))
        .arg("--out")
        .arg(&out)
        .args(["flash-sale", "--clients", "32", "--users", "8", "--seconds", "3"])
        .args(["--stock", &STOCK.to_string(), "--name", "two"])
        .stderr(std::process::Stdio::null())
        .output()
        .await
        .expect("run loadtest");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "loadtest failed: {stdout}");
    let result: Value =
        serde_json::from_slice(&std::fs::read(out.join("two.json")).expect("result file")).expect("json");
    let _ = std::fs::remove_dir_all(&out);
    for p in [&mut a, &mut b] {
        let _ = p.kill();
        let _ = p.wait();
    }

    let by_status = &result["stats"]["by_status"];
    assert_eq!(by_status["201"], STOCK, "{result}");
    assert!(
        by_status["409"].as_i64().unwrap_or(0) > 0,
        "the sale sold out: {result}"
    );
    assert_eq!(
        by_status.as_object().expect("statuses").len(),
        2,
        "only 201 and 409: {result}"
    );
    assert_eq!(result["details"]["stock_plus_sold_equals_initial"], true);
    assert_eq!(result["details"]["order_rows_equal_201s"], true);
    assert_eq!(
        db.count_of("SELECT stock_quantity FROM products WHERE name LIKE 'Flash sale item%'"),
        0
    );
    assert_eq!(
        db.count_of("SELECT coalesce(sum(quantity), 0) FROM order_items"),
        STOCK
    );
    assert_eq!(db.count_of("SELECT count(*) FROM orders"), STOCK);
    assert!(stdout.contains("books:"), "{stdout}");
}

/// 300 concurrent requests spread over two instances against a limit of 100
/// per window: exactly 100 are admitted, whatever the interleaving.
#[actix_web::test]
async fn the_global_limit_holds_under_concurrency_across_instances() {
    let (a, _keys) = spawn_app_with_redis(&redis_url(), |s| {
        s.rate_limit.enabled = true;
        s.rate_limit.api_max = 100;
        s.rate_limit.window_secs = 600;
    })
    .await;
    let b = a.second_instance().await;
    wait_for_redis(&a, "up").await;
    wait_for_redis(&b, "up").await;
    let results = join_all((0..300).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        app.get("/api/v1/categories", None)
    }))
    .await;
    let ok = results.iter().filter(|r| r.status == StatusCode::OK).count();
    let limited = results
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((ok, limited), (100, 200));
    for r in results
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
    {
        let retry: u64 = r
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .expect("int");
        assert!((1..=600).contains(&retry));
    }
    // One window for both: per-instance counting would have admitted 200.
    for app in [&a, &b] {
        assert_eq!(
            app.get("/api/v1/categories", None).await.status,
            StatusCode::TOO_MANY_REQUESTS
        );
    }
}
