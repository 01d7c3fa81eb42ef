//! The SMTP section: the relay every message goes through, its sender, pool and the
//! global send rate.

use std::time::Duration;

use secrecy::SecretString;

use super::ConfigError;
use super::env::Env;

#[derive(Debug)]
pub struct SmtpConfig {
    pub url: SecretString,
    /// The sender of every message.
    pub from: String,
    pub timeout: Duration,
    /// Connections a worker keeps open to the SMTP server at most (sends beyond wait).
    pub pool_size: u32,
    /// Messages per second across every worker (0 = unlimited).
    pub per_second: u32,
}

impl SmtpConfig {
    pub(crate) fn read<F: Fn(&str) -> Option<String>>(
        env: &Env<'_, F>,
    ) -> Result<Self, ConfigError> {
        Ok(SmtpConfig {
            url: env.url("SMTP_URL", "smtp://127.0.0.1:1025", &["smtp", "smtps"])?,
            from: env.string("SMTP_FROM", "Conveyor <no-reply@conveyor.localhost>"),
            timeout: env.seconds_in("SMTP_TIMEOUT_SECS", 30, 1..=600)?,
            pool_size: env.parsed_range("SMTP_POOL_SIZE", 32, 1..=1000)?,
            per_second: env.parsed_range("EMAILS_PER_SECOND", 0, 0..=1_000_000)?,
        })
    }
}
