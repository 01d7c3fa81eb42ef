//! Completion webhooks: how the workers deliver them, and which networks they may
//! reach besides the public internet.

use std::time::Duration;

use super::ConfigError;
use super::env::Env;
use crate::webhooks::Cidr;

/// How completion webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The fallback poll for due deliveries (a notification wakes the workers at once).
    pub poll_interval: Duration,
    /// Backoff before attempt n+1: `retry_base * 2^(n-1)`, at most [`RETRY_CAP`].
    pub retry_base: Duration,
    /// Attempts before a delivery is `dead`.
    pub max_attempts: u32,
    /// One attempt (connect, send, answer) longer than this fails and is retried.
    pub timeout: Duration,
    /// Deliveries one worker process makes at once.
    pub concurrency: usize,
    /// Networks exempted from the address rules (loopback, private, link-local, …).
    pub allowed_networks: Vec<Cidr>,
}

/// The longest wait between two attempts.
pub const RETRY_CAP: Duration = Duration::from_secs(3600);

impl WebhookConfig {
    pub(crate) fn read<F: Fn(&str) -> Option<String>>(
        env: &Env<'_, F>,
    ) -> Result<Self, ConfigError> {
        let allowed_networks = env
            .get("WEBHOOK_ALLOWED_NETWORKS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.parse().map_err(|reason| ConfigError::Invalid {
                    var: "WEBHOOK_ALLOWED_NETWORKS",
                    reason,
                })
            })
            .collect::<Result<Vec<Cidr>, _>>()?;
        Ok(WebhookConfig {
            poll_interval: env.millis_in("WEBHOOK_POLL_INTERVAL_MS", 1000, 10..=600_000)?,
            retry_base: env.millis_in("WEBHOOK_RETRY_BASE_MS", 5000, 1..=3_600_000)?,
            max_attempts: env.parsed_range("WEBHOOK_MAX_ATTEMPTS", 10, 1..=100)?,
            timeout: env.seconds_in("WEBHOOK_TIMEOUT_SECS", 10, 1..=300)?,
            concurrency: env.parsed_range("WEBHOOK_CONCURRENCY", 16, 1..=1000)?,
            allowed_networks,
        })
    }

    /// The wait before the attempt after `attempts` failed ones.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(31);
        self.retry_base
            .saturating_mul(1u32 << doublings)
            .min(RETRY_CAP)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<WebhookConfig, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let lookup = |key: &str| vars.get(key).cloned();
        WebhookConfig::read(&Env { lookup: &lookup })
    }

    #[test]
    fn defaults_and_backoff_doubling_to_the_cap() {
        let config = read(&[]).expect("defaults");
        assert!(config.allowed_networks.is_empty());
        assert_eq!(config.max_attempts, 10);
        assert_eq!(config.backoff(1), Duration::from_secs(5));
        assert_eq!(config.backoff(2), Duration::from_secs(10));
        assert_eq!(config.backoff(4), Duration::from_secs(40));
        assert_eq!(config.backoff(30), RETRY_CAP);
    }

    #[test]
    fn allowed_networks_are_cidrs() {
        let config = read(&[(
            "WEBHOOK_ALLOWED_NETWORKS",
            "127.0.0.1/32, 10.0.0.0/8,::1/128",
        )])
        .expect("valid");
        assert_eq!(config.allowed_networks.len(), 3);
        assert!(read(&[("WEBHOOK_ALLOWED_NETWORKS", "10.0.0.0/33")]).is_err());
        assert!(read(&[("WEBHOOK_ALLOWED_NETWORKS", "example.org")]).is_err());
    }
}
