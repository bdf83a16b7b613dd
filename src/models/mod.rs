//! Per table: the row struct, insert/update forms and the queries, side by side.

pub mod category;
pub mod event;
pub mod idempotency;
pub mod oauth_state;
pub mod order;
pub mod product;
pub mod refresh_token;
pub mod reservation;
pub mod user;
pub mod webhook;
