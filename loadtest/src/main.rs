//! `loadtest`: drives a running storefront and measures it.
//!
//! ```text
//! loadtest --base-url http://127.0.0.1:8080 flash-sale --clients 64 --seconds 10
//! loadtest browse --clients 64 --seconds 10
//! loadtest login-storm --clients 32 --logins 50 --seconds 10
//! loadtest bare --clients 64 --seconds 10
//! loadtest checkout --clients 64 --seconds 10 --abandon 0.2 --think-ms 200
//! loadtest expiry-storm --holds 10000 --order-clients 16
//! ```
//!
//! Every scenario prints throughput, p50/p95/p99/max latency and errors, and
//! writes `<out>/<name>.json` and two charts, `<out>/<name>-latency.svg`
//! (p50 and p99 over time) and `<out>/<name>-throughput.svg` (requests per
//! second). The flash sale then checks the books: stock +
//! units sold == initial stock, order rows == 201 responses, stock >= 0;
//! checkout, once every hold settled: stock + reserved + ordered == initial.

mod checkout;
mod receiver;

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(name = "loadtest", about = "Load tests a running storefront")]
struct Cli {
    /// The server; several, comma-separated, spread the clients over as many
    /// instances (setup and the books check use the first).
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080",
        global = true,
        value_delimiter = ','
    )]
    base_url: Vec<String>,
    /// Where JSON results and SVG charts go.
    #[arg(long, default_value = "bench/results", global = true)]
    out: PathBuf,
    #[arg(long, default_value = "admin@storefront.local", global = true)]
    admin_email: String,
    #[arg(long, default_value = "DemoAdmin123", global = true)]
    admin_password: String,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Args, Clone)]
struct Common {
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// How long to run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Label for the result files (default: the scenario name).
    #[arg(long)]
    name: Option<String>,
}

#[derive(Subcommand)]
enum Scenario {
    /// C clients each ordering 1 unit of one product, as fast as they can.
    FlashSale {
        #[command(flatten)]
        common: Common,
        /// Users to create (clients share them round-robin).
        #[arg(long, default_value_t = 64)]
        users: usize,
        /// Initial stock of the product (default: more than can sell).
        #[arg(long, default_value_t = 10_000_000)]
        stock: i64,
        /// Sell this existing product instead of creating one (several
        /// load generators on one product); the books are then checked by
        /// the caller.
        #[arg(long)]
        product_id: Option<i64>,
        /// Subscribe a webhook receiver run by the load tester to
        /// `order.created` for the sale (the server needs
        /// webhooks.allow_private_targets), then report how long after the
        /// sale's end the last order's event arrived.
        #[arg(long)]
        webhook: bool,
        /// The server publishes to NATS JetStream (events.nats_url): report
        /// how long after the sale's end every order's event was published
        /// (from /metrics).
        #[arg(long)]
        jetstream: bool,
    },
    /// Cached product reads, search and v2 pagination over the seeded catalog.
    Browse {
        #[command(flatten)]
        common: Common,
        /// Only this kind of request: product, search (v1, with its total),
        /// search-v2 (keyset, no total), page (v2 keyset), offset (v1 page at
        /// --deep-row) (default: a mix of product, search and page).
        #[arg(long)]
        only: Option<String>,
        /// For `page`: the row to start reading at (keyset cursor walk).
        #[arg(long, default_value_t = 0)]
        deep_row: usize,
    },
    /// Product reads while `logins` clients log in again and again.
    LoginStorm {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 50)]
        logins: usize,
    },
    /// C clients each hold 1 unit of one product, again and again; each hold
    /// is confirmed after --think-ms or, for a share --abandon, left to
    /// expire. Reports holds/s and confirms/s with their latencies, then
    /// checks the books once every hold has settled. Holds beyond the
    /// server's reservations.max_active_per_user are refused (409): raise it
    /// for a load test.
    Checkout {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 64)]
        users: usize,
        #[arg(long, default_value_t = 10_000_000)]
        stock: i64,
        /// Share of holds left to expire (0..1).
        #[arg(long, default_value_t = 0.2)]
        abandon: f64,
        /// Time between a hold and its confirm.
        #[arg(long, default_value_t = 200)]
        think_ms: u64,
        /// Lifetime of each hold (within the server's min/max ttl).
        #[arg(long, default_value_t = 30)]
        ttl_secs: u64,
    },
    /// --holds holds (made by --clients clients) that fall due in the same
    /// second while --order-clients order another product: how long until
    /// every unit is back, and the orders' p99 meanwhile against before.
    /// Needs reservations.min_ttl_secs <= 1 and a high
    /// max_active_per_user on the server.
    ExpiryStorm {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 10_000)]
        holds: usize,
        #[arg(long, default_value_t = 16)]
        order_clients: usize,
        #[arg(long, default_value_t = 64)]
        users: usize,
        /// Lifetime of the first holds; later ones ask for less, so that all
        /// fall due in the same second.
        #[arg(long, default_value_t = 8)]
        ttl_secs: i64,
    },
    /// GET /bench/bare (needs server.bench_endpoints = true): the baseline.
    Bare {
        #[command(flatten)]
        common: Common,
    },
}

