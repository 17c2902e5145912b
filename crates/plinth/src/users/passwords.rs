//! End-user passwords: Argon2id (the `argon2` crate's defaults: 19 MiB, 2 passes, 1 lane), the
//! tenant's minimum length, at most 1,024 characters, and never one of the 10,000 most common
//! passwords of eight characters or more (`common_passwords.txt`, from the frequency list of
//! the `zxcvbn` project, MIT licence). Hashing runs on the blocking pool, a few at a time for the
//! whole process, so that sign-ins spread over many tenants queue instead of starving the server.

use std::collections::HashSet;
use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::http::{ApiError, ApiResult};

/// Longest password (seed 002).
pub const MAX_CHARS: usize = 1024;

const COMMON: &str = include_str!("common_passwords.txt");

fn common() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| COMMON.lines().filter(|l| !l.is_empty()).collect())
}

/// Why `password` is not acceptable for a tenant whose minimum is `min_chars`; `None` when it is.
pub fn weakness(password: &str, min_chars: usize) -> Option<String> {
    let chars = password.chars().count();
    if chars < min_chars {
        return Some(format!("must be at least {min_chars} characters"));
    }
    if chars > MAX_CHARS {
        return Some(format!("must be at most {MAX_CHARS} characters"));
    }
    if !crate::names::has_text(password) {
        return Some("must not be blank".into());
    }
    if common().contains(password.to_lowercase().as_str()) {
        return Some("is one of the most common passwords: choose another".into());
    }
    None
}

/// How long a hash waits for its turn before the request is refused (503).
const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Hashes running at once, process-wide: one per core (each holds a core and 19 MiB).
fn permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| tokio::sync::Semaphore::new(concurrency()))
}

fn concurrency() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2)
}

/// Hashes in progress now, and the most seen at once (for tests of the cap).
static RUNNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static MOST_RUNNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs one Argon2 computation on the blocking pool when a permit is free.
async fn with_permit<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    use std::sync::atomic::Ordering;
    let permit = tokio::time::timeout(WAIT, permits().acquire())
        .await
        .map_err(|_| {
            ApiError::new(crate::http::ErrorCode::Unavailable, "the server is busy signing others in: retry shortly")
        })?
        .map_err(ApiError::internal)?;
    let done = tokio::task::spawn_blocking(move || {
        let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
        MOST_RUNNING.fetch_max(now, Ordering::SeqCst);
        let result = work();
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        result
    })
    .await
    .map_err(ApiError::internal);
    drop(permit);
    done
}

/// The Argon2id PHC string of `password`.
pub async fn hash(password: String) -> ApiResult<String> {
    with_permit(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string())
    })
    .await?
    .map_err(ApiError::internal)
}

/// A hash to check against when there is no user, so that an unknown email costs the same.
fn decoy() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(b"decoy password for unknown users", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// Whether `password` matches `stored`; with no stored hash, a check against a decoy (always
/// false) that takes as long as a real one.
pub async fn verify(password: String, stored: Option<String>) -> ApiResult<bool> {
    with_permit(move || {
        let real = stored.is_some();
        let hash = stored.unwrap_or_else(|| decoy().to_string());
        let Ok(parsed) = PasswordHash::new(&hash) else { return false };
        Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok() && real
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_and_short_passwords_are_refused() {
        assert!(weakness("password", 8).is_some());
        assert!(weakness("PassWord", 8).is_some(), "case does not help");
        assert!(weakness("qwertyuiop", 8).is_some());
        assert!(weakness("short", 8).unwrap().contains("at least 8"));
        assert!(weakness("a fine long passphrase", 8).is_none());
        assert!(weakness("twelve chars", 16).is_some());
        assert!(weakness(&"x".repeat(1025), 8).is_some());
        assert!(weakness("        ", 8).is_some());
        assert_eq!(common().len(), 10_000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn hashing_never_runs_wider_than_the_cap() {
        let runs: Vec<_> = (0..4 * concurrency()).map(|i| tokio::spawn(hash(format!("password number {i}")))).collect();
        for run in runs {
            run.await.unwrap().unwrap();
        }
        let most = MOST_RUNNING.load(std::sync::atomic::Ordering::SeqCst);
        assert!(most >= 1 && most <= concurrency(), "{most} hashes ran at once, the cap is {}", concurrency());
    }

    #[tokio::test]
    async fn hashes_verify_only_their_password() {
        let stored = hash("correct horse battery".into()).await.unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(verify("correct horse battery".into(), Some(stored.clone())).await.unwrap());
        assert!(!verify("wrong horse battery".into(), Some(stored)).await.unwrap());
        assert!(!verify("decoy password for unknown users".into(), None).await.unwrap());
    }
}
