//! One counter per account of wrong second factors and wrong current passwords, across
//! every route that checks one: `/auth/login/mfa`, `/auth/2fa/enable`,
//! `/auth/2fa/disable` and `/auth/password`. A fresh MFA token (from a new password
//! login) no longer buys five more guesses: past `SECOND_FACTOR_MAX_FAILURES` in
//! `LOGIN_WINDOW_SECS` every such check is refused (429 with `Retry-After`) until the
//! window ends. Like the login throttle, an attempt is counted before it is checked
//! (one Lua script, atomic under a burst) and given back when it was right or never
//! judged. Redis unreachable: refused with 503 — a second factor is never checked
//! unthrottled (the MFA login needs Redis anyway).

use std::future::Future;
use std::time::Duration;

use redis::Script;
use shared::redis::Redis;
use uuid::Uuid;

use crate::error::ApiError;

/// KEYS[1]: the account's counter. ARGV: window (s), limit. `{1}` when counted,
/// `{0, ttl}` when the limit is reached (nothing is counted then).
const RESERVE: &str = r"
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count >= tonumber(ARGV[2]) then
  local ttl = redis.call('TTL', KEYS[1])
  if ttl < 1 then ttl = tonumber(ARGV[1]) end
  return {0, ttl}
end
if redis.call('INCR', KEYS[1]) == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return {1, 0}
";

/// Gives a counted attempt back (never below zero).
const RELEASE: &str = r"
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count > 0 then redis.call('DECR', KEYS[1]) end
return 1
";

#[derive(Debug, Clone)]
pub struct FactorLimit {
    redis: Redis,
    window: Duration,
    max_failures: u32,
}

impl FactorLimit {
    pub fn new(redis: Redis, window: Duration, max_failures: u32) -> Self {
        FactorLimit {
            redis,
            window,
            max_failures,
        }
    }

    fn key(&self, account: Uuid) -> String {
        self.redis.key(&format!("factor-fail:{account}"))
    }

    /// Runs `check` (true: the factor or password was right) under the account's
    /// counter: refused without running it past the limit.
    pub async fn guard<F, Fut>(&self, account: Uuid, check: F) -> Result<bool, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<bool, ApiError>>,
    {
        let key = self.key(account);
        let mut conn = self.redis.connection();
        let (counted, ttl): (i64, i64) = Script::new(RESERVE)
            .key(&key)
            .arg(self.window.as_secs())
            .arg(self.max_failures)
            .invoke_async(&mut conn)
            .await
            .map(|reply: Vec<i64>| {
                (
                    reply.first().copied().unwrap_or(0),
                    reply.get(1).copied().unwrap_or(0),
                )
            })
            .map_err(|err| {
                tracing::warn!(error = %err, "second-factor limit unavailable: Redis");
                ApiError::DependencyUnavailable("redis")
            })?;
        if counted != 1 {
            return Err(ApiError::RateLimited(Duration::from_secs(
                u64::try_from(ttl).unwrap_or(1).max(1),
            )));
        }
        let outcome = check().await;
        if !matches!(outcome, Ok(false)) {
            // Right, or never judged (an error): not a failure.
            let released: Result<i64, _> =
                Script::new(RELEASE).key(&key).invoke_async(&mut conn).await;
            if let Err(err) = released {
                tracing::warn!(error = %err, "cannot give a second-factor attempt back");
            }
        }
        outcome
    }
}
