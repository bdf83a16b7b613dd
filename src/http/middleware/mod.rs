//! Middleware: request ids, security headers, the root tracing span.

pub mod rate_limit;
pub mod request_id;
pub mod security_headers;
pub mod span;
