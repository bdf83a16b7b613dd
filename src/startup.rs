//! `Application`: binds its own listener, wires the actors once, and serves.
//! Tests build the very same `Application` on port 0.

use std::{net::TcpListener, sync::Arc, time::Duration};

use actix::{Arbiter, ArbiterHandle, Supervisor};
use actix_cors::Cors;
use actix_governor::Governor;
use actix_web::{
    dev::{Server, ServerHandle},
    http::{header, Method},
    middleware::{from_fn, Compress},
    web, App, HttpServer,
};
use secrecy::ExposeSecret;
use sha2::Digest;
use tracing_actix_web::TracingLogger;

use crate::{
    actors::{
        cache::CacheActor,
        catalog::{CatalogActor, CatalogReader},
        events::{jetstream::JetStreamActor, webhooks::WebhookActor, Outbox},
        inventory::InventoryActor,
        order::OrderActor,
        user::UserActor,
    },
    auth::{oauth::Provider, JwtKeys, PasswordHasher},
    cache::{Cache, RedisHealth},
    config::Settings,
    db::{build_pool, migrate},
    http::{
        errors,
        extractors::json::JsonLimit,
        middleware::{
            self,
            rate_limit::{LoginLimit, RateLimiter, Scope},
        },
        routes::{self, oauth::OAuthRedirects},
        AppState,
    },
    metrics::Metrics,
    models::product::SearchTotals,
    pagination::CursorCodec,
};

pub struct Application {
    port: u16,
    handle_signals: bool,
    state: web::Data<AppState>,
    server: Server,
    /// Keeps the actor arbiters alive as long as the server.
    _arbiters: Vec<Arbiter>,
}

impl Application {
    /// Builds everything and binds `server.host:server.port` (port 0 picks a
    /// free one). Must run inside an actix system (`#[actix_web::main]`,
    /// `#[actix_web::test]`).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db_url = settings.database.url.expose_secret().to_owned();
        if settings.database.migrate_on_start {
            let applied = migrate::run_pending(&db_url).await?;
            if !applied.is_empty() {
                tracing::info!(?applied, "migrations applied");
            }
        }

        let acquire = Duration::from_millis(settings.database.acquire_timeout_ms);
        let secret = settings.auth.jwt_secret.expose_secret().as_bytes().to_vec();
        let jwt = Arc::new(JwtKeys::new(
            &settings.auth.jwt_secret,
            &settings.auth.issuer,
            &settings.auth.audience,
            Duration::from_secs(settings.auth.access_ttl_secs),
        ));
        let cursors = CursorCodec::new(&secret);
        let hasher = PasswordHasher::new(settings.auth.hash_concurrency);

        let metrics = Arc::new(Metrics::new());
        // A pool for `name`, reported on /metrics.
        let pool = {
            let (url, metrics) = (db_url.clone(), metrics.clone());
            move |name: &'static str, size: u32, setup: Option<&'static str>| {
                let pool = build_pool(&url, size, acquire, setup);
                metrics.register_pool(name, pool.clone());
                pool
            }
        };
        let pools = &settings.database.pools;

        // Each actor on its own Arbiter (thread), with its own pool created
        // there, under a Supervisor that restarts it if it stops. A handler
        // that panics answers its request 503 and the actor goes on
        // (`actors::guarded`); a panicking inventory batch stops its actor,
        // which the Supervisor then restarts.
        let google = &settings.oauth.google;
        let provider = Provider::from_settings(google)?.map(Arc::new);
        let oauth = provider.as_ref().map(|_| OAuthRedirects {
            success: google.success_redirect.clone(),
            failure: google.failure_redirect.clone(),
            secure_cookie: google.redirect_url.starts_with("https://"),
        });
        let user_arbiter = Arbiter::new();
        let users = {
            let (jwt, cursors, pool) = (jwt.clone(), cursors.clone(), pool.clone());
            let refresh_ttl = Duration::from_secs(settings.auth.refresh_ttl_secs);
            let size = pools.user.max_size;
            Supervisor::start_in_arbiter(&user_arbiter.handle(), move |_| {
                UserActor::new(pool("user", size, None), hasher, jwt, cursors, refresh_ttl)
                    .with_oauth(provider)
            })
        };

        // The cache: Redis shared by every instance, or in-process.
        let ttl = Duration::from_secs(settings.cache.ttl_secs);
        let redis_health = RedisHealth::new(&settings.redis.prefix);
        let mut arbiters = Vec::new();
        let (cache, cache_actor) = match settings.redis.url() {
            _ if !settings.cache.enabled => (Cache::off(metrics.clone()), None),
            Some(url) => {
                let client = redis::Client::open(url)?;
                let cache_arbiter = Arbiter::new();
                let health = redis_health.clone();
                let actor = Supervisor::start_in_arbiter(&cache_arbiter.handle(), move |_| {
                    CacheActor::new(client, health)
                });
                arbiters.push(cache_arbiter);
                (
                    Cache::redis(redis_health.clone(), ttl, metrics.clone()),
                    Some(actor),
                )
            }
            None => (
                Cache::local(ttl, settings.cache.local_capacity, metrics.clone()),
                None,
            ),
        };

