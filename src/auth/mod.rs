//! Credentials: Argon2id password hashing, JWT access tokens, opaque refresh tokens.

pub mod jwt;
pub mod oauth;
pub mod password;
pub mod refresh;

pub use jwt::{Claims, JwtKeys};
pub use password::PasswordHasher;

use crate::{domain::Role, error::AppError};

/// The authenticated caller, from a verified access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthUser {
    pub id: i64,
    pub role: Role,
}

impl AuthUser {
    /// 403 unless the caller has at least `role`.
    pub fn require(self, role: Role) -> Result<Self, AppError> {
        if self.role >= role {
            Ok(self)
        } else {
            Err(AppError::Forbidden("Insufficient permissions".into()))
        }
    }
}
