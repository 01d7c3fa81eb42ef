//! Session epochs: one Redis value per user that is replaced whenever something the
//! per-request session check reads changes — a session of the user revoked (logout,
//! refresh-token reuse, password change, role change), the email confirmed, the
//! account deleted. The api caches the outcome of that check in process under the
//! epoch it read in the same round trip as the rate limit; an entry whose epoch is
//! no longer the current one is never used, so a revocation is in force on every api
//! replica by the time the request that made it answers.
//!
//! Epochs are random values, not counters: if Redis loses the key (a restart, an
//! eviction, its expiry) the next reader sets a new random one, which no cached
//! entry holds. The value is set by the first reader that finds none (`SET … NX`, in
//! the rate limiter's script) and replaced by [`bump`] after the change commits.

use std::time::Duration;

use uuid::Uuid;

use crate::redis::{Redis, hash_tag};

/// How long an epoch lives in Redis without being replaced (a reader then makes a
/// new one and the user's cached checks are re-read once).
pub const TTL: Duration = Duration::from_secs(3600);

/// `{user:<id>}`: the hash tag of every per-user key read together with the epoch
/// (the rate limiter's), so one script can read both on a Redis Cluster.
pub fn user_tag(user: Uuid) -> String {
    hash_tag(&format!("user:{user}"))
}

/// The epoch's key.
pub fn key(redis: &Redis, user: Uuid) -> String {
    redis.key(&format!("session-epoch:{}", user_tag(user)))
}

/// A new epoch value: random, never zero.
pub fn fresh() -> u64 {
    let (high, low) = Uuid::new_v4().as_u64_pair();
    (high ^ low).max(1)
}

/// Replaces the epochs of `users` after a change to their sessions, role,
/// verification or existence has committed. A failure (Redis unreachable) is logged:
/// cached checks then last at most the api's cache lifetime (30 seconds).
pub async fn bump(redis: &Redis, users: &[Uuid]) {
    let mut conn = redis.connection();
    for user in users {
        let set: redis::RedisResult<()> = redis::cmd("SET")
            .arg(key(redis, *user))
            .arg(fresh())
            .arg("EX")
            .arg(TTL.as_secs())
            .query_async(&mut conn)
            .await;
        if let Err(err) = set {
            tracing::error!(
                user_id = %user, error = %err,
                "cannot replace the session epoch: cached session checks of this user may \
                 last until they expire"
            );
        }
    }
}
