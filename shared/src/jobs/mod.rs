//! Job payloads shared by the api (which writes them) and the worker (which runs
//! them), and the retry policy.

pub mod email;
pub mod files;

use std::time::Duration;

use crate::config::QueueSettings;

/// Exponential backoff with full jitter before attempt `attempt + 1`, given that
/// `attempt` (1-based) just failed: a uniformly random delay in
/// `[0, min(cap, base * 2^(attempt-1))]`.
pub fn backoff(settings: &QueueSettings, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let ceiling = settings
        .retry_base
        .saturating_mul(1u32 << exponent)
        .min(settings.retry_cap);
    let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    let random = u64::from_le_bytes(crate::crypto::random_bytes::<8>());
    Duration::from_millis(random % (ceiling_ms + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_the_growing_ceiling_and_the_cap() {
        let settings = QueueSettings {
            concurrency: 1,
            max_attempts: 10,
            retry_base: Duration::from_millis(100),
            retry_cap: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
        };
        for attempt in 1..=10u32 {
            let ceiling =
                Duration::from_millis(100 * 2u64.pow(attempt - 1)).min(Duration::from_secs(2));
            for _ in 0..200 {
                assert!(backoff(&settings, attempt) <= ceiling, "attempt {attempt}");
            }
        }
        // Full jitter really spreads: 200 draws at the cap are not all equal.
        let draws: std::collections::BTreeSet<Duration> =
            (0..200).map(|_| backoff(&settings, 10)).collect();
        assert!(draws.len() > 50);
    }
}
