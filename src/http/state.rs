//! `AppState`: what every handler can reach, built once by `Application`.

use std::sync::Arc;

use actix::Addr;

use crate::{
    actors::{
        cache::CacheActor,
        catalog::{CatalogActor, CatalogReader},
        events::webhooks::WebhookActor,
        inventory::InventoryActor,
        order::OrderActor,
        user::UserActor,
    },
    auth::JwtKeys,
    cache::RedisHealth,
    config::ReservationSettings,
    http::routes::oauth::OAuthRedirects,
    metrics::Metrics,
    pagination::CursorCodec,
};

/// Shared, read-only state handed to every handler.
pub struct AppState {
    pub users: Addr<UserActor>,
    pub catalog_writer: Addr<CatalogActor>,
    pub inventory: Addr<InventoryActor>,
    pub orders: Addr<OrderActor>,
    pub webhooks: Addr<WebhookActor>,
    /// `webhooks.allow_private_targets`: endpoints may point at private addresses.
    pub allow_private_targets: bool,
    /// Catalog reads run on the HTTP workers, not through a mailbox.
    pub catalog: CatalogReader,
    /// Present when Redis is configured.
    pub cache_actor: Option<Addr<CacheActor>>,
    pub redis_health: RedisHealth,
    pub jwt: Arc<JwtKeys>,
    pub cursors: CursorCodec,
    pub metrics: Arc<Metrics>,
    /// Present when an OAuth provider is configured.
    pub oauth: Option<OAuthRedirects>,
    /// Serve `/bench/bare` (load testing only).
    pub bench_endpoints: bool,
    /// Hold lifetimes a request may ask for.
    pub holds: ReservationSettings,
    /// SHA-256 of `metrics.bearer_token`, when one is set.
    pub metrics_token: Option<[u8; 32]>,
}
