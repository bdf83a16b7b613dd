//! Checkout holds: `checkout` (clients hold one unit, then confirm after a
//! think time or abandon the hold) and `expiry-storm` (thousands of holds
//! falling due in the same second while orders for another product run).

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::{drive, make_users, order_total, rand_u64, report, stats, Api, Cli, Common, Sample};

/// Creates a product as the admin; its id.
async fn create_product(api: &Api, admin: &str, what: &str, stock: i64) -> anyhow::Result<i64> {
    let (status, body) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/products",
            Some(admin),
            Some(&json!({"name": format!("{what} {:x}", rand_u64()), "price": "10.00", "stock_quantity": stock})),
        )
        .await?;
    if status != 201 {
        bail!("creating the product answered {status}: {body}");
    }
    body["data"]["id"].as_i64().context("product id")
}

/// (stock_quantity, reserved_quantity) of a product.
async fn levels(api: &Api, admin: &str, product: i64) -> anyhow::Result<(i64, i64)> {
    let (_, p) = api
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/products/{product}"),
            Some(admin),
            None,
        )
        .await?;
    Ok((
        p["data"]["stock_quantity"].as_i64().context("stock")?,
        p["data"]["reserved_quantity"].as_i64().context("reserved")?,
    ))
}

/// Every hold settled: waits until the product holds nothing.
async fn settled(api: &Api, admin: &str, product: i64, timeout: Duration) -> anyhow::Result<(i64, i64)> {
    let deadline = Instant::now() + timeout;
    loop {
        let l = levels(api, admin, product).await?;
        if l.1 == 0 || Instant::now() > deadline {
            return Ok(l);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether request `n` of client `c` abandons its hold (a fixed share,
/// spread evenly).
fn abandons(c: usize, n: u64, share: f64) -> bool {
    let x = (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    ((x >> 11) % 10_000) as f64 / 10_000.0 < share
}

/// C clients each hold one unit of one product again and again; after
/// `think_ms` a hold is confirmed, except a share `abandon` of them that is
/// left to expire. Holds are created back to back (the next right after the
/// 201); confirms run on their own connections. At the end, once every hold
/// has settled: stock + reserved + ordered == initial.
pub async fn checkout(
    cli: &Cli,
    common: &Common,
    users: usize,
    stock: i64,
    abandon: f64,
    think_ms: u64,
    ttl_secs: u64,
) -> anyhow::Result<()> {
    let api = Arc::new(Api::new(&cli.base_url, common.clients)?);
    let confirm_api = Arc::new(Api::new(&cli.base_url, common.clients)?);
    let admin = api
        .login(&cli.admin_email, &cli.admin_password)
        .await
        .context("admin login (seed creates the demo admin)")?;
    let product = create_product(&api, &admin, "Checkout item", stock).await?;
    let orders_before = order_total(&api, &admin).await?;
    let tokens = Arc::new(make_users(&api, users.max(1)).await?);
    let name = common
        .name
        .clone()
        .unwrap_or_else(|| format!("checkout-c{}", common.clients));
    api.connect_all().await?;
    confirm_api.connect_all().await?;
    let clients = common.clients;
    let confirms: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<Sample>>>> = Arc::default();
    let started = Instant::now();
    let (samples, seconds) = {
        let (api, confirm_api, tokens, confirms) =
            (api.clone(), confirm_api.clone(), tokens.clone(), confirms.clone());
        let body = Arc::new(json!({
            "items": [{"product_id": product, "quantity": 1}],
            "ttl_secs": ttl_secs,
        }));
        drive(common.clients, common.seconds, "checkout", move |c, n| {
            let (api, confirm_api, tokens, body, confirms) = (
                api.clone(),
                confirm_api.clone(),
                tokens.clone(),
                body.clone(),
                confirms.clone(),
            );
            async move {
                // Each hold is another buyer's: client c's n-th hold is made
                // by user c + n * clients (round-robin over --users).
                let token = tokens[(c + n as usize * clients) % tokens.len()].clone();
                let (status, data) = api
                    .status_data(
                        c,
                        reqwest::Method::POST,
                        "/api/v1/reservations",
                        Some(&token),
                        Some(&body),
                    )
                    .await;
                if let (201, Some(id)) = (status, data["id"].as_str()) {
                    if !abandons(c, n, abandon) {
                        let path = format!("/api/v1/reservations/{id}/confirm");
                        let task = tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(think_ms)).await;
                            let t = Instant::now();
                            let status = confirm_api
                                .status(c, reqwest::Method::POST, &path, Some(&token), None)
                                .await;
                            Sample {
                                at: started.elapsed().as_secs_f32(),
                                latency: t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32,
                                status,
                            }
                        });
                        if let Ok(mut v) = confirms.lock() {
                            v.push(task);
                        }
                    }
                }
                status
            }
        })
        .await
    };
    let tasks = std::mem::take(&mut *confirms.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let mut confirm_samples = Vec::with_capacity(tasks.len());
    for t in tasks {
        confirm_samples.push(t.await?);
    }
    confirm_samples.sort_by(|a, b| a.at.total_cmp(&b.at));
    let holds = samples.iter().filter(|s| s.status == 201).count() as i64;
    let confirmed = confirm_samples.iter().filter(|s| s.status == 201).count() as i64;
    // Abandoned holds expire ttl_secs after they were made.
    let (remaining, reserved) = settled(&api, &admin, product, Duration::from_secs(ttl_secs + 30)).await?;
    let ordered = order_total(&api, &admin).await? - orders_before;
    let confirm_stats = stats(&confirm_samples, seconds, |s| s == 201);
    let checks = json!({
        "initial_stock": stock,
        "remaining_stock": remaining,
        "reserved_after_settling": reserved,
        "holds_201": holds,
        "holds_per_s": holds as f64 / seconds,
        "confirms_201": confirmed,
        "confirms_per_s": confirmed as f64 / seconds,
        "abandoned": holds - confirm_samples.len() as i64,
        "order_rows_added": ordered,
        "confirm": &confirm_stats,
        "stock_plus_reserved_plus_ordered_equals_initial": remaining + reserved + ordered == stock,
        "order_rows_equal_confirm_201s": ordered == confirmed,
        "every_hold_settled": reserved == 0,
    });
    report(&cli.out, &name, &samples, seconds, checks.clone(), |s| s == 201)?;
    report(
        &cli.out,
        &format!("{name}-confirm"),
        &confirm_samples,
        seconds,
        json!({"of": name}),
        |s| s == 201,
    )?;
    println!("books: {checks}");
    if !(remaining + reserved + ordered == stock && ordered == confirmed && reserved == 0) {
        bail!("the books do not balance: {checks}");
    }
    Ok(())
}

fn rfc3339(v: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// `holds` holds of one unit fall due within one second (each asks for
/// `ttl_secs` minus the whole seconds since the first was made) while
/// `order_clients` order another product. Reports how long after the last
/// `expires_at` every unit was back, and the orders' p99 while the holds
/// expired against their p99 in the quiet seconds before.
pub async fn expiry_storm(
    cli: &Cli,
    common: &Common,
    holds: usize,
    order_clients: usize,
    users: usize,
    ttl_secs: i64,
) -> anyhow::Result<()> {
    let api = Arc::new(Api::new(&cli.base_url, common.clients)?);
    let order_api = Arc::new(Api::new(&cli.base_url, order_clients)?);
    let admin = api
        .login(&cli.admin_email, &cli.admin_password)
        .await
        .context("admin login (seed creates the demo admin)")?;
    let held = create_product(&api, &admin, "Held item", holds as i64).await?;
    let sold = create_product(&api, &admin, "Other item", 10_000_000).await?;
    let tokens = Arc::new(make_users(&api, users.max(1)).await?);
    let name = common.name.clone().unwrap_or_else(|| "expiry-storm".into());
    api.connect_all().await?;
    order_api.connect_all().await?;

    // Orders for the other product, from start to finish.
    let start = Instant::now();
    let wall = chrono::Utc::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut order_tasks = Vec::new();
    for c in 0..order_clients {
        let (api, tokens, stop) = (order_api.clone(), tokens.clone(), stop.clone());
        let body = json!({"items": [{"product_id": sold, "quantity": 1}]});
        order_tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let status = api
                    .status(
                        c,
                        reqwest::Method::POST,
                        "/api/v1/orders",
                        Some(&tokens[c % tokens.len()]),
                        Some(&body),
                    )
                    .await;
                samples.push(Sample {
                    at: start.elapsed().as_secs_f32(),
                    latency: t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32,
                    status,
                });
            }
            samples
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The holds: all due in the same second.
    let first = SystemTime::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut hold_tasks = Vec::new();
    for c in 0..common.clients {
        let (api, tokens, next) = (api.clone(), tokens.clone(), next.clone());
        hold_tasks.push(tokio::spawn(async move {
            let mut due = Vec::new();
            let mut refused = 0usize;
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < holds {
                let whole = first.elapsed().map_or(0, |e| e.as_secs()) as i64;
                let body =
                    json!({"items": [{"product_id": held, "quantity": 1}], "ttl_secs": ttl_secs - whole});
                let (status, data) = api
                    .status_data(
                        c,
                        reqwest::Method::POST,
                        "/api/v1/reservations",
                        Some(&tokens[c % tokens.len()]),
                        Some(&body),
                    )
                    .await;
                match (status, rfc3339(&data["expires_at"])) {
                    (201, Some(at)) => due.push(at),
                    _ => refused += 1,
                }
            }
            (due, refused)
        }));
    }
    let mut due = Vec::with_capacity(holds);
    let mut refused = 0;
    for t in hold_tasks {
        let (d, r) = t.await?;
        due.extend(d);
        refused += r;
    }
    let made = start.elapsed().as_secs_f64();
    let (Some(earliest), Some(latest)) = (due.iter().min().copied(), due.iter().max().copied()) else {
        bail!("no hold was created ({refused} refused)");
    };
    let since_start =
        |t: chrono::DateTime<chrono::Utc>| (t - wall).num_microseconds().unwrap_or(0) as f64 / 1e6;
    let (from, to) = (since_start(earliest), since_start(latest));
    if made + 1.0 > from {
        bail!(
            "creating the holds took {made:.1}s, too close to their expiry at {from:.1}s: raise --ttl-secs"
        );
    }

    // Wait for the expiry, then until every unit is back.
    while start.elapsed().as_secs_f64() < from {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (stock, reserved) = settled(&api, &admin, held, Duration::from_secs(30)).await?;
    let released = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut orders = Vec::new();
    for t in order_tasks {
        orders.extend(t.await?);
    }
    orders.sort_by(|a, b| a.at.total_cmp(&b.at));
    let window = |a: f64, b: f64| -> Vec<Sample> {
        orders
            .iter()
            .filter(|s| f64::from(s.at) >= a && f64::from(s.at) <= b)
            .copied()
            .collect()
    };
    let quiet = window(made + 0.5, from - 0.05);
    let storm = window(from, released);
    let (quiet_stats, storm_stats) = (
        stats(&quiet, from - 0.05 - made - 0.5, |s| s == 201),
        stats(&storm, released - from, |s| s == 201),
    );
    let checks = json!({
        "holds_created": due.len(),
        "holds_refused": refused,
        "expires_at_spread_ms": (to - from) * 1000.0,
        "released_after_first_expiry_ms": (released - from) * 1000.0,
        "released_after_last_expiry_ms": (released - to) * 1000.0,
        "held_stock_after": stock,
        "held_reserved_after": reserved,
        "every_unit_back": stock == holds as i64 && reserved == 0,
        "orders_quiet": &quiet_stats,
        "orders_during_expiry": &storm_stats,
        "order_p99_ratio": storm_stats.p99_ms / quiet_stats.p99_ms.max(0.001),
    });
    let seconds = start.elapsed().as_secs_f64();
    report(&cli.out, &name, &orders, seconds, checks.clone(), |s| s == 201)?;
    println!("expiry: {checks}");
    if reserved != 0 || stock != holds as i64 {
        bail!("not every held unit came back: {checks}");
    }
    Ok(())
}
