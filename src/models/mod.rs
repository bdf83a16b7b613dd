//! Per table: the row struct, insert/update forms and the queries, side by side.

pub mod refresh_token;
pub mod user;
