//! Argon2id at OWASP's minimum (m = 19 MiB, t = 2, p = 1), computed on the
//! blocking pool with a bound on how many run at once, in working memory that
//! is kept while hashes keep coming.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc, Mutex,
};

use argon2::{
    password_hash::{rand_core::OsRng, Output, ParamsString, PasswordHash, Salt, SaltString},
    Algorithm, Argon2, Block, Params, Version,
};
use tokio::sync::Semaphore;

use crate::error::AppError;

type PhcResult<T> = Result<T, argon2::password_hash::Error>;

#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    scratch: Arc<Scratch>,
    /// A real hash of a random password: unknown emails are verified against it
    /// so a failed login takes as long whether or not the email exists.
    dummy_hash: Arc<str>,
}

/// Argon2's working memory, 19 MiB per hash. The crate's own `hash_password`
/// allocates it for every hash, which the allocator maps, the kernel faults in
/// page by page and unmaps again, interrupting the other cores' threads of
/// the process to flush their TLBs. During a login storm a finished hash
/// hands its buffer to the next one instead (BENCHMARKS.md, session 10:
/// median +13% logins/s); once no hash is running or waiting, every buffer is
/// freed, so an idle server holds none. At most one buffer per permit exists.
#[derive(Default)]
struct Scratch {
    idle: Mutex<Vec<Vec<Block>>>,
    /// Hashes running or waiting for a permit.
    wanted: AtomicUsize,
}

/// One hash's claim on `Scratch`: counted from the request for a permit
/// until the hash is done (or its request is dropped), then, if it was the
/// last, the idle buffers go.
struct Claim(Arc<Scratch>);

impl Scratch {
    fn claim(self: &Arc<Self>) -> Claim {
        self.wanted.fetch_add(1, Ordering::SeqCst);
        Claim(self.clone())
    }

    fn take(&self, blocks: usize) -> Vec<Block> {
        let reused = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match reused {
            Some(buffer) if buffer.len() == blocks => buffer,
            _ => vec![Block::default(); blocks],
        }
    }

    /// Keeps `buffer` for the next hash if another one is running or waiting.
    fn give_back(&self, buffer: Vec<Block>) {
        if self.wanted.load(Ordering::SeqCst) > 1 {
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(buffer);
            }
        }
    }

    #[cfg(test)]
    fn idle_buffers(&self) -> usize {
        self.idle.lock().map(|idle| idle.len()).unwrap_or(0)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.0.wanted.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Ok(mut idle) = self.0.idle.lock() {
                idle.clear();
            }
        }
    }
}

fn argon2() -> Argon2<'static> {
    // 19 MiB = 19456 KiB.
    let params = Params::new(19_456, 2, 1, None).expect("static Argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// What the crate's `PasswordHasher::hash_password` computes, in `scratch`'s
/// memory.
fn compute(
    argon: &Argon2<'_>,
    password: &[u8],
    salt: Salt<'_>,
    len: usize,
    scratch: &Scratch,
) -> PhcResult<Output> {
    let mut salt_bytes = [0u8; Salt::MAX_LENGTH];
    let salt = salt.decode_b64(&mut salt_bytes)?;
    let mut memory = scratch.take(argon.params().block_count());
    let output = Output::init_with(len, |out| {
        Ok(argon.hash_password_into_with_memory(password, salt, out, &mut memory)?)
    });
    scratch.give_back(memory);
    output
}

fn hash_sync(password: &str, scratch: &Scratch) -> PhcResult<String> {
    let salt = SaltString::generate(&mut OsRng);
    let argon = argon2();
    let output = compute(
        &argon,
        password.as_bytes(),
        salt.as_salt(),
        Params::DEFAULT_OUTPUT_LEN,
        scratch,
    )?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon.params())?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// What the crate's `PasswordVerifier::verify_password` checks: the
/// algorithm, version and parameters come from the PHC string, so older
/// hashes still verify; the comparison is constant-time (`Output`'s `==`).
fn verify_sync(password: &str, phc: &str, scratch: &Scratch) -> bool {
    let check = || -> PhcResult<bool> {
        let parsed = PasswordHash::new(phc)?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Ok(false);
        };
        let algorithm = Algorithm::try_from(parsed.algorithm)?;
        let version = parsed
            .version
            .map(Version::try_from)
            .transpose()?
            .unwrap_or_default();
        let argon = Argon2::new(algorithm, version, Params::try_from(&parsed)?);
        Ok(compute(&argon, password.as_bytes(), salt, expected.len(), scratch)? == expected)
    };
    check().unwrap_or(false)
}

