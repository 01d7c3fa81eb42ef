//! The one typed configuration of Conveyor, read from environment variables (and a
//! `.env` file outside production), in sections: database, redis, http, ops, pii,
//! smtp, queues, pipeline, storage, uploads, scanner, webhooks — and [`AuthConfig`], which only the api reads, so a worker
//! never needs token or blind-index keys. Every variable is in `.env.example`.

mod auth;
pub mod dev_keys;
mod dkim;
mod env;
mod mail;
mod webhooks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretBox, SecretString};

pub use auth::{AuthConfig, LoginLimits};
use dev_keys::DevKeys;
pub use dkim::{DkimAlgorithm, DkimConfig, DkimKey};
use env::Env;
pub use mail::{DEFAULT_DOMAIN_PACE, DomainPace, MailConfig, Pacing};
pub use webhooks::{RETRY_CAP as WEBHOOK_RETRY_CAP, WebhookConfig};

use crate::queue::QueueName;

/// The five variable names of a queue's settings.
/// `EMAIL_QUOTA_<ROLE>_PER_HOUR` and `_PER_DAY`.
macro_rules! quota_vars {
    ($prefix:literal) => {
        (concat!($prefix, "_PER_HOUR"), concat!($prefix, "_PER_DAY"))
    };
}

macro_rules! queue_vars {
    ($q:literal) => {
        [
            concat!($q, "_CONCURRENCY"),
            concat!($q, "_MAX_ATTEMPTS"),
            concat!($q, "_RETRY_BASE_MS"),
            concat!($q, "_RETRY_CAP_MS"),
            concat!($q, "_TIMEOUT_SECS"),
        ]
    };
}

const MIB: u64 = 1024 * 1024;

const fn rate(requests: u32, seconds: u64) -> Rate {
    Rate {
        requests,
        per: Duration::from_secs(seconds),
    }
}

/// Where the process runs. Production refuses to start without real secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Test,
    Production,
}

impl FromStr for AppEnv {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "development" | "dev" => Ok(AppEnv::Development),
            "test" => Ok(AppEnv::Test),
            "production" | "prod" => Ok(AppEnv::Production),
            other => Err(format!(
                "`{other}` is not one of development, test, production"
            )),
        }
    }
}

impl AppEnv {
    pub fn as_str(self) -> &'static str {
        match self {
            AppEnv::Development => "development",
            AppEnv::Test => "test",
            AppEnv::Production => "production",
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "pretty" | "text" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("`{other}` is not one of pretty, json")),
        }
    }
}

/// How one queue's jobs are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// Jobs run at once per worker process.
    pub concurrency: usize,
    pub max_attempts: u32,
    /// Backoff before attempt n+1: a random time in [0, min(cap, base * 2^(n-1))].
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// One attempt running longer is stopped and retried.
    pub timeout: Duration,
}

/// A 256-bit key. `Debug` never shows it.
pub type Key256 = SecretBox<[u8; 32]>;

/// A retired PII key that still decrypts old values. `Debug` shows only its id.
#[derive(Debug)]
pub struct RetiredKey {
    pub id: String,
    pub key: Key256,
}

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

#[derive(Debug)]
pub struct DatabaseConfig {
    pub url: SecretString,
    pub max_connections: u32,
    /// Run pending migrations when the api starts.
    pub auto_migrate: bool,
    /// Whether the worker's commits (claims, outcomes, maintenance) wait for the WAL
    /// flush. Off by default: a PostgreSQL crash may then forget the last moments of
    /// bookkeeping, and those jobs run again (at-least-once); nothing a client
    /// submitted is affected (the api always commits synchronously).
    pub worker_synchronous_commit: bool,
}

#[derive(Debug)]
pub struct RedisConfig {
    pub server: RedisServer,
    /// Prefix of every Redis key Conveyor writes, so deployments (and tests) can share
    /// one Redis without seeing each other.
    pub prefix: String,
}

/// Where Redis is: one server (`REDIS_URL`), or a Redis Cluster reached through its
/// seed nodes (`REDIS_CLUSTER_URLS`, which wins: `REDIS_URL` is then ignored).
#[derive(Debug)]
pub enum RedisServer {
    Single { url: SecretString },
    Cluster { seeds: Vec<SecretString> },
}