/// One request as measured.
#[derive(Clone, Copy)]
struct Sample {
    /// Seconds since the scenario started, at completion.
    at: f32,
    /// Microseconds.
    latency: u32,
    status: u16,
}

#[derive(Serialize)]
struct Stats {
    requests: usize,
    errors: usize,
    throughput_rps: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    by_status: std::collections::BTreeMap<u16, usize>,
}

fn stats(samples: &[Sample], seconds: f64, ok: impl Fn(u16) -> bool) -> Stats {
    let mut lat: Vec<u32> = samples.iter().map(|s| s.latency).collect();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        f64::from(lat[i]) / 1000.0
    };
    let mut by_status = std::collections::BTreeMap::new();
    for s in samples {
        *by_status.entry(s.status).or_insert(0) += 1;
    }
    Stats {
        requests: samples.len(),
        errors: samples.iter().filter(|s| !ok(s.status)).count(),
        throughput_rps: samples.len() as f64 / seconds.max(0.001),
        p50_ms: pct(0.50),
        p95_ms: pct(0.95),
        p99_ms: pct(0.99),
        max_ms: lat.last().map_or(0.0, |l| f64::from(*l) / 1000.0),
        by_status,
    }
}

struct Api {
    bases: Vec<String>,
    http: reqwest::Client,
    /// One keep-alive connection per client for the hot loops.
    raw: Vec<tokio::sync::Mutex<RawClient>>,
}

/// A minimal HTTP/1.1 keep-alive client for the measured loops: the request
/// is written as bytes and only the status line and the body length are
/// read. The load generator shares the machine with the server and Postgres;
/// reqwest spent ~40 µs of CPU per request here, this a fraction of that.
/// (Setup and checks use reqwest.)
struct RawClient {
    /// `host:port`.
    addr: String,
    stream: Option<tokio::io::BufStream<tokio::net::TcpStream>>,
    out: Vec<u8>,
    line: Vec<u8>,
    /// The last response's body, when the request asked to keep it.
    body: Vec<u8>,
}

