//! The HTTP layer: thin handlers that authorize, send a typed message to an
//! actor and map the reply to the envelope.

pub mod envelope;
pub mod errors;
pub mod extractors;
pub mod middleware;
pub mod openapi;
pub mod routes;
mod state;
pub mod validate;

pub use state::AppState;
