//! Argon2id at OWASP's minimum (m = 19 MiB, t = 2, p = 1), computed on the
//! blocking pool with a bound on how many run at once.

use std::sync::Arc;

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordVerifier, SaltString},
    Algorithm, Argon2, Params, Version,
};
use tokio::sync::Semaphore;

use crate::error::AppError;

#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    /// A real hash of a random password: unknown emails are verified against it
    /// so a failed login takes as long whether or not the email exists.
    dummy_hash: Arc<str>,
}

fn argon2() -> Argon2<'static> {
    // 19 MiB = 19456 KiB.
    let params = Params::new(19_456, 2, 1, None).expect("static Argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_sync(password: &str) -> Result<String, argon2::password_hash::Error> {
    use argon2::PasswordHasher as _;
    let salt = SaltString::generate(&mut OsRng);
    Ok(argon2().hash_password(password.as_bytes(), &salt)?.to_string())
}

fn verify_sync(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        // Parameters come from the PHC string, so older hashes still verify.
        Ok(parsed) => argon2().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

impl PasswordHasher {
    pub fn new(concurrency: usize) -> Self {
        let concurrency = if concurrency == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
        } else {
            concurrency
        };
        let random: [u8; 16] = rand::random();
        let dummy = hash_sync(&format!("{random:x?}")).expect("hashing a random password");
        Self {
            permits: Arc::new(Semaphore::new(concurrency)),
            dummy_hash: dummy.into(),
        }
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, AppError> {
        let _permit = self.permits.acquire().await.map_err(AppError::internal)?;
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(f))
            .await
            .map_err(AppError::internal)
    }

    pub async fn hash(&self, password: String) -> Result<String, AppError> {
        self.run(move || hash_sync(&password))
            .await?
            .map_err(|e| AppError::internal(anyhow::anyhow!("hashing: {e}")))
    }

    /// Verifies against `phc`, or against the dummy hash when there is none
    /// (unknown user, passwordless account); the answer is then always false.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, AppError> {
        let dummy = self.dummy_hash.clone();
        self.run(move || match phc {
            Some(phc) => verify_sync(&password, &phc),
            None => {
                let _ = verify_sync(&password, &dummy);
                false
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn hashes_are_argon2id_phc_with_owasp_parameters() {
        let h = PasswordHasher::new(1);
        let phc = h.hash("Secret123".into()).await.expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(h
            .verify("Secret123".into(), Some(phc.clone()))
            .await
            .expect("verify"));
        assert!(!h.verify("Secret124".into(), Some(phc)).await.expect("verify"));
        assert!(!h.verify("Secret123".into(), None).await.expect("verify"));
        assert!(!h
            .verify("x".into(), Some("not a phc".into()))
            .await
            .expect("verify"));
    }
}