impl PasswordHasher {
    pub fn new(concurrency: usize) -> Self {
        let concurrency = if concurrency == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
        } else {
            concurrency
        };
        let random: [u8; 16] = rand::random();
        let scratch = Arc::new(Scratch::default());
        let dummy = hash_sync(&format!("{random:x?}"), &scratch).expect("hashing a random password");
        Self {
            permits: Arc::new(Semaphore::new(concurrency)),
            scratch,
            dummy_hash: dummy.into(),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Scratch) -> T + Send + 'static,
    ) -> Result<T, AppError> {
        let claim = self.scratch.claim();
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(AppError::internal)?;
        let span = tracing::Span::current();
        // The permit and the claim go with the hash, not with the request: a
        // request dropped while its hash runs (the client went away) keeps
        // its permit taken until the hash ends, so disconnecting clients
        // cannot start more hashes at once than the bound, and the hash
        // still hands its buffer on (or frees it) when it ends.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            span.in_scope(|| f(&claim.0))
        })
        .await
        .map_err(AppError::internal)
    }

    pub async fn hash(&self, password: String) -> Result<String, AppError> {
        self.run(move |scratch| hash_sync(&password, scratch))
            .await?
            .map_err(|e| AppError::internal(anyhow::anyhow!("hashing: {e}")))
    }

    /// Verifies against `phc`, or against the dummy hash when there is none
    /// (unknown user, passwordless account); the answer is then always false.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, AppError> {
        let dummy = self.dummy_hash.clone();
        self.run(move |scratch| match phc {
            Some(phc) => verify_sync(&password, &phc, scratch),
            None => {
                let _ = verify_sync(&password, &dummy, scratch);
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
    fn hashes_verify_both_ways_with_the_crates_own_functions() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        let scratch = Scratch::default();
        let ours = hash_sync("Secret123", &scratch).expect("hash");
        let parsed = PasswordHash::new(&ours).expect("phc");
        assert!(argon2().verify_password(b"Secret123", &parsed).is_ok());
        assert!(argon2().verify_password(b"Secret124", &parsed).is_err());

        // A hash made elsewhere, with other parameters and output length.
        let params = Params::new(4096, 3, 1, Some(24)).expect("params");
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"Other456", &salt)
            .expect("hash")
            .to_string();
        assert!(theirs.starts_with("$argon2id$v=19$m=4096,t=3,p=1$"), "{theirs}");
        assert!(verify_sync("Other456", &theirs, &scratch));
        assert!(!verify_sync("Other457", &theirs, &scratch));
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, Params::default())
            .hash_password(b"Other456", &salt)
            .expect("hash")
            .to_string();
        assert!(verify_sync("Other456", &argon2i, &scratch));
        assert!(!verify_sync(
            "Other456",
            &argon2i.replace("argon2i", "argon2d"),
            &scratch
        ));
        assert!(!verify_sync("Other456", &theirs[..theirs.len() - 4], &scratch));
    }

    #[test]
    fn buffers_are_kept_only_while_another_hash_wants_one() {
        let scratch = Arc::new(Scratch::default());
        let (first, second) = (scratch.claim(), scratch.claim());
        let buffer = scratch.take(8);
        scratch.give_back(buffer);
        assert_eq!(scratch.idle_buffers(), 1, "kept for the waiting hash");
        drop(first);
        let buffer = scratch.take(8);
        assert_eq!(scratch.idle_buffers(), 0, "reused");
        scratch.give_back(buffer);
        assert_eq!(scratch.idle_buffers(), 0, "nobody else wants one: freed");

        let third = scratch.claim();
        let buffer = scratch.take(8);
        scratch.give_back(buffer);
        assert_eq!(scratch.idle_buffers(), 1);
        drop(second);
        assert_eq!(scratch.idle_buffers(), 1, "the third still wants it");
        drop(third);
        assert_eq!(scratch.idle_buffers(), 0, "the last claim frees the idle buffers");
    }

    #[actix_web::test]
    async fn a_dropped_request_holds_its_permit_until_its_hash_ends() {
        let h = PasswordHasher::new(1);
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let running = h.clone();
        let request = tokio::spawn(async move {
            running
                .run(move |_| {
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
        assert_eq!(h.scratch.wanted.load(Ordering::SeqCst), 0);
    }

    #[actix_web::test]
    async fn concurrent_hashes_leave_no_buffer_behind() {
        let h = PasswordHasher::new(1);
        let phc = h.hash("Secret123".into()).await.expect("hash");
        let checks = ["Secret123", "Secret124", "Secret123"].map(|p| h.verify(p.into(), Some(phc.clone())));
        let answers: Vec<bool> = futures_util::future::try_join_all(checks).await.expect("verify");
        assert_eq!(answers, [true, false, true]);
        assert_eq!(h.scratch.idle_buffers(), 0);
        assert_eq!(h.scratch.wanted.load(Ordering::SeqCst), 0);
    }
}