        let catalog_arbiter = Arbiter::new();
        let catalog_writer = {
            let (cache, pool, size) = (cache.clone(), pool.clone(), pools.catalog.max_size);
            Supervisor::start_in_arbiter(&catalog_arbiter.handle(), move |_| {
                CatalogActor::new(pool("catalog", size, None), cache)
            })
        };
        let catalog = CatalogReader::new(
            pool(
                "reads",
                pools.reads.max_size,
                Some(crate::actors::catalog::READS_SESSION_SETUP),
            ),
            cursors.clone(),
            cache.clone(),
            SearchTotals::new(settings.cache.search_totals),
        );

        // Events: written by the actors that make the changes, read by the
        // WebhookActor and (with `events.nats_url`) the JetStreamActor.
        let nats_url = settings.events.nats_url().map(str::to_owned);
        let outbox = Outbox::new(nats_url.is_some());
        let events_arbiter = Arbiter::new();
        let webhooks = {
            let (pool, size) = (pool.clone(), pools.webhooks.max_size);
            let (webhook_settings, outbox, metrics, cursors) = (
                settings.webhooks.clone(),
                outbox.clone(),
                metrics.clone(),
                cursors.clone(),
            );
            Supervisor::start_in_arbiter(&events_arbiter.handle(), move |_| {
                WebhookActor::new(
                    pool("webhooks", size, None),
                    webhook_settings,
                    outbox,
                    metrics,
                    cursors,
                )
            })
        };
        if let Some(url) = nats_url {
            let (pool, size) = (pool.clone(), pools.jetstream.max_size);
            let (event_settings, outbox, metrics) =
                (settings.events.clone(), outbox.clone(), metrics.clone());
            let poll = Duration::from_millis(settings.webhooks.poll_interval_ms);
            Supervisor::start_in_arbiter(&events_arbiter.handle(), move |_| {
                JetStreamActor::new(
                    pool("jetstream", size, None),
                    url,
                    event_settings,
                    poll,
                    outbox,
                    metrics,
                )
            });
        }

        // The InventoryActor serializes every stock change; it gets a thread
        // of its own so nothing else delays its batches.
        let inventory_arbiter = Arbiter::new();
        let inventory = {
            let (inventory_settings, holds, cache, metrics, outbox) = (
                settings.inventory.clone(),
                settings.reservations.clone(),
                cache.clone(),
                metrics.clone(),
                outbox.clone(),
            );
            // At least one connection per batch in flight, whatever the pool
            // setting says.
            let needed = inventory_settings.max_in_flight.max(1);
            let (pool, size) = (pool.clone(), pools.inventory.max_size.max(needed as u32));
            Supervisor::start_in_arbiter(&inventory_arbiter.handle(), move |_| {
                InventoryActor::new(
                    pool("inventory", size, Some(crate::actors::inventory::SESSION_SETUP)),
                    cache,
                    outbox,
                    inventory_settings,
                    holds,
                    metrics,
                )
            })
        };

        let order_arbiter = Arbiter::new();
        let orders = {
            let (inventory, cursors, order_settings, outbox) = (
                inventory.clone(),
                cursors.clone(),
                settings.orders.clone(),
                outbox.clone(),
            );
            let size = pools.order.max_size;
            Supervisor::start_in_arbiter(&order_arbiter.handle(), move |_| {
                OrderActor::new(
                    pool("order", size, None),
                    outbox,
                    inventory,
                    cursors,
                    order_settings,
                )
            })
        };

        let state = web::Data::new(AppState {
            users,
            catalog_writer,
            inventory,
            orders,
            webhooks,
            allow_private_targets: settings.webhooks.allow_private_targets,
            catalog,
            cache_actor,
            redis_health,
            jwt,
            cursors,
            metrics,
            oauth,
            bench_endpoints: settings.server.bench_endpoints,
            holds: settings.reservations.clone(),
            metrics_token: {
                let token = settings.metrics.bearer_token.expose_secret();
                (!token.is_empty()).then(|| sha2::Sha256::digest(token.as_bytes()).into())
            },
        });

