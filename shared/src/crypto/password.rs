//! Passwords: argon2id with OWASP's parameters (m = 19 MiB, t = 2, p = 1), PHC
//! strings in the database, hashing on the blocking pool behind one bounded [`Hasher`],
//! and a dummy verification for unknown accounts so a login's duration does not reveal
//! whether it exists.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;

use super::random_bytes;
use crate::telemetry::metric;

/// Memory in KiB, iterations, parallelism.
pub const MEMORY_KIB: u32 = 19 * 1024;
pub const ITERATIONS: u32 = 2;
pub const PARALLELISM: u32 = 1;

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .unwrap_or_else(|_| unreachable!("constant argon2 parameters are valid"));
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// Argon2's working memory (19 MiB), kept and reused by one hashing slot. Allocating
/// it per hash lets glibc keep the freed blocks in its per-thread arenas: with four
/// slots, 200 logins left the api at 1.5 GB RSS. Reused, the slots hold exactly
/// slots × 19 MiB.
#[derive(Default)]
struct Memory(Vec<Block>);

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Memory({} KiB)", self.0.len())
    }
}

impl Memory {
    fn argon2_into(
        &mut self,
        argon2: &Argon2<'_>,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), argon2::Error> {
        let needed = argon2.params().block_count();
        if self.0.len() < needed {
            self.0.resize(needed, Block::default());
        }
        argon2.hash_password_into_with_memory(password, salt, out, &mut self.0[..needed])
    }

    /// The PHC string of a new hash with the current parameters.
    fn hash(&mut self, password: &str) -> Result<String, HashError> {
        let error = |e: &dyn std::fmt::Display| HashError(e.to_string());
        let salt_bytes = random_bytes::<16>();
        let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| error(&e))?;
        let argon2 = argon2();
        let output = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
            Ok(self.argon2_into(&argon2, password.as_bytes(), &salt_bytes, out)?)
        })
        .map_err(|e| error(&e))?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(argon2.params()).map_err(|e| error(&e))?,
            salt: Some(salt.as_salt()),
            hash: Some(output),
        };
        Ok(phc.to_string())
    }

    /// Whether `password` matches `phc`, with the algorithm, version and parameters
    /// `phc` names (older hashes keep verifying). A malformed stored hash never matches.
    fn verify(&mut self, password: &str, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return false;
        };
        let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
            return false;
        };
        let Ok(version) = parsed.version.map_or(Ok(Version::V0x13), Version::try_from) else {
            return false;
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return false;
        };
        let mut salt_buffer = [0u8; 64];
        let Ok(salt) = salt.decode_b64(&mut salt_buffer) else {
            return false;
        };
        let argon2 = Argon2::new(algorithm, version, params);
        Output::init_with(expected.len(), |out| {
            Ok(self.argon2_into(&argon2, password.as_bytes(), salt, out)?)
        })
        // `Output`'s equality is constant-time.
        .is_ok_and(|computed| computed == expected)
    }

    /// Spends the same work as a real verification, for accounts that do not exist.
    fn verify_dummy(&mut self, password: &str) {
        static DUMMY: OnceLock<String> = OnceLock::new();
        let phc = DUMMY.get_or_init(|| self.hash("conveyor-dummy-password").unwrap_or_default());
        let _ = self.verify(password, phc);
    }
}

/// Why a hash or a verification did not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Every hashing slot stayed taken for the whole wait: the caller should answer
    /// "try again later" rather than queue more 19 MiB computations.
    #[error("password hashing is saturated; retry in {} s", retry_after.as_secs())]
    Busy { retry_after: Duration },
    #[error(transparent)]
    Failed(#[from] HashError),
}

/// The one gate every hash and verification of a process passes. Each argon2id run
/// holds 19 MiB for its whole duration, so unbounded parallel logins (or registrations)
/// turn straight into memory: `concurrency` bounds the runs in flight, each slot
/// reusing its own working memory (so the process holds at most `concurrency` × 19 MiB
/// for hashing), and a caller that finds every slot taken waits at most `wait` before
/// it gets [`PasswordError::Busy`]. Work runs on the blocking pool so the runtime's
/// threads stay free; the permit travels into the blocking task, so a request
/// cancelled mid-hash keeps its slot until the hash ends.
#[derive(Debug, Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// Idle working memories; never more than there are permits.
    memories: Arc<Mutex<Vec<Memory>>>,
    wait: Duration,
}

impl Hasher {
    pub fn new(concurrency: usize, wait: Duration) -> Self {
        Hasher {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            memories: Arc::default(),
            wait,
        }
    }

