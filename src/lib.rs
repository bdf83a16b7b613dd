//! storefront: an e-commerce REST backend on actix actors and diesel-async.

pub mod actors;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod http;
pub mod metrics;
pub mod models;
pub mod pagination;
pub mod seed;
pub mod startup;
pub mod telemetry;