impl RawClient {
    fn new(base: &str) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(base).context("base url")?;
        if url.scheme() != "http" {
            bail!("the load loops speak plain http, not {}", url.scheme());
        }
        let host = url.host_str().context("base url host")?;
        let port = url.port_or_known_default().context("base url port")?;
        Ok(Self {
            addr: format!("{host}:{port}"),
            stream: None,
            out: Vec::with_capacity(1024),
            line: Vec::with_capacity(256),
            body: Vec::new(),
        })
    }

    /// The response's status, or 0 when the connection failed (it is then
    /// reopened by the next request; a request is never sent twice).
    async fn request(&mut self, method: &str, path: &str, token: Option<&str>, body: Option<&[u8]>) -> u16 {
        self.request_keeping(method, path, token, body, false).await
    }

    /// `request`, keeping the response body in `self.body` when `keep`.
    async fn request_keeping(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
        keep: bool,
    ) -> u16 {
        self.body.clear();
        match self.exchange(method, path, token, body, keep).await {
            Ok(status) => status,
            Err(_) => {
                self.stream = None;
                0
            }
        }
    }

    /// Opens the keep-alive connection if there is none.
    async fn connect(&mut self) -> std::io::Result<()> {
        if self.stream.is_none() {
            let tcp = tokio::net::TcpStream::connect(&self.addr).await?;
            tcp.set_nodelay(true)?;
            self.stream = Some(tokio::io::BufStream::new(tcp));
        }
        Ok(())
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
        keep: bool,
    ) -> std::io::Result<u16> {
        use std::io::{Error, ErrorKind, Write};
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        self.connect().await?;
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| Error::other("no connection"))?;
        self.out.clear();
        write!(self.out, "{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr)?;
        if let Some(t) = token {
            write!(self.out, "Authorization: Bearer {t}\r\n")?;
        }
        match body {
            Some(b) => {
                write!(
                    self.out,
                    "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    b.len()
                )?;
                self.out.extend_from_slice(b);
            }
            None => self.out.extend_from_slice(b"\r\n"),
        }
        stream.write_all(&self.out).await?;
        stream.flush().await?;
        let bad = |what: &str| Error::new(ErrorKind::InvalidData, what.to_owned());
        // Status line, then headers up to the empty line.
        self.line.clear();
        if stream.read_until(b'\n', &mut self.line).await? == 0 {
            return Err(bad("connection closed"));
        }
        let status: u16 = std::str::from_utf8(&self.line)
            .ok()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| bad("status line"))?;
        let (mut length, mut close) = (0_usize, false);
        loop {
            self.line.clear();
            if stream.read_until(b'\n', &mut self.line).await? == 0 {
                return Err(bad("headers cut off"));
            }
            if self.line == b"\r\n" {
                break;
            }
            let header = String::from_utf8_lossy(&self.line).to_ascii_lowercase();
            if let Some(v) = header.strip_prefix("content-length:") {
                length = v.trim().parse().map_err(|_| bad("content-length"))?;
            } else if header.starts_with("transfer-encoding:") {
                return Err(bad("chunked responses are not expected here"));
            } else if header.starts_with("connection:") && header.contains("close") {
                close = true;
            }
        }
        // Skip (or keep) the body.
        let mut left = length;
        while left > 0 {
            let chunk = stream.fill_buf().await?;
            if chunk.is_empty() {
                return Err(bad("body cut off"));
            }
            let n = chunk.len().min(left);
            if keep {
                self.body.extend_from_slice(&chunk[..n]);
            }
            stream.consume(n);
            left -= n;
        }
        if close {
            self.stream = None;
        }
        Ok(status)
    }
}

impl Api {
    fn new(bases: &[String], pool: usize) -> anyhow::Result<Self> {
        if bases.is_empty() {
            bail!("--base-url names no server");
        }
        let bases: Vec<String> = bases.iter().map(|b| b.trim_end_matches('/').to_owned()).collect();
        let raw = (0..pool)
            .map(|c| RawClient::new(&bases[c % bases.len()]).map(tokio::sync::Mutex::new))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            raw,
            bases,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(pool)
                .timeout(Duration::from_secs(30))
                .build()?,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.bases[0]));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        let bytes = r.bytes().await?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// Only the status (the hot loops do not parse bodies: the load generator
    /// shares the machine with the server). Client `client` talks to instance
    /// `client % instances`.
    async fn status(
        &self,
        client: usize,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> u16 {
        let body = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let Some(slot) = self.raw.get(client % self.raw.len().max(1)) else {
            return 0;
        };
        slot.lock()
            .await
            .request(method.as_str(), path, token, body.as_deref())
            .await
    }

    /// `status`, with the response's `data` when it is JSON.
    async fn status_data(
        &self,
        client: usize,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let body = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let Some(slot) = self.raw.get(client % self.raw.len().max(1)) else {
            return (0, Value::Null);
        };
        let mut raw = slot.lock().await;
        let status = raw
            .request_keeping(method.as_str(), path, token, body.as_deref(), true)
            .await;
        let data = serde_json::from_slice::<Value>(&raw.body)
            .map(|mut v| v["data"].take())
            .unwrap_or(Value::Null);
        (status, data)
    }

    /// Opens every hot-loop connection before the clock starts, so that no
    /// measured request pays for a TCP handshake (256 at once overflowed the
    /// listen queue now and then: a retried SYN is a 1 s "request").
    async fn connect_all(&self) -> anyhow::Result<()> {
        for slot in &self.raw {
            let mut client = slot.lock().await;
            let addr = client.addr.clone();
            client
                .connect()
                .await
                .with_context(|| format!("connecting to {addr}"))?;
        }
        Ok(())
    }

    async fn login(&self, email: &str, password: &str) -> anyhow::Result<String> {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/auth/login",
                None,
                Some(&json!({"email": email, "password": password})),
            )
            .await?;
        if status != 200 {
            bail!("login of {email} answered {status}: {body}");
        }
        body["data"]["access_token"]
            .as_str()
            .map(str::to_owned)
            .context("no access_token")
    }
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg:<28} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb
}