        let listener = TcpListener::bind(settings.address())?;
        let port = listener.local_addr()?.port();
        let server = run(listener, state.clone(), &settings)?;
        tracing::info!(
            port,
            environment = settings.environment.as_str(),
            "storefront listening"
        );
        Ok(Self {
            port,
            handle_signals: true,
            state,
            server,
            _arbiters: {
                arbiters.extend([
                    user_arbiter,
                    catalog_arbiter,
                    inventory_arbiter,
                    order_arbiter,
                    events_arbiter,
                ]);
                arbiters
            },
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether SIGTERM/SIGINT stop the server (default). Tests turn it off so
    /// Ctrl-C still ends the test process.
    pub fn handle_signals(mut self, yes: bool) -> Self {
        self.handle_signals = yes;
        self
    }

    /// The actors and shared state (tests talk to actors directly).
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// A handle that stops the server and the actors (tests use it on drop).
    pub fn stopper(&self) -> Stopper {
        Stopper {
            server: self.server.handle(),
            arbiters: self._arbiters.iter().map(Arbiter::handle).collect(),
        }
    }

    /// Serves until SIGTERM or SIGINT (or a stop through the handle), then
    /// shuts down gracefully: stop accepting, finish the requests in flight
    /// (up to `server.shutdown_timeout_secs`), let the InventoryActor answer
    /// everything it queued, then stop the actors, which closes their pools.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let handle_signals = self.handle_signals;
        let signals = actix_web::rt::spawn(async move {
            if !handle_signals {
                return;
            }
            let signal = wait_for_signal().await;
            tracing::info!(signal, "shutting down gracefully");
            handle.stop(true).await;
        });
        let result = self.server.await;
        signals.abort();
        let flushed = tokio::time::timeout(
            Duration::from_secs(10),
            self.state.inventory.send(crate::actors::inventory::Flush),
        )
        .await;
        if flushed.is_err() {
            tracing::warn!("inventory did not drain within 10 s");
        }
        for arbiter in &self._arbiters {
            arbiter.stop();
        }
        tracing::info!("stopped");
        result
    }
}

async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            _ => {
                tracing::warn!("cannot install signal handlers");
                std::future::pending().await
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "ctrl-c"
    }
}

pub struct Stopper {
    server: ServerHandle,
    arbiters: Vec<ArbiterHandle>,
}

impl Stopper {
    /// Stops accepting, closes connections, and stops every actor's arbiter
    /// (which drops their pools).
    pub fn stop(&self) {
        // The stop command is sent at once; awaiting only waits for completion.
        drop(self.server.stop(false));
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

fn cors(origins: &[String]) -> Cors {
    let cors = Cors::default()
        .allowed_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::HeaderName::from_static("idempotency-key"),
            middleware::request_id::HEADER,
        ])
        .expose_headers([
            middleware::request_id::HEADER,
            header::RETRY_AFTER,
            header::HeaderName::from_static("idempotent-replayed"),
            header::HeaderName::from_static("ratelimit-limit"),
            header::HeaderName::from_static("ratelimit-remaining"),
            header::HeaderName::from_static("ratelimit-reset"),
        ])
        .supports_credentials()
        .max_age(600);
    origins.iter().fold(cors, |c, o| c.allowed_origin(o))
}

fn run(listener: TcpListener, state: web::Data<AppState>, settings: &Settings) -> anyhow::Result<Server> {
    let json_limit = settings.server.json_limit;
    let origins = settings.server.allowed_origins.clone();
    let limiter = RateLimiter {
        settings: settings.rate_limit.clone(),
        trusted_proxies: settings.server.trusted_proxies.clone(),
        redis: settings.redis.url().map(|_| state.redis_health.clone()),
    };
    // Built once so every worker shares the same in-process counters.
    let api_limit = limiter.governor_config(Scope::Api);
    let login_limit = limiter.governor_config(Scope::Login);
    let login_shared = web::Data::new(LoginLimit(login_limit.clone()));
    let limiter = web::Data::new(limiter);
    let mut server = HttpServer::new(move || {
        App::new()
            // Inner to outer: the last `wrap` sees the request first.
            .wrap(errors::envelope_errors())
            .wrap(Compress::default())
            .wrap(Governor::new(&api_limit))
            .wrap(Governor::new(&login_limit))
            .wrap(from_fn(middleware::rate_limit::shared))
            .wrap(cors(&origins))
            // Again outside CORS: a refused CORS request gets the envelope too.
            .wrap(errors::envelope_errors())
            .wrap(middleware::security_headers::middleware())
            .wrap(from_fn(middleware::span::access_log))
            .wrap(TracingLogger::<middleware::span::StorefrontRootSpan>::new())
            .wrap(from_fn(middleware::request_id::middleware))
            .app_data(state.clone())
            .app_data(limiter.clone())
            .app_data(login_shared.clone())
            .app_data(JsonLimit(json_limit))
            .app_data(web::PayloadConfig::new(json_limit))
            .app_data(web::PathConfig::default().error_handler(errors::path_error))
            .app_data(web::QueryConfig::default().error_handler(errors::query_error))
            .configure(routes::configure)
            .default_service(web::to(errors::not_found))
    })
    .listen(listener)?
    // Signals are ours (run_until_stopped): SIGINT must be graceful too.
    .disable_signals()
    .shutdown_timeout(settings.server.shutdown_timeout_secs);
    if settings.server.workers > 0 {
        server = server.workers(settings.server.workers);
    }
    Ok(server.run())
}