/// The public listener and what it accepts.
#[derive(Debug)]
pub struct HttpConfig {
    pub api_addr: SocketAddr,
    pub body_limit_bytes: usize,
    /// Body limit of `POST /campaigns` (up to 100,000 recipients).
    pub campaign_body_limit_bytes: usize,
    pub request_timeout: Duration,
    pub cors_allowed_origins: Vec<String>,
    /// Take the client address from `X-Forwarded-For` (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// Event streams (`GET /requests/{id}/events`) one user may hold open per api
    /// process; past it 429.
    pub sse_max_streams_per_user: usize,
    /// A connection must deliver a complete request head this long after it opens (or
    /// after the first byte of a later request); otherwise it is closed.
    pub header_read_timeout: Duration,
    /// A kept-alive connection with no new request for this long is closed.
    pub idle_timeout: Duration,
    /// Connections the public listener holds open at once; past it, it stops accepting
    /// until one closes. `None`: derived from the open-file limit when serving starts.
    pub max_connections: Option<usize>,
}

/// The operational side of every process: metrics and health listeners, shutdown.
#[derive(Debug)]
pub struct OpsConfig {
    pub metrics_addr: SocketAddr,
    pub worker_metrics_addr: SocketAddr,
    pub health_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// Personal data at rest: the current key and the retired ones that still decrypt.
#[derive(Debug)]
pub struct PiiConfig {
    pub key: Key256,
    pub key_id: String,
    pub previous_keys: Vec<RetiredKey>,
}

impl PiiConfig {
    pub fn cipher(&self) -> crate::crypto::pii::PiiCipher {
        let previous: Vec<(String, [u8; 32])> = self
            .previous_keys
            .iter()
            .map(|k| (k.id.clone(), *k.key.expose_secret()))
            .collect();
        crate::crypto::pii::PiiCipher::new(&self.key_id, self.key.expose_secret(), &previous)
    }
}

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

/// Per-queue worker settings and the liveness rule shared by every queue.
#[derive(Debug)]
pub struct QueuesConfig {
    pub emails: QueueSettings,
    pub uploads: QueueSettings,
    pub scans: QueueSettings,
    pub canary: QueueSettings,
    /// Completion webhook deliveries (the `WEBHOOK_*` variables).
    pub webhooks: QueueSettings,
    /// A job (and a consumer) without a heartbeat for this long is given to another worker.
    pub heartbeat_timeout: Duration,
}

impl QueuesConfig {
    pub fn settings(&self, queue: QueueName) -> QueueSettings {
        match queue {
            QueueName::Emails => self.emails,
            QueueName::Uploads => self.uploads,
            QueueName::Scans => self.scans,
            QueueName::Canary => self.canary,
            QueueName::Webhooks => self.webhooks,
        }
    }
}

/// The outbox dispatcher, the reconciler and retention.
#[derive(Debug)]
pub struct PipelineConfig {
    /// How often the dispatcher looks for jobs to (re)push.
    pub dispatch_interval: Duration,
    /// A job pushed but not claimed for this long is pushed again (Redis lost it).
    pub redelivery_timeout: Duration,
    /// Finished requests (and their jobs) older than this are deleted.
    pub retention: Duration,
    /// How often the pruner runs.
    pub prune_interval: Duration,
    /// How far ahead a submission's `send_at` may be (`SEND_AT_MAX_AHEAD_SECS`).
    pub send_at_max_ahead: Duration,
}

/// A request budget: `requests` per `per`, all of them usable at once (the burst).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub requests: u32,
    pub per: Duration,
}

impl FromStr for Rate {
    type Err = String;

    /// `N/SECONDS`, e.g. `600/60`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("`{s}` is not REQUESTS/SECONDS (e.g. 600/60)");
        let (requests, seconds) = s.trim().split_once('/').ok_or_else(invalid)?;
        let requests: u32 = requests.trim().parse().map_err(|_| invalid())?;
        let seconds: u64 = seconds.trim().parse().map_err(|_| invalid())?;
        if requests == 0 || seconds == 0 || seconds > 86_400 {
            return Err(invalid());
        }
        Ok(Rate {
            requests,
            per: Duration::from_secs(seconds),
        })
    }
}

/// The api's general rate limits, per route group, per authenticated user (else per
/// client address), shared by every api replica through Redis.
#[derive(Debug)]
pub struct RateLimitsConfig {
    /// `/auth/*`: sign-up, sign-in, refresh, 2FA.
    pub auth: Rate,
    /// Submissions: `POST`, `PATCH`, `PUT`, `DELETE` elsewhere.
    pub submit: Rate,
    /// Reads: every other request under `/api/v1`, the spec and the docs.
    pub read: Rate,
}

/// Messages (one per recipient) an account may submit, per sliding hour and day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageQuota {
    pub per_hour: u64,
    pub per_day: u64,
}

/// Self-service accounts: email verification, account emails and message quotas.
#[derive(Debug)]
pub struct AccountsConfig {
    /// How long an email verification link works.
    pub verification_ttl: Duration,
    /// At most one account email (verification link, "someone tried to register")
    /// per address in this interval, so registration cannot flood a mailbox.
    pub account_mail_interval: Duration,
    /// Accounts that never confirmed their address are deleted after this.
    pub unverified_ttl: Duration,
    pub quota_user: MessageQuota,
    pub quota_promoter: MessageQuota,
    pub quota_admin: MessageQuota,
}