/// Registers `n` users (concurrently, the server hashes each password) and
/// logs them in.
async fn make_users(api: &Arc<Api>, n: usize) -> anyhow::Result<Vec<String>> {
    let pb = bar(n as u64, "creating users");
    let run = format!("{:x}", rand_u64());
    let mut tasks = Vec::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(8));
    for i in 0..n {
        let (api, sem, pb, run) = (api.clone(), sem.clone(), pb.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await?;
            let email = format!("load-{run}-{i}@example.com");
            let body = json!({"email": email, "password": "LoadTest123", "name": "Load Tester"});
            let (status, resp) = api
                .call(reqwest::Method::POST, "/api/v1/users", None, Some(&body))
                .await?;
            if status != 201 {
                bail!("registration answered {status}: {resp}");
            }
            let token = api.login(&email, "LoadTest123").await?;
            pb.inc(1);
            Ok::<_, anyhow::Error>(token)
        }));
    }
    let mut tokens = Vec::with_capacity(n);
    for t in tasks {
        tokens.push(t.await??);
    }
    pb.finish();
    Ok(tokens)
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// Runs `clients` loops of `request` for `seconds`; each loop gets its index.
async fn drive<F, Fut>(clients: usize, seconds: u64, what: &str, request: F) -> (Vec<Sample>, f64)
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = u16> + Send,
{
    let request = Arc::new(request);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let pb = bar(seconds, what);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (request, stop, count) = (request.clone(), stop.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(4096);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let status = request(c, n).await;
                samples.push(Sample {
                    at: start.elapsed().as_secs_f32(),
                    latency: t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32,
                    status,
                });
                count.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            samples
        }));
    }
    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        pb.inc(1);
        pb.set_message(format!("{what}: {} requests", count.load(Ordering::Relaxed)));
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(s) = t.await {
            all.extend(s);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    pb.finish();
    all.sort_by(|a, b| a.at.total_cmp(&b.at));
    (all, elapsed)
}

