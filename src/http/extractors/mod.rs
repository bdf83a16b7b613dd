//! Request extractors: bearer authentication, JSON bodies, the API version.

pub mod auth;
pub mod json;
pub mod version;

pub use auth::Admin;
pub use json::JsonBody;
