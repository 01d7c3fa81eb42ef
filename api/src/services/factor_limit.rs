//! One counter per account of wrong second factors and wrong current passwords, across
//! every route that checks one: `/auth/login/mfa`, `/auth/2fa/enable`,
//! `/auth/2fa/disable` and `/auth/password`. A fresh MFA token (from a new password
//! login) no longer buys five more guesses: past `SECOND_FACTOR_MAX_FAILURES` in
//! `LOGIN_WINDOW_SECS` every such check is refused (429 with `Retry-After`) until the
//! window ends. Like the login throttle, an attempt is counted before it is checked
//! (atomic under a burst, see [`super::attempts`]) and given back when it was right or never
//! judged. Redis unreachable: refused with 503 — a second factor is never checked
//! unthrottled (the MFA login needs Redis anyway).

use std::future::Future;
use std::time::Duration;

use shared::redis::Redis;
use uuid::Uuid;

use super::attempts::{Attempts, Reserved};
use crate::error::ApiError;

#[derive(Debug, Clone)]
pub struct FactorLimit {
    attempts: Attempts,
    max_failures: u32,
}

impl FactorLimit {
    pub fn new(redis: Redis, window: Duration, max_failures: u32) -> Self {
        FactorLimit {
            attempts: Attempts::new(redis, window),
            max_failures,
        }
    }

    fn key(&self, account: Uuid) -> String {
        self.attempts.key(&format!("factor-fail:{account}"))
    }

    /// Runs `check` (true: the factor or password was right) under the account's
    /// counter: refused without running it past the limit.
    pub async fn guard<F, Fut>(&self, account: Uuid, check: F) -> Result<bool, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<bool, ApiError>>,
    {
        let key = self.key(account);
        let reserved = self
            .attempts
            .reserve(&[(&key, self.max_failures)], None)
            .await
            .map_err(|err| {
                tracing::warn!(error = %err, "second-factor limit unavailable: Redis");
                ApiError::DependencyUnavailable("redis")
            })?;
        if let Reserved::Refused { retry_after } = reserved {
            return Err(ApiError::RateLimited(retry_after));
        }
        let outcome = check().await;
        if !matches!(outcome, Ok(false)) {
            // Right, or never judged (an error): not a failure.
            if let Err(err) = self.attempts.give_back(&[&key]).await {
                tracing::warn!(error = %err, "cannot give a second-factor attempt back");
            }
        }
        outcome
    }
}
