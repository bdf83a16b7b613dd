//! Integration tests: real HTTP against the real `Application` on port 0, each
//! test with its own freshly migrated Postgres schema.

mod auth;
mod catalog;
mod cli;
mod docs;
mod events;
mod fuzz;
mod helpers;
mod hostile;
mod http;
mod instances;
mod inventory;
mod migrations;
mod oauth;
mod ops;
mod orders;
mod redis;
mod reliability;
mod reservations;
mod security;
mod users;