impl AccountsConfig {
    pub fn quota(&self, role: crate::domain::Role) -> MessageQuota {
        match role {
            crate::domain::Role::User => self.quota_user,
            crate::domain::Role::Promoter => self.quota_promoter,
            crate::domain::Role::Admin => self.quota_admin,
        }
    }
}

/// Where uploaded objects live: a local directory or S3-compatible object storage.
#[derive(Debug)]
pub struct StorageConfig {
    /// `file:///abs/dir` or `s3://bucket/optional/prefix` (a plain path is made a
    /// `file://` URL against the working directory).
    pub url: String,
    /// How to reach S3 (endpoint, region, keys); used only for `s3://` URLs.
    pub s3: crate::storage::S3Settings,
}

impl StorageConfig {
    /// Opens the storage this names.
    pub fn open(&self) -> Result<crate::storage::Storage, crate::storage::StorageError> {
        crate::storage::Storage::from_url(&self.url, &self.s3)
    }
}

/// What `POST /uploads` accepts.
#[derive(Debug)]
pub struct UploadsConfig {
    /// The hard limit of one file; reading stops the moment it is passed.
    pub max_bytes: u64,
    /// Types decided by magic bytes that are accepted.
    pub allowed_types: Vec<crate::files::FileType>,
    /// Bytes one owner may keep (every upload that is not rejected).
    pub quota_bytes: u64,
    /// Uploads one owner may create per rolling hour.
    pub per_hour: u32,
    /// The deadline of one `POST /uploads` (the body included).
    pub timeout: Duration,
}

/// The `scans` queue's engine (clamd with the rules in `rules/`) and the limits of
/// the structural inspectors.
#[derive(Debug)]
pub struct ScannerConfig {
    /// `host:port` or `unix:/path/to/clamd.ctl`.
    pub clamd_addr: String,
    /// One clamd exchange (connect, stream, verdict) longer than this is an error.
    pub timeout: Duration,
    /// An image whose header declares more pixels is a pixel flood.
    pub max_image_pixels: u64,
    /// Archives nested deeper than this are refused.
    pub archive_max_depth: u32,
    /// Declared uncompressed bytes of an archive past this are a bomb.
    pub archive_max_bytes: u64,
    /// Compression ratio past this (archives over 1 MiB uncompressed) is a bomb.
    pub archive_max_ratio: u64,
    pub archive_max_entries: u64,
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

/// The process environment after `.env`, with unset keys filled from the development
/// keys file outside production.
pub struct EnvSource {
    dev_keys: Option<DevKeys>,
}

impl EnvSource {
    pub fn load() -> Result<Self, ConfigError> {
        let production = std::env::var("APP_ENV")
            .ok()
            .and_then(|v| v.parse::<AppEnv>().ok())
            == Some(AppEnv::Production);
        if !production {
            // A missing .env is normal; a malformed one is worth a warning only.
            if let Err(err) = dotenvy::dotenv()
                && !err.not_found()
            {
                eprintln!("warning: ignoring .env: {err}");
            }
        }
        let app_env = Env {
            lookup: &|name: &str| std::env::var(name).ok(),
        }
        .parsed("APP_ENV", AppEnv::Development)?;
        let unset = |var: &str| std::env::var(var).map_or(true, |v| v.trim().is_empty());
        let dev_keys = if app_env != AppEnv::Production && dev_keys::VARS.iter().any(|v| unset(v)) {
            let path = std::env::var("DEV_KEYS_FILE")
                .ok()
                .filter(|p| !p.trim().is_empty())
                .unwrap_or_else(|| dev_keys::DEFAULT_PATH.to_owned());
            Some(DevKeys::load_or_create(std::path::Path::new(&path))?)
        } else {
            None
        };
        Ok(EnvSource { dev_keys })
    }

    pub fn get(&self, var: &str) -> Option<String> {
        std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .or_else(|| self.dev_keys.as_ref().and_then(|keys| keys.get(var)))
    }

