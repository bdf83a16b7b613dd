//! Argon2id at OWASP's minimum (m = 19 MiB, t = 2, p = 1), computed on the
//! blocking pool with a bound on how many run at once.

use std::sync::Arc;

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString},
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
    let salt = SaltString::generate(&mut OsRng);
    Ok(argon2().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// The algorithm, version and parameters come from the PHC string, so hashes
/// made with other parameters still verify; the comparison is constant-time.
fn verify_sync(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|parsed| argon2().verify_password(password.as_bytes(), &parsed).is_ok())
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
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(AppError::internal)?;
        let span = tracing::Span::current();
        // The permit goes with the hash, not with the request: a request
        // dropped while its hash runs (the client went away) keeps its permit
        // taken until the hash ends, so disconnecting clients cannot start
        // more hashes at once than the bound.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            span.in_scope(f)
        })
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

    #[test]
    fn hashes_with_other_parameters_and_algorithms_verify() {
        let params = Params::new(4096, 3, 1, Some(24)).expect("params");
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"Other456", &salt)
            .expect("hash")
            .to_string();
        assert!(theirs.starts_with("$argon2id$v=19$m=4096,t=3,p=1$"), "{theirs}");
        assert!(verify_sync("Other456", &theirs));
        assert!(!verify_sync("Other457", &theirs));
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, Params::default())
            .hash_password(b"Other456", &salt)
            .expect("hash")
            .to_string();
        assert!(verify_sync("Other456", &argon2i));
        assert!(!verify_sync("Other456", &argon2i.replace("argon2i", "argon2d")));
        assert!(!verify_sync("Other456", &theirs[..theirs.len() - 4]));
    }

    #[actix_web::test]
    async fn a_dropped_request_holds_its_permit_until_its_hash_ends() {
        let h = PasswordHasher::new(1);
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let running = h.clone();
        let request = tokio::spawn(async move {
            running
                .run(move || {
                    let _ = started_tx.send(());
                    let _ = release_rx.recv();
                })
                .await
        });
        started.await.expect("the hash started");
        request.abort();
        assert!(request.await.is_err_and(|e| e.is_cancelled()));
        assert_eq!(
            h.permits.available_permits(),
            0,
            "the request is gone but its hash still runs"
        );
        let _ = release.send(());
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while h.permits.available_permits() == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the permit comes back when the hash ends");
    }
}