/// Latency over time (p50/p99 per 250 ms) and throughput per second.
/// Latency over time: p50 and p99 per 250 ms of the run.
fn latency_chart(
    path: &std::path::Path,
    title: &str,
    samples: &[Sample],
    seconds: f64,
) -> anyhow::Result<()> {
    use plotters::prelude::*;
    const STEP: f64 = 0.25;
    let n = ((seconds / STEP).ceil() as usize).max(1);
    let mut buckets: Vec<Vec<u32>> = vec![Vec::new(); n];
    for s in samples {
        if let Some(b) = buckets.get_mut((f64::from(s.at) / STEP) as usize) {
            b.push(s.latency);
        }
    }
    for b in &mut buckets {
        b.sort_unstable();
    }
    let line = |p: f64| -> Vec<(f64, f64)> {
        buckets
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.is_empty())
            .map(|(i, b)| {
                let at = ((b.len() as f64 * p).ceil() as usize).clamp(1, b.len()) - 1;
                ((i as f64 + 0.5) * STEP, f64::from(b[at]) / 1000.0)
            })
            .collect()
    };
    let (p50, p99) = (line(0.50), line(0.99));
    let top = p99.iter().map(|(_, v)| *v).fold(1.0, f64::max) * 1.1;
    let root = SVGBackend::new(path, (900, 320)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{title}: latency"), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..seconds, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("time since the start (s)")
        .y_desc("latency (ms)")
        .draw()?;
    for (label, points, color) in [("p50", p50, BLUE), ("p99", p99, RED)] {
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Throughput: requests answered in each whole second of the run.
fn throughput_chart(
    path: &std::path::Path,
    title: &str,
    samples: &[Sample],
    seconds: f64,
) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let whole = (seconds.floor() as usize).max(1);
    let mut per_sec = vec![0_usize; whole];
    for s in samples {
        if let Some(n) = per_sec.get_mut(s.at as usize) {
            *n += 1;
        }
    }
    let top = per_sec.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.1;
    let root = SVGBackend::new(path, (900, 320)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{title}: throughput"), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..whole as f64, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("time since the start (s)")
        .y_desc("requests per second")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    chart.draw_series(per_sec.iter().enumerate().map(|(i, n)| {
        Rectangle::new(
            [(i as f64 + 0.05, 0.0), (i as f64 + 0.95, *n as f64)],
            BLUE.mix(0.5).filled(),
        )
    }))?;
    root.present()?;
    Ok(())
}

fn report(
    out: &std::path::Path,
    name: &str,
    samples: &[Sample],
    seconds: f64,
    extra: Value,
    ok: impl Fn(u16) -> bool,
) -> anyhow::Result<Stats> {
    let s = stats(samples, seconds, ok);
    println!(
        "{name}: {} requests in {seconds:.1}s = {:.0} req/s | p50 {:.2} ms p95 {:.2} ms p99 {:.2} ms max {:.2} ms | errors {} | {:?}",
        s.requests, s.throughput_rps, s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms, s.errors, s.by_status
    );
    std::fs::create_dir_all(out)?;
    let json = json!({"scenario": name, "seconds": seconds, "stats": &s, "details": extra});
    std::fs::write(
        out.join(format!("{name}.json")),
        serde_json::to_string_pretty(&json)?,
    )?;
    latency_chart(&out.join(format!("{name}-latency.svg")), name, samples, seconds)?;
    throughput_chart(
        &out.join(format!("{name}-throughput.svg")),
        name,
        samples,
        seconds,
    )?;
    Ok(s)
}

async fn product_ids(api: &Api, n: usize) -> anyhow::Result<Vec<i64>> {
    let (status, body) = api
        .call(
            reqwest::Method::GET,
            &format!("/api/v2/products?limit={}", n.min(100)),
            None,
            None,
        )
        .await?;
    if status != 200 {
        bail!("listing products answered {status}");
    }
    let ids: Vec<i64> = body["data"]["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_i64())
        .collect();
    if ids.is_empty() {
        bail!("no products: run `storefront seed --products 100000` first");
    }
    Ok(ids)
}

async fn flash_sale(
    cli: &Cli,
    common: &Common,
    users: usize,
    stock: i64,
    existing: Option<i64>,
    events: Subscribers,
) -> anyhow::Result<()> {
    let api = Arc::new(Api::new(&cli.base_url, common.clients)?);
    let admin = api
        .login(&cli.admin_email, &cli.admin_password)
        .await
        .context("admin login (seed creates the demo admin)")?;
    if let Some(product) = existing {
        return sell(cli, common, &api, users, product).await;
    }
    let (status, body) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/products",
            Some(&admin),
            Some(&json!({"name": format!("Flash sale item {:x}", rand_u64()), "price": "10.00", "stock_quantity": stock})),
        )
        .await?;
    if status != 201 {
        bail!("creating the product answered {status}: {body}");
    }
    let product = body["data"]["id"].as_i64().context("product id")?;
    let orders_before = order_total(&api, &admin).await?;
    let tokens = Arc::new(make_users(&api, users.max(1)).await?);
    let name = common
        .name
        .clone()
        .unwrap_or_else(|| format!("flash-sale-c{}", common.clients));
    let watch = events.start(&api, &admin).await?;
    api.connect_all().await?;
    let (samples, seconds) = {
        let (api, tokens) = (api.clone(), tokens.clone());
        let body = Arc::new(json!({"items": [{"product_id": product, "quantity": 1}]}));
        drive(common.clients, common.seconds, "flash sale", move |c, _| {
            let (api, tokens, body) = (api.clone(), tokens.clone(), body.clone());
            async move {
                let token = &tokens[c % tokens.len()];
                api.status(
                    c,
                    reqwest::Method::POST,
                    "/api/v1/orders",
                    Some(token),
                    Some(&body),
                )
                .await
            }
        })
        .await
    };
    let created = samples.iter().filter(|s| s.status == 201).count() as i64;
    let delivery = watch.finish(&api, &admin, created as usize).await?;
    // The books.
    let (_, p) = api
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/products/{product}"),
            Some(&admin),
            None,
        )
        .await?;
    let remaining = p["data"]["stock_quantity"].as_i64().context("stock")?;
    let orders_after = order_total(&api, &admin).await?;
    let mut checks = json!({
        "initial_stock": stock,
        "remaining_stock": remaining,
        "units_sold_201": created,
        "stock_plus_sold_equals_initial": remaining + created == stock,
        "order_rows_added": orders_after - orders_before,
        "order_rows_equal_201s": orders_after - orders_before == created,
        "stock_never_negative": remaining >= 0,
    });
    if let (Some(map), Value::Object(d)) = (checks.as_object_mut(), delivery) {
        map.extend(d);
    }
    let s = report(&cli.out, &name, &samples, seconds, checks.clone(), |st| {
        st == 201 || st == 409
    })?;
    println!("books: {checks}");
    if !(remaining + created == stock && orders_after - orders_before == created && remaining >= 0) {
        bail!("the books do not balance: {checks}");
    }
    let _ = s;
    Ok(())
}

/// Sells `product` without checking the books (another generator sells it too).
async fn sell(cli: &Cli, common: &Common, api: &Arc<Api>, users: usize, product: i64) -> anyhow::Result<()> {
    let tokens = Arc::new(make_users(api, users.max(1)).await?);
    let name = common
        .name
        .clone()
        .unwrap_or_else(|| format!("flash-sale-c{}", common.clients));
    api.connect_all().await?;
    let (api, t) = (api.clone(), tokens.clone());
    let body = Arc::new(json!({"items": [{"product_id": product, "quantity": 1}]}));
    let (samples, seconds) = drive(common.clients, common.seconds, "flash sale", move |c, _| {
        let (api, tokens, body) = (api.clone(), t.clone(), body.clone());
        async move {
            let token = &tokens[c % tokens.len()];
            api.status(
                c,
                reqwest::Method::POST,
                "/api/v1/orders",
                Some(token),
                Some(&body),
            )
            .await
        }
    })
    .await;
    let created = samples.iter().filter(|s| s.status == 201).count();
    report(
        &cli.out,
        &name,
        &samples,
        seconds,
        json!({"product_id": product, "units_sold_201": created}),
        |st| st == 201 || st == 409,
    )?;
    Ok(())
}

/// Who receives the sale's events: a webhook receiver of the load
/// tester's own, and (server-side) the JetStream sink.
struct Subscribers {
    webhook: bool,
    jetstream: bool,
}

/// The subscribers of one sale, started.
struct Watch {
    webhook: Option<(receiver::Receiver, i64)>,
    /// events_published_total before the sale.
    published_before: Option<f64>,
}

/// How long after the sale's end the events may take before the run gives
/// up waiting (the bar is 10 s).
const DELIVERY_WAIT: Duration = Duration::from_secs(60);

impl Subscribers {
    async fn start(&self, api: &Api, admin: &str) -> anyhow::Result<Watch> {
        let webhook = if self.webhook {
            let r = receiver::Receiver::start().await?;
            let (status, body) = api
                .call(
                    reqwest::Method::POST,
                    "/api/v1/webhooks",
                    Some(admin),
                    Some(&json!({"url": r.url, "events": ["order.created"], "description": "loadtest"})),
                )
                .await?;
            if status != 201 {
                bail!("creating the webhook endpoint answered {status}: {body} (the server needs webhooks.allow_private_targets=true)");
            }
            Some((r, body["data"]["id"].as_i64().context("endpoint id")?))
        } else {
            None
        };
        let published_before = if self.jetstream {
            Some(published(api).await?)
        } else {
            None
        };
        Ok(Watch {
            webhook,
            published_before,
        })
    }
}

/// The server's storefront_events_published_total.
async fn published(api: &Api) -> anyhow::Result<f64> {
    let text = api
        .http
        .get(format!("{}/metrics", api.bases[0]))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("storefront_events_published_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0))
}

impl Watch {
    /// Waits until every one of the `created` orders' events arrived (or
    /// DELIVERY_WAIT passed), removes the endpoint, and reports.
    async fn finish(self, api: &Api, admin: &str, created: usize) -> anyhow::Result<Value> {
        let end = Instant::now();
        let mut out = serde_json::Map::new();
        let mut jetstream_done: Option<Duration> = None;
        loop {
            let hook_done = self.webhook.as_ref().is_none_or(|(r, _)| r.counts().0 >= created);
            if jetstream_done.is_none() {
                if let Some(before) = self.published_before {
                    if published(api).await? - before >= created as f64 {
                        jetstream_done = Some(end.elapsed());
                    }
                }
            }
            let js_done = self.published_before.is_none() || jetstream_done.is_some();
            if (hook_done && js_done) || end.elapsed() > DELIVERY_WAIT {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some((r, id)) = &self.webhook {
            let (events, requests, last) = r.counts();
            let lag = last.map_or(0.0, |t| t.saturating_duration_since(end).as_secs_f64());
            out.insert("webhook_events".into(), json!(events));
            out.insert("webhook_requests".into(), json!(requests));
            out.insert("webhook_all_delivered".into(), json!(events >= created));
            out.insert("webhook_lag_after_end_secs".into(), json!(lag));
            let (status, body) = api
                .call(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/webhooks/{id}"),
                    Some(admin),
                    None,
                )
                .await?;
            if status != 200 {
                bail!("deleting the webhook endpoint answered {status}: {body}");
            }
        }
        if let Some(before) = self.published_before {
            let n = published(api).await? - before;
            out.insert("jetstream_published".into(), json!(n));
            out.insert("jetstream_all_published".into(), json!(n >= created as f64));
            out.insert(
                "jetstream_lag_after_end_secs".into(),
                json!(jetstream_done.map(|d| d.as_secs_f64())),
            );
        }
        Ok(Value::Object(out))
    }
}

async fn order_total(api: &Api, admin: &str) -> anyhow::Result<i64> {
    let (status, body) = api
        .call(reqwest::Method::GET, "/api/v1/orders?limit=1", Some(admin), None)
        .await?;
    if status != 200 {
        bail!("listing orders answered {status}");
    }
    body["data"]["total"].as_i64().context("total")
}

const TERMS: &[&str] = &[
    "lamp",
    "steel chair",
    "bamboo",
    "kettle",
    "wool",
    "granite mug",
    "puzzle",
    "leather wallet",
];

async fn browse(cli: &Cli, common: &Common, only: Option<&str>, deep_row: usize) -> anyhow::Result<()> {
    let api = Arc::new(Api::new(&cli.base_url, common.clients)?);
    let ids = Arc::new(product_ids(&api, 100).await?);
    // For deep pages: walk to the cursor at `deep_row` once.
    let cursor = if deep_row > 0 {
        let pb = bar((deep_row / 100) as u64, "walking to the deep page");
        let mut cursor: Option<String> = None;
        for _ in 0..deep_row / 100 {
            let path = match &cursor {
                Some(c) => format!("/api/v2/products?limit=100&cursor={c}"),
                None => "/api/v2/products?limit=100".into(),
            };
            let (_, body) = api.call(reqwest::Method::GET, &path, None, None).await?;
            cursor = body["data"]["next_cursor"].as_str().map(str::to_owned);
            pb.inc(1);
        }
        pb.finish();
        cursor
    } else {
        None
    };
    let cursor = Arc::new(cursor);
    let kind = only.map(str::to_owned);
    let name = common
        .name
        .clone()
        .unwrap_or_else(|| format!("browse-{}", only.unwrap_or("mix")));
    api.connect_all().await?;
    let (samples, seconds) = drive(common.clients, common.seconds, "browsing", move |c, n| {
        let (api, ids, cursor, kind) = (api.clone(), ids.clone(), cursor.clone(), kind.clone());
        async move {
            let offset_page = deep_row / 20 + 1;
            let pick = kind.as_deref().unwrap_or(match (c as u64 + n) % 3 {
                0 => "product",
                1 => "search",
                _ => "page",
            });
            let path = match pick {
                "search" => format!(
                    "/api/v1/products?search={}",
                    TERMS[(c + n as usize) % TERMS.len()].replace(' ', "%20")
                ),
                "search-v2" => format!(
                    "/api/v2/products?search={}",
                    TERMS[(c + n as usize) % TERMS.len()].replace(' ', "%20")
                ),
                "offset" => format!("/api/v1/products?limit=20&page={offset_page}"),
                "page" => match cursor.as_ref() {
                    Some(cur) => format!("/api/v2/products?limit=20&cursor={cur}"),
                    None => "/api/v2/products?limit=20".to_owned(),
                },
                _ => format!("/api/v1/products/{}", ids[(c * 7 + n as usize) % ids.len()]),
            };
            api.status(c, reqwest::Method::GET, &path, None, None).await
        }
    })
    .await;
    report(
        &cli.out,
        &name,
        &samples,
        seconds,
        json!({"deep_row": deep_row}),
        |s| s == 200,
    )?;
    Ok(())
}

async fn login_storm(cli: &Cli, common: &Common, logins: usize) -> anyhow::Result<()> {
    let api = Arc::new(Api::new(&cli.base_url, common.clients + logins)?);
    let ids = Arc::new(product_ids(&api, 100).await?);
    let stop = Arc::new(AtomicBool::new(false));
    let storm_count = Arc::new(AtomicU64::new(0));
    let mut storm = Vec::new();
    api.connect_all().await?;
    for _ in 0..logins {
        let (api, stop, count) = (api.clone(), stop.clone(), storm_count.clone());
        let (email, password) = (cli.admin_email.clone(), cli.admin_password.clone());
        storm.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = api.login(&email, &password).await;
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let name = common.name.clone().unwrap_or_else(|| "login-storm-reads".into());
    let (samples, seconds) = drive(
        common.clients,
        common.seconds,
        "reads during logins",
        move |c, n| {
            let (api, ids) = (api.clone(), ids.clone());
            async move {
                api.status(
                    c,
                    reqwest::Method::GET,
                    &format!("/api/v1/products/{}", ids[(c * 7 + n as usize) % ids.len()]),
                    None,
                    None,
                )
                .await
            }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in storm {
        let _ = t.await;
    }
    let logins_done = storm_count.load(Ordering::Relaxed);
    report(
        &cli.out,
        &name,
        &samples,
        seconds,
        json!({"concurrent_logins": logins, "logins_completed": logins_done}),
        |s| s == 200,
    )?;
    println!("logins completed meanwhile: {logins_done}");
    Ok(())
}

async fn bare(cli: &Cli, common: &Common) -> anyhow::Result<()> {
    let api = Arc::new(Api::new(&cli.base_url, common.clients)?);
    let (status, _) = api.call(reqwest::Method::GET, "/bench/bare", None, None).await?;
    if status != 200 {
        bail!("/bench/bare answered {status}: start the server with APP__SERVER__BENCH_ENDPOINTS=true");
    }
    let name = common.name.clone().unwrap_or_else(|| "bare".into());
    api.connect_all().await?;
    let (samples, seconds) = drive(common.clients, common.seconds, "bare endpoint", move |c, _| {
        let api = api.clone();
        async move {
            api.status(c, reqwest::Method::GET, "/bench/bare", None, None)
                .await
        }
    })
    .await;
    report(&cli.out, &name, &samples, seconds, json!({}), |s| s == 200)?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match &cli.scenario {
            Scenario::FlashSale {
                webhook,
                jetstream,
                common,
                users,
                stock,
                product_id,
            } => {
                let events = Subscribers {
                    webhook: *webhook,
                    jetstream: *jetstream,
                };
                flash_sale(&cli, common, *users, *stock, *product_id, events).await
            }
            Scenario::Browse {
                common,
                only,
                deep_row,
            } => browse(&cli, common, only.as_deref(), *deep_row).await,
            Scenario::LoginStorm { common, logins } => login_storm(&cli, common, *logins).await,
            Scenario::Bare { common } => bare(&cli, common).await,
            Scenario::Checkout {
                common,
                users,
                stock,
                abandon,
                think_ms,
                ttl_secs,
            } => checkout::checkout(&cli, common, *users, *stock, *abandon, *think_ms, *ttl_secs).await,
            Scenario::ExpiryStorm {
                common,
                holds,
                order_clients,
                users,
                ttl_secs,
            } => checkout::expiry_storm(&cli, common, *holds, *order_clients, *users, *ttl_secs).await,
        }
    })
}
