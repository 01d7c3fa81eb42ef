//! The one typed configuration of Conveyor, read from environment variables (and a
//! `.env` file outside production), in sections: database, redis, http, ops, pii,
//! smtp, queues, pipeline, storage, uploads, scanner, webhooks — and [`AuthConfig`], which only the api reads, so a worker
//! never needs token or blind-index keys. Every variable is in `.env.example`.

mod accounts;
mod app;
mod auth;
mod database;
pub mod dev_keys;
mod dkim;
mod env;
mod http;
mod mail;
mod ops;
mod pii;
mod pipeline;
mod queues;
mod rate_limits;
mod redis;
mod scanner;
mod smtp;
mod source;
mod storage;
mod uploads;
mod webhooks;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretBox};

pub use accounts::{AccountsConfig, MessageQuota};
pub use app::{AppEnv, LogFormat};
pub use auth::{AuthConfig, LoginLimits};
pub use database::DatabaseConfig;
pub use dkim::{DkimAlgorithm, DkimConfig, DkimKey};
use env::Env;
pub use http::HttpConfig;
pub(crate) use http::public_url;
pub use mail::{DEFAULT_DOMAIN_PACE, DomainPace, MailConfig, Pacing};
pub use ops::OpsConfig;
pub use pii::{PiiConfig, RetiredKey};
pub use pipeline::PipelineConfig;
pub use queues::{QueueSettings, QueuesConfig};
pub use rate_limits::{Rate, RateLimitsConfig};
pub use redis::{RedisConfig, RedisServer};
pub use scanner::ScannerConfig;
pub use smtp::SmtpConfig;
pub use source::EnvSource;
pub use storage::StorageConfig;
pub use uploads::UploadsConfig;
pub use webhooks::{RETRY_CAP as WEBHOOK_RETRY_CAP, WebhookConfig};

const MIB: u64 = 1024 * 1024;

/// A 256-bit key. `Debug` never shows it.
pub type Key256 = SecretBox<[u8; 32]>;

/// A configuration problem, reported as one line naming the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{var} is required when APP_ENV=production ({hint})")]
    MissingSecret {
        var: &'static str,
        hint: &'static str,
    },
    #[error("{var} is invalid: {reason}")]
    Invalid { var: &'static str, reason: String },
}

/// Everything the api and the worker read from their environment (the api also reads
/// [`AuthConfig`]).
#[derive(Debug)]
pub struct Config {
    pub app_env: AppEnv,
    pub log_format: LogFormat,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub http: HttpConfig,
    pub ops: OpsConfig,
    pub pii: PiiConfig,
    pub smtp: SmtpConfig,
    pub queues: QueuesConfig,
    pub pipeline: PipelineConfig,
    pub storage: StorageConfig,
    pub uploads: UploadsConfig,
    pub scanner: ScannerConfig,
    pub rate_limits: RateLimitsConfig,
    pub accounts: AccountsConfig,
    pub mail: MailConfig,
    /// DKIM signing of outgoing mail; `None`: not signed.
    pub dkim: Option<DkimConfig>,
    pub webhooks: WebhookConfig,
    /// The development keys file unset keys came from, if any (the binaries warn).
    pub dev_keys_file: Option<PathBuf>,
    /// Keys generated for this process alone because none was configured (only
    /// configurations built from a map); the binaries warn loudly about each.
    pub generated_secrets: Vec<&'static str>,
}

impl Config {
    /// Reads the process environment (see [`EnvSource`]).
    pub fn from_env() -> Result<Self, ConfigError> {
        let source = EnvSource::load()?;
        let mut config = Self::from_lookup(|name| source.get(name))?;
        config.dev_keys_file = source.dev_keys_file();
        Ok(config)
    }

    /// Builds a config from any variable source (tests pass a map).
    ///
    /// The sections are read in this order and the first error wins, so the order is
    /// part of what a misconfigured start reports: `APP_ENV`, then `PII_KEY`, then
    /// each section as the fields follow.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env { lookup: &lookup };
        let app_env = AppEnv::read(&env)?;
        let production = app_env == AppEnv::Production;
        let mut generated_secrets = Vec::new();
        let pii_key = PiiConfig::read_key(&env, app_env, &mut generated_secrets)?;
        // First: the `webhooks` queue's settings come from it.
        let webhooks = WebhookConfig::read(&env)?;
        Ok(Config {
            app_env,
            log_format: LogFormat::read(&env, production)?,
            database: DatabaseConfig::read(&env, production)?,
            redis: RedisConfig::read(&env)?,
            http: HttpConfig::read(&env, production)?,
            ops: OpsConfig::read(&env)?,
            pii: PiiConfig::read(&env, pii_key)?,
            smtp: SmtpConfig::read(&env)?,
            queues: QueuesConfig::read(&env, webhooks.queue_settings())?,
            pipeline: PipelineConfig::read(&env)?,
            storage: StorageConfig::read(&env, production)?,
            uploads: UploadsConfig::read(&env)?,
            scanner: ScannerConfig::read(&env)?,
            rate_limits: RateLimitsConfig::read(&env)?,
            accounts: AccountsConfig::read(&env)?,
            mail: MailConfig::from_env(&env, app_env, &mut generated_secrets)?,
            dkim: DkimConfig::from_lookup(&lookup)?,
            webhooks,
            dev_keys_file: None,
            generated_secrets,
        })
    }

    /// The suppression list's keys: its blind index and the PII cipher.
    pub fn address_keys(&self) -> crate::suppression::AddressKeys {
        use secrecy::ExposeSecret as _;
        crate::suppression::AddressKeys {
            index: crate::crypto::pii::BlindIndex::new(self.mail.index_key.expose_secret()),
            cipher: self.pii.cipher(),
        }
    }

    /// The database URL, for the pool; never log it.
    pub fn database_url(&self) -> &str {
        self.database.url.expose_secret()
    }

    pub fn smtp_url(&self) -> &str {
        self.smtp.url.expose_secret()
    }

    /// Logs, loudly, where keys came from when they were not configured.
    pub fn warn_about_keys(&self, generated: &[&'static str]) {
        if let Some(path) = &self.dev_keys_file {
            tracing::warn!(
                file = %path.display(),
                "keys that are not set come from the development keys file {}; every process \
                 started here shares them. Never run production like this.",
                path.display()
            );
        }
        for var in self.generated_secrets.iter().chain(generated) {
            tracing::warn!(
                variable = var,
                "{var} is not set: using a random key for this process only. Tokens and \
                 encrypted data will not survive a restart. Never run production like this."
            );
        }
    }
}
