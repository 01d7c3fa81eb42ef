//! Completion webhooks: how the workers deliver them, and which networks they may
//! reach besides the public internet.

use std::time::Duration;

use super::ConfigError;
use super::env::Env;
use crate::webhooks::Cidr;

/// How completion webhooks are delivered: the `webhooks` queue's settings
/// ([`WebhookConfig::queue_settings`]) and the guard's exemptions.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
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

/// An attempt's time beyond the HTTP timeout (reading the request, signing).
pub const ATTEMPT_MARGIN: Duration = Duration::from_secs(5);

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
            retry_base: env.millis_in("WEBHOOK_RETRY_BASE_MS", 5000, 1..=3_600_000)?,
            max_attempts: env.parsed_range("WEBHOOK_MAX_ATTEMPTS", 10, 1..=100)?,
            timeout: env.seconds_in("WEBHOOK_TIMEOUT_SECS", 10, 1..=300)?,
            concurrency: env.parsed_range("WEBHOOK_CONCURRENCY", 16, 1..=1000)?,
            allowed_networks,
        })
    }

    /// The `webhooks` queue as the runtime runs it: the runtime's full-jitter backoff
    /// from `retry_base` up to [`RETRY_CAP`]; an attempt's budget is the HTTP timeout
    /// plus [`ATTEMPT_MARGIN`], so the client's own timeout is what a slow receiver
    /// meets (and what its `last_error` says).
    pub fn queue_settings(&self) -> super::QueueSettings {
        super::QueueSettings {
            concurrency: self.concurrency,
            max_attempts: self.max_attempts,
            retry_base: self.retry_base,
            retry_cap: RETRY_CAP,
            timeout: self.timeout + ATTEMPT_MARGIN,
            lifetime: None,
        }
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
    fn defaults_become_the_webhooks_queue_settings() {
        let config = read(&[("WEBHOOK_TIMEOUT_SECS", "7")]).expect("defaults");
        assert!(config.allowed_networks.is_empty());
        let queue = config.queue_settings();
        assert_eq!(queue.max_attempts, 10);
        assert_eq!(queue.concurrency, 16);
        assert_eq!(queue.retry_base, Duration::from_secs(5));
        assert_eq!(queue.retry_cap, RETRY_CAP);
        assert_eq!(queue.timeout, Duration::from_secs(7) + ATTEMPT_MARGIN);
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