    pub fn dev_keys_file(&self) -> Option<PathBuf> {
        self.dev_keys.as_ref().map(|keys| keys.path.clone())
    }
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
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env { lookup: &lookup };
        let app_env: AppEnv = env.parsed("APP_ENV", AppEnv::Development)?;
        let production = app_env == AppEnv::Production;
        let default_format = if production {
            LogFormat::Json
        } else {
            LogFormat::Pretty
        };
        let mut generated_secrets = Vec::new();
        let pii_key = env.key256(
            "PII_KEY",
            app_env,
            "the AES-256-GCM key for PII at rest, base64 of 32 random bytes: openssl rand -base64 32",
            &mut generated_secrets,
        )?;
        let queue = |vars: [&'static str; 5], defaults| env.queue(vars, defaults);
        let defaults = |concurrency, max_attempts, timeout_secs| QueueSettings {
            concurrency,
            max_attempts,
            retry_base: Duration::from_millis(1000),
            retry_cap: Duration::from_millis(300_000),
            timeout: Duration::from_secs(timeout_secs),
        };
        let webhooks = WebhookConfig::read(&env)?;
        Ok(Config {
            app_env,
            log_format: env.parsed("LOG_FORMAT", default_format)?,
            database: DatabaseConfig {
                url: env.url(
                    "DATABASE_URL",
                    "postgres://postgres@127.0.0.1:5432/conveyor",
                    &["postgres", "postgresql"],
                )?,
                max_connections: env.parsed_range("DATABASE_MAX_CONNECTIONS", 10, 1..=1000)?,
                auto_migrate: env.bool("AUTO_MIGRATE", !production)?,
                worker_synchronous_commit: env.bool("WORKER_SYNCHRONOUS_COMMIT", false)?,
            },
            redis: RedisConfig {
                server: match env.redis_cluster_urls("REDIS_CLUSTER_URLS")? {
                    Some(seeds) => RedisServer::Cluster { seeds },
                    None => RedisServer::Single {
                        url: env.url(
                            "REDIS_URL",
                            "redis://127.0.0.1:6379",
                            &["redis", "rediss"],
                        )?,
                    },
                },
                prefix: env.redis_prefix()?,
            },
            http: HttpConfig {
                api_addr: env.parsed("API_ADDR", socket("127.0.0.1:8080"))?,
                body_limit_bytes: env.parsed_range(
                    "BODY_LIMIT_BYTES",
                    1024 * 1024,
                    1024..=1024 * 1024 * 1024,
                )?,
                campaign_body_limit_bytes: env.parsed_range(
                    "CAMPAIGN_BODY_LIMIT_BYTES",
                    16 * 1024 * 1024,
                    1024..=1024 * 1024 * 1024,
                )?,
                request_timeout: env.seconds("REQUEST_TIMEOUT_SECS", 30)?,
                cors_allowed_origins: env.origins("CORS_ALLOWED_ORIGINS")?,
                trust_forwarded_for: env.bool("TRUST_FORWARDED_FOR", false)?,
                sse_max_streams_per_user: env.parsed_range(
                    "SSE_MAX_STREAMS_PER_USER",
                    10,
                    1..=10_000,
                )?,
                header_read_timeout: env.seconds_in(
                    "HTTP_HEADER_READ_TIMEOUT_SECS",
                    10,
                    1..=3600,
                )?,
                idle_timeout: env.seconds_in("HTTP_IDLE_TIMEOUT_SECS", 60, 1..=86_400)?,
                max_connections: match env.get("HTTP_MAX_CONNECTIONS") {
                    None => None,
                    Some(_) => Some(env.parsed_range("HTTP_MAX_CONNECTIONS", 1, 1..=1_000_000)?),
                },
            },
            ops: OpsConfig {
                metrics_addr: env.parsed("METRICS_ADDR", socket("127.0.0.1:9100"))?,
                worker_metrics_addr: env.parsed("WORKER_METRICS_ADDR", socket("127.0.0.1:9101"))?,
                health_timeout: env.millis_in("HEALTH_TIMEOUT_MS", 1000, 10..=60_000)?,
                shutdown_grace: env.seconds("SHUTDOWN_GRACE_SECS", 30)?,
            },
            pii: PiiConfig {
                key: pii_key,
                key_id: env.key_id("PII_KEY_ID")?,
                previous_keys: env.previous_keys("PII_PREVIOUS_KEYS")?,
            },
            smtp: SmtpConfig {
                url: env.url("SMTP_URL", "smtp://127.0.0.1:1025", &["smtp", "smtps"])?,
                from: env.string("SMTP_FROM", "Conveyor <no-reply@conveyor.localhost>"),
                timeout: env.seconds_in("SMTP_TIMEOUT_SECS", 30, 1..=600)?,
                pool_size: env.parsed_range("SMTP_POOL_SIZE", 32, 1..=1000)?,
                per_second: env.parsed_range("EMAILS_PER_SECOND", 0, 0..=1_000_000)?,
            },
            queues: QueuesConfig {
                emails: queue(queue_vars!("EMAILS"), defaults(32, 8, 120))?,
                uploads: queue(queue_vars!("UPLOADS"), defaults(4, 10, 300))?,
                scans: queue(queue_vars!("SCANS"), defaults(4, 20, 300))?,
                canary: queue(queue_vars!("CANARY"), defaults(50, 3, 30))?,
                webhooks: webhooks.queue_settings(),
                heartbeat_timeout: env.millis_in(
                    "JOB_HEARTBEAT_TIMEOUT_MS",
                    30_000,
                    500..=3_600_000,
                )?,
            },
            pipeline: PipelineConfig {
                dispatch_interval: env.millis_in("DISPATCH_INTERVAL_MS", 1000, 10..=60_000)?,
                redelivery_timeout: env.seconds_in("REDELIVERY_TIMEOUT_SECS", 60, 1..=86_400)?,
                retention: Duration::from_secs(
                    86_400 * env.parsed_range("RETENTION_DAYS", 30u64, 1..=3650)?,
                ),
                prune_interval: env.seconds_in("PRUNE_INTERVAL_SECS", 600, 1..=86_400)?,
                send_at_max_ahead: env.seconds_in(
                    "SEND_AT_MAX_AHEAD_SECS",
                    30 * 86_400,
                    60..=365 * 86_400,
                )?,
            },
            storage: StorageConfig {
                url: env.storage_url("STORAGE_URL", production)?,
                s3: crate::storage::S3Settings {
                    endpoint: env.get("S3_ENDPOINT"),
                    region: env.string("S3_REGION", "us-east-1"),
                    access_key_id: env.get("S3_ACCESS_KEY_ID"),
                    secret_access_key: env.get("S3_SECRET_ACCESS_KEY").map(SecretString::from),
                    allow_http: env.bool("S3_ALLOW_HTTP", false)?,
                    virtual_hosted_style: env.bool("S3_VIRTUAL_HOSTED_STYLE", false)?,
                },
            },
            uploads: UploadsConfig {
                max_bytes: env.parsed_range("UPLOAD_MAX_BYTES", 25 * MIB, 1..=5 * 1024 * MIB)?,
                allowed_types: env
                    .list("UPLOAD_ALLOWED_TYPES", "png,jpeg,gif,webp,pdf,text,csv,zip")?,
                quota_bytes: env.parsed_range(
                    "UPLOAD_QUOTA_BYTES",
                    1024 * MIB,
                    1..=u64::MAX / 2,
                )?,
                per_hour: env.parsed_range("UPLOADS_PER_HOUR", 100, 1..=1_000_000)?,
                timeout: env.seconds_in("UPLOAD_TIMEOUT_SECS", 300, 1..=86_400)?,
            },
            scanner: ScannerConfig {
                clamd_addr: env.string("CLAMD_ADDR", "127.0.0.1:3310"),
                timeout: env.seconds_in("CLAMD_TIMEOUT_SECS", 60, 1..=3600)?,
                max_image_pixels: env.parsed_range(
                    "SCAN_MAX_IMAGE_PIXELS",
                    100_000_000,
                    1..=u64::MAX / 2,
                )?,
                archive_max_depth: env.parsed_range("SCAN_ARCHIVE_MAX_DEPTH", 2, 0..=32)?,
                archive_max_bytes: env.parsed_range(
                    "SCAN_ARCHIVE_MAX_BYTES",
                    512 * MIB,
                    1..=u64::MAX / 2,
                )?,
                archive_max_ratio: env.parsed_range("SCAN_ARCHIVE_MAX_RATIO", 100, 2..=100_000)?,
                archive_max_entries: env.parsed_range(
                    "SCAN_ARCHIVE_MAX_ENTRIES",
                    10_000,
                    1..=10_000_000,
                )?,
            },
            rate_limits: RateLimitsConfig {
                auth: env.parsed("RATE_LIMIT_AUTH", rate(30, 60))?,
                submit: env.parsed("RATE_LIMIT_SUBMIT", rate(120, 60))?,
                read: env.parsed("RATE_LIMIT_READ", rate(600, 60))?,
            },
            accounts: AccountsConfig {
                verification_ttl: env.seconds_in(
                    "EMAIL_VERIFICATION_TTL_SECS",
                    86_400,
                    300..=30 * 86_400,
                )?,
                account_mail_interval: env.seconds_in(
                    "ACCOUNT_MAIL_INTERVAL_SECS",
                    300,
                    0..=86_400,
                )?,
                unverified_ttl: env.seconds_in(
                    "UNVERIFIED_ACCOUNT_TTL_SECS",
                    7 * 86_400,
                    3600..=365 * 86_400,
                )?,
                quota_user: quota(&env, quota_vars!("EMAIL_QUOTA_USER"), 100, 1_000)?,
                quota_promoter: quota(&env, quota_vars!("EMAIL_QUOTA_PROMOTER"), 100_000, 300_000)?,
                quota_admin: quota(&env, quota_vars!("EMAIL_QUOTA_ADMIN"), 100_000, 300_000)?,
            },
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

fn socket(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| unreachable!("built-in default address {s}"))
}

/// `PUBLIC_URL`: an http(s) origin (optionally with a path prefix), without a
/// trailing slash. Outside production it defaults to `http://` + `API_ADDR` (an
/// unspecified address such as 0.0.0.0 becomes 127.0.0.1).
pub(crate) fn public_url<F: Fn(&str) -> Option<String>>(
    env: &Env<'_, F>,
    production: bool,
) -> Result<String, ConfigError> {
    let Some(raw) = env.get("PUBLIC_URL") else {
        if production {
            return Err(ConfigError::MissingSecret {
                var: "PUBLIC_URL",
                hint: "the api's public https origin, for links in account emails and unsubscribe links",
            });
        }
        let mut addr = env.parsed("API_ADDR", socket("127.0.0.1:8080"))?;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        return Ok(format!("http://{addr}"));
    };
    let url = raw.trim().trim_end_matches('/');
    let host = url.split_once("://").map_or("", |(_, rest)| rest);
    let loopback = ["localhost", "127.0.0.1", "[::1]"].iter().any(|name| {
        host.strip_prefix(name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
    });
    // Plain http only where nothing crosses a network: outside production, or loopback.
    let scheme_ok =
        url.starts_with("https://") || (url.starts_with("http://") && (!production || loopback));
    if !scheme_ok || host.is_empty() || url.contains(['?', '#', ' ', '"', '<', '>']) {
        return Err(ConfigError::Invalid {
            var: "PUBLIC_URL",
            reason: "must be an https:// origin (http:// only outside production or on \
                     localhost), e.g. https://api.example.com, without query or fragment"
                .into(),
        });
    }
    Ok(url.to_owned())
}

/// A role's quota from its `_PER_HOUR` and `_PER_DAY` variables.
fn quota<F: Fn(&str) -> Option<String>>(
    env: &Env<'_, F>,
    (hour_var, day_var): (&'static str, &'static str),
    per_hour: u64,
    per_day: u64,
) -> Result<MessageQuota, ConfigError> {
    Ok(MessageQuota {
        per_hour: env.parsed_range(hour_var, per_hour, 1..=1_000_000_000)?,
        per_day: env.parsed_range(day_var, per_day, 1..=1_000_000_000)?,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn map(vars: &[(&str, &str)]) -> HashMap<String, String> {
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map = map(vars);
        Config::from_lookup(|k| map.get(k).cloned())
    }

    fn auth(vars: &[(&str, &str)]) -> Result<AuthConfig, ConfigError> {
        let map = map(vars);
        AuthConfig::from_lookup(|k| map.get(k).cloned())
    }

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn defaults_outside_production_generate_secrets_and_migrate() {
        let cfg = config(&[]).expect("defaults are valid");
        assert_eq!(cfg.app_env, AppEnv::Development);
        assert!(cfg.database.auto_migrate);
        assert_eq!(cfg.generated_secrets, vec!["PII_KEY", "BLIND_INDEX_KEY"]);
        assert_eq!(cfg.http.api_addr, socket("127.0.0.1:8080"));
        assert_eq!(
            cfg.database_url(),
            "postgres://postgres@127.0.0.1:5432/conveyor"
        );
        assert_eq!(cfg.log_format, LogFormat::Pretty);
        assert_eq!(cfg.queues.emails.concurrency, 32);
        assert_eq!(cfg.queues.settings(QueueName::Canary).max_attempts, 3);
        let auth = auth(&[]).expect("defaults are valid");
        assert_eq!(
            auth.generated_secrets,
            vec!["JWT_SIGNING_KEY", "BLIND_INDEX_KEY"]
        );
        assert_eq!(auth.access_token_ttl, Duration::from_secs(900));
        assert_eq!(auth.refresh_token_ttl, Duration::from_secs(14 * 86_400));
    }

    #[test]
    fn production_without_jwt_key_names_the_variable() {
        let err =
            auth(&[("APP_ENV", "production"), ("BLIND_INDEX_KEY", KEY)]).expect_err("must fail");
        assert!(matches!(
            err,
            ConfigError::MissingSecret {
                var: "JWT_SIGNING_KEY",
                ..
            }
        ));
        let line = err.to_string();
        assert!(
            line.starts_with("JWT_SIGNING_KEY is required when APP_ENV=production"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn production_without_pii_key_names_the_variable() {
        let err = config(&[("APP_ENV", "production")]).expect_err("must fail");
        assert!(matches!(
            err,
            ConfigError::MissingSecret { var: "PII_KEY", .. }
        ));
    }

    #[test]
    fn a_production_worker_needs_no_token_key() {
        let base = [("APP_ENV", "production"), ("PII_KEY", KEY)];
        // The suppression list's index and the unsubscribe links' origin.
        let err = config(&base).expect_err("no public url");
        assert!(matches!(
            err,
            ConfigError::MissingSecret {
                var: "PUBLIC_URL",
                ..
            }
        ));
        let mut vars = base.to_vec();
        vars.push(("PUBLIC_URL", "https://api.example.com"));
        let err = config(&vars).expect_err("no blind index key");
        assert!(matches!(
            err,
            ConfigError::MissingSecret {
                var: "BLIND_INDEX_KEY",
                ..
            }
        ));
        vars.push(("BLIND_INDEX_KEY", KEY));
        let cfg = config(&vars).expect("the worker's configuration is complete without auth keys");
        assert_eq!(cfg.mail.public_url, "https://api.example.com");
        assert!(!cfg.database.auto_migrate);
        assert!(cfg.generated_secrets.is_empty());
        assert_eq!(cfg.log_format, LogFormat::Json);
        assert_eq!(cfg.pii.key.expose_secret()[1], 1);
    }

    #[test]
    fn production_without_blind_index_key_names_the_variable() {
        let err =
            auth(&[("APP_ENV", "production"), ("JWT_SIGNING_KEY", KEY)]).expect_err("must fail");
        assert!(matches!(
            err,
            ConfigError::MissingSecret {
                var: "BLIND_INDEX_KEY",
                ..
            }
        ));
    }

    #[test]
    fn quotas_are_per_role_and_public_url_defaults_to_the_api_address() {
        let cfg = config(&[("EMAIL_QUOTA_PROMOTER_PER_HOUR", "7")]).expect("valid");
        assert_eq!(
            cfg.accounts.quota(crate::domain::Role::User),
            MessageQuota {
                per_hour: 100,
                per_day: 1000
            }
        );
        assert_eq!(
            cfg.accounts.quota(crate::domain::Role::Promoter).per_hour,
            7
        );
        let url = |vars: &[(&str, &str)]| {
            let map = map(vars);
            let env = Env {
                lookup: &|k: &str| map.get(k).cloned(),
            };
            let production = map.get("APP_ENV").is_some_and(|v| v == "production");
            public_url(&env, production)
        };
        assert_eq!(url(&[]).expect("default"), "http://127.0.0.1:8080");
        assert_eq!(
            url(&[("API_ADDR", "0.0.0.0:9000")]).expect("unspecified"),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            url(&[
                ("APP_ENV", "production"),
                ("PUBLIC_URL", "https://api.example.com/")
            ])
            .expect("https"),
            "https://api.example.com"
        );
        assert!(
            url(&[
                ("APP_ENV", "production"),
                ("PUBLIC_URL", "http://localhost:8080")
            ])
            .is_ok(),
            "plain http on loopback"
        );
        for bad in [
            "http://api.example.com",
            "http://localhost.example.com",
            "ftp://x",
            "https://",
            "https://a.example/?x=1",
        ] {
            assert!(
                url(&[("APP_ENV", "production"), ("PUBLIC_URL", bad)]).is_err(),
                "{bad}"
            );
        }
        assert!(matches!(
            url(&[("APP_ENV", "production")]),
            Err(ConfigError::MissingSecret {
                var: "PUBLIC_URL",
                ..
            })
        ));
    }

    #[test]
    fn bad_values_are_refused_with_the_variable_name() {
        let cases: &[(&str, &str)] = &[
            ("APP_ENV", "staging"),
            ("API_ADDR", "localhost"),
            ("AUTO_MIGRATE", "maybe"),
            ("DATABASE_URL", "mysql://x@y/z"),
            ("REDIS_URL", "not a url"),
            ("REDIS_CLUSTER_URLS", "redis://127.0.0.1:7101,not a url"),
            ("REDIS_CLUSTER_URLS", "http://127.0.0.1:7101"),
            (
                "REDIS_CLUSTER_URLS",
                "redis://127.0.0.1:7101,,redis://127.0.0.1:7102",
            ),
            ("REDIS_CLUSTER_URLS", "redis://127.0.0.1:7101/2"),
            (
                "REDIS_CLUSTER_URLS",
                "redis://127.0.0.1:7101,rediss://127.0.0.1:7102",
            ),
            ("SMTP_URL", "http://mail"),
            ("PII_KEY", "c2hvcnQ="),
            ("DATABASE_MAX_CONNECTIONS", "0"),
            ("BODY_LIMIT_BYTES", "12abc"),
            ("REDIS_PREFIX", "a b"),
            ("PII_KEY_ID", "way-too-long-key-identifier"),
            (
                "CORS_ALLOWED_ORIGINS",
                "https://ok.example,https://bad.example/path",
            ),
            ("LOG_FORMAT", "xml"),
            ("PII_PREVIOUS_KEYS", "k0"),
            ("TRUST_FORWARDED_FOR", "sometimes"),
            ("CANARY_TIMEOUT_SECS", "0"),
            ("EMAILS_CONCURRENCY", "0"),
            ("RETENTION_DAYS", "0"),
            ("EMAIL_QUOTA_USER_PER_HOUR", "0"),
            ("EMAIL_QUOTA_PROMOTER_PER_DAY", "lots"),
            ("UNVERIFIED_ACCOUNT_TTL_SECS", "60"),
        ];
        for (var, value) in cases {
            let err = config(&[(var, value)]).expect_err(var);
            match &err {
                ConfigError::Invalid { var: got, .. } => assert_eq!(got, var),
                other => panic!("{var}: unexpected {other:?}"),
            }
            assert!(err.to_string().starts_with(var), "{err}");
        }
        let auth_cases: &[(&str, &str)] = &[
            ("JWT_SIGNING_KEY", "%%%"),
            ("JWT_KEY_ID", "way-too-long-key-identifier"),
            ("JWT_ACCESS_TTL_SECS", "5"),
            ("LOGIN_MAX_FAILURES_IP", "0"),
        ];
        for (var, value) in auth_cases {
            let err = auth(&[(var, value)]).expect_err(var);
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }

    #[test]
    fn debug_output_redacts_every_secret_including_retired_keys() {
        const OLD: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
        let cfg = config(&[
            ("DATABASE_URL", "postgres://app:hunter2@db/conveyor"),
            ("REDIS_URL", "redis://:s3cret@cache:6379"),
            ("SMTP_URL", "smtps://mailer:pa55word@smtp.example:465"),
            ("PII_KEY", KEY),
            ("PII_PREVIOUS_KEYS", &format!("k0:{OLD}")),
        ])
        .expect("valid");
        let debug = format!("{cfg:?}");
        for secret in ["hunter2", "s3cret", "pa55word", KEY, OLD] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        // Raw key bytes would show as a list of numbers.
        assert!(!debug.contains("[0, 1, 2, 3"), "{debug}");
        assert!(!debug.contains("32, 33, 34"), "{debug}");
        assert!(debug.contains("REDACTED"));
        let auth = format!(
            "{:?}",
            auth(&[("JWT_SIGNING_KEY", KEY), ("BLIND_INDEX_KEY", KEY)]).expect("valid")
        );
        assert!(
            !auth.contains(KEY) && !auth.contains("[0, 1, 2, 3"),
            "{auth}"
        );
    }

    #[test]
    fn previous_pii_keys_are_parsed() {
        let cfg = config(&[("PII_PREVIOUS_KEYS", &format!("k0:{KEY}, old:{KEY}"))]).expect("valid");
        let ids: Vec<&str> = cfg
            .pii
            .previous_keys
            .iter()
            .map(|k| k.id.as_str())
            .collect();
        assert_eq!(ids, vec!["k0", "old"]);
        assert_eq!(cfg.pii.previous_keys[0].key.expose_secret()[31], 31);
    }

    #[test]
    fn redis_cluster_urls_win_over_redis_url() {
        let cfg = config(&[]).expect("defaults are valid");
        assert!(
            matches!(&cfg.redis.server, RedisServer::Single { url } if url.expose_secret() == "redis://127.0.0.1:6379")
        );
        let cfg = config(&[
            ("REDIS_URL", "not a url, and ignored"),
            (
                "REDIS_CLUSTER_URLS",
                " redis://127.0.0.1:7101, redis://:s3cret@127.0.0.1:7102/0 ",
            ),
        ])
        .expect("valid");
        let RedisServer::Cluster { seeds } = &cfg.redis.server else {
            panic!("cluster mode: {:?}", cfg.redis.server);
        };
        let seeds: Vec<&str> = seeds.iter().map(|s| s.expose_secret()).collect();
        assert_eq!(
            seeds,
            ["redis://127.0.0.1:7101", "redis://:s3cret@127.0.0.1:7102/0"]
        );
        assert!(!format!("{cfg:?}").contains("s3cret"));
        let err = config(&[("REDIS_CLUSTER_URLS", "redis://:s3cret@127.0.0.1:7101/3")])
            .expect_err("a database other than 0");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn cors_origins_are_split_and_trimmed() {
        let cfg = config(&[(
            "CORS_ALLOWED_ORIGINS",
            " https://a.example , http://localhost:3000",
        )])
        .expect("valid");
        assert_eq!(
            cfg.http.cors_allowed_origins,
            vec!["https://a.example", "http://localhost:3000"]
        );
    }
}