    /// The PHC string of a new hash.
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        Ok(self.run(move |memory| memory.hash(&password)).await??)
    }

    /// Whether `password` matches `phc`; with no stored hash (an unknown account) the
    /// same work is spent and the answer is `false`.
    pub async fn verify(
        &self,
        password: String,
        phc: Option<String>,
    ) -> Result<bool, PasswordError> {
        self.run(move |memory| match phc {
            Some(phc) => memory.verify(&password, &phc),
            None => {
                memory.verify_dummy(&password);
                false
            }
        })
        .await
    }

    async fn run<T, F>(&self, work: F) -> Result<T, PasswordError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Memory) -> T + Send + 'static,
    {
        // Retry-After carries whole seconds; a slot frees within one hash (tens of ms),
        // so the wait already spent, rounded up, is a fair hint of the queue.
        let busy = || {
            metrics::counter!(metric::PASSWORD_HASH_REJECTIONS_TOTAL).increment(1);
            PasswordError::Busy {
                retry_after: Duration::from_secs(
                    self.wait.as_secs() + u64::from(self.wait.subsec_nanos() > 0),
                )
                .max(Duration::from_secs(1)),
            }
        };
        let permit = tokio::time::timeout(self.wait, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_elapsed| busy())?
            // The semaphore is never closed; were it, refusing is the safe answer.
            .map_err(|_closed| busy())?;
        let memories = Arc::clone(&self.memories);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let idle = || memories.lock().unwrap_or_else(PoisonError::into_inner);
            let mut memory = idle().pop().unwrap_or_default();
            let result = work(&mut memory);
            idle().push(memory);
            result
        })
        .await
        .map_err(|err| PasswordError::Failed(HashError(err.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::PasswordHasher as _;

    use super::*;

    #[test]
    fn hashes_verify_and_carry_owasp_parameters() {
        let mut memory = Memory::default();
        let phc = memory.hash("correct horse battery staple").expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(memory.verify("correct horse battery staple", &phc));
        assert!(!memory.verify("correct horse battery stapler", &phc));
        assert!(!memory.verify("anything", "not-a-phc-string"));
    }

    #[test]
    fn hashes_from_the_argon2_crate_with_other_parameters_verify() {
        let params = Params::new(8 * 1024, 3, 1, None).expect("params");
        let other = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::encode_b64(b"sixteen byte slt").expect("salt");
        let phc = other
            .hash_password(b"correct horse battery staple", &salt)
            .expect("hash")
            .to_string();
        // One memory serves the current parameters and a smaller need alike.
        let mut memory = Memory::default();
        let ours = memory.hash("correct horse battery staple").expect("hash");
        assert!(memory.verify("correct horse battery staple", &phc));
        assert!(!memory.verify("correct horse battery stapler", &phc));
        assert!(memory.verify("correct horse battery staple", &ours));
        let truncated = &phc[..phc.len() - 4];
        assert!(!memory.verify("correct horse battery staple", truncated));
    }

    #[tokio::test]
    async fn a_saturated_hasher_refuses_after_its_wait_and_recovers() {
        // The test runtime is single-threaded: this recorder sees the whole test.
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let metrics = recorder.handle();
        let _recorder = metrics::set_default_local_recorder(&recorder);
        let rejections = |n: u32| format!("{} {n}\n", metric::PASSWORD_HASH_REJECTIONS_TOTAL);
        // Registered at zero with the api's other series, before the first refusal.
        crate::telemetry::register_api_metrics();
        let hasher = Hasher::new(1, Duration::from_millis(20));
        assert!(
            metrics.render().contains(&rejections(0)),
            "registered at zero"
        );
        let held = Arc::clone(&hasher.permits)
            .acquire_owned()
            .await
            .expect("permit");
        match hasher.verify("anything".into(), None).await {
            Err(PasswordError::Busy { retry_after }) => {
                assert_eq!(retry_after, Duration::from_secs(1));
            }
            other => panic!("expected Busy, got {other:?}"),
        }
        assert!(
            metrics.render().contains(&rejections(1)),
            "{}",
            metrics.render()
        );
        drop(held);
        let phc = hasher
            .hash("correct horse battery staple".into())
            .await
            .expect("hash");
        let matches = hasher.verify("correct horse battery staple".into(), Some(phc));
        assert!(matches.await.expect("verified"));
        assert_eq!(hasher.memories.lock().expect("lock").len(), 1, "reused");
    }
}
