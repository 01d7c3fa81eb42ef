//! The one typed configuration of Conveyor, read from environment variables (and a
//! `.env` file outside production). Every variable is listed in `.env.example`.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use secrecy::{ExposeSecret, SecretBox, SecretString};

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
}

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

/// Everything the api and the worker read from their environment.
#[derive(Debug)]
pub struct Config {
    pub app_env: AppEnv,
    pub log_format: LogFormat,
    pub database_url: SecretString,
    pub database_max_connections: u32,
    pub redis_url: SecretString,
    /// Prefix of every Redis key Conveyor writes, so deployments (and tests) can share
    /// one Redis without seeing each other.
    pub redis_prefix: String,
    pub api_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub worker_metrics_addr: SocketAddr,
    pub smtp_url: SecretString,
    pub jwt_signing_key: Key256,
    pub jwt_key_id: String,
    pub pii_key: Key256,
    pub pii_key_id: String,
    /// Retired PII keys that still decrypt (`PII_PREVIOUS_KEYS=id:base64,…`).
    pub pii_previous_keys: Vec<(String, [u8; 32])>,
    pub blind_index_key: Key256,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub session_max_lifetime: Duration,
    pub login_window: Duration,
    pub login_max_failures_account_ip: u32,
    pub login_max_failures_account: u32,
    pub login_max_failures_ip: u32,
    /// Take the client address from `X-Forwarded-For` (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    pub auto_migrate: bool,
    /// Per-queue worker settings.
    pub emails: QueueSettings,
    pub uploads: QueueSettings,
    pub scans: QueueSettings,
    /// Messages per second across every worker (0 = unlimited).
    pub emails_per_second: u32,
    /// The sender of every message.
    pub smtp_from: String,
    pub smtp_timeout: Duration,
    pub smtp_pool_size: u32,
    /// A job (and a consumer) without a heartbeat for this long is given to another worker.
    pub job_heartbeat_timeout: Duration,
    /// How often the api's dispatcher looks for jobs to (re)push.
    pub dispatch_interval: Duration,
    /// A job pushed but not claimed for this long is pushed again (Redis lost it).
    pub redelivery_timeout: Duration,
    pub body_limit_bytes: usize,
    /// Body limit of `POST /campaigns` (up to 100,000 recipients).
    pub campaign_body_limit_bytes: usize,
    pub request_timeout: Duration,
    pub health_timeout: Duration,
    pub shutdown_grace: Duration,
    pub cors_allowed_origins: Vec<String>,
    /// Secrets that were generated at start because none was configured (development
    /// and test only); the binaries warn loudly about each.
    pub generated_secrets: Vec<&'static str>,
}

impl Config {
    /// Reads the process environment, after loading `.env` unless the process
    /// environment already says `APP_ENV=production`.
    pub fn from_env() -> Result<Self, ConfigError> {
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
        Self::from_lookup(|name| std::env::var(name).ok())
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

        let jwt_signing_key = env.key256(
            "JWT_SIGNING_KEY",
            app_env,
            "the Ed25519 signing seed, base64 of 32 random bytes: openssl rand -base64 32",
            &mut generated_secrets,
        )?;
        let pii_key = env.key256(
            "PII_KEY",
            app_env,
            "the AES-256-GCM key for PII at rest, base64 of 32 random bytes: openssl rand -base64 32",
            &mut generated_secrets,
        )?;

        let blind_index_key = env.key256(
            "BLIND_INDEX_KEY",
            app_env,
            "the HMAC key of the email blind index, base64 of 32 random bytes: openssl rand -base64 32",
            &mut generated_secrets,
        )?;

        let config = Config {
            app_env,
            log_format: env.parsed("LOG_FORMAT", default_format)?,
            database_url: env.url(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/conveyor",
                &["postgres", "postgresql"],
            )?,
            database_max_connections: env.parsed_range("DATABASE_MAX_CONNECTIONS", 10, 1..=1000)?,
            redis_url: env.url("REDIS_URL", "redis://127.0.0.1:6379", &["redis", "rediss"])?,
            redis_prefix: env.redis_prefix()?,
            api_addr: env.parsed("API_ADDR", socket("127.0.0.1:8080"))?,
            metrics_addr: env.parsed("METRICS_ADDR", socket("127.0.0.1:9100"))?,
            worker_metrics_addr: env.parsed("WORKER_METRICS_ADDR", socket("127.0.0.1:9101"))?,
            smtp_url: env.url("SMTP_URL", "smtp://127.0.0.1:1025", &["smtp", "smtps"])?,
            jwt_signing_key,
            jwt_key_id: env.key_id("JWT_KEY_ID")?,
            pii_key,
            pii_key_id: env.key_id("PII_KEY_ID")?,
            pii_previous_keys: env.previous_keys("PII_PREVIOUS_KEYS")?,
            blind_index_key,
            jwt_issuer: env
                .get("JWT_ISSUER")
                .unwrap_or_else(|| "conveyor".to_owned()),
            jwt_audience: env
                .get("JWT_AUDIENCE")
                .unwrap_or_else(|| "conveyor-api".to_owned()),
            access_token_ttl: env.seconds_in("JWT_ACCESS_TTL_SECS", 900, 60..=86_400)?,
            refresh_token_ttl: env.seconds_in(
                "REFRESH_TOKEN_TTL_SECS",
                14 * 86_400,
                300..=365 * 86_400,
            )?,
            session_max_lifetime: env.seconds_in(
                "SESSION_MAX_LIFETIME_SECS",
                30 * 86_400,
                300..=365 * 86_400,
            )?,
            login_window: env.seconds_in("LOGIN_WINDOW_SECS", 900, 1..=86_400)?,
            login_max_failures_account_ip: env.parsed_range(
                "LOGIN_MAX_FAILURES_ACCOUNT_IP",
                5,
                1..=10_000,
            )?,
            login_max_failures_account: env.parsed_range(
                "LOGIN_MAX_FAILURES_ACCOUNT",
                20,
                1..=100_000,
            )?,
            login_max_failures_ip: env.parsed_range("LOGIN_MAX_FAILURES_IP", 100, 1..=1_000_000)?,
            trust_forwarded_for: env.bool("TRUST_FORWARDED_FOR", false)?,
            auto_migrate: env.bool("AUTO_MIGRATE", !production)?,
            emails: env.queue("EMAILS", 32, 8)?,
            uploads: env.queue("UPLOADS", 4, 5)?,
            scans: env.queue("SCANS", 4, 5)?,
            emails_per_second: env.parsed_range("EMAILS_PER_SECOND", 0, 0..=1_000_000)?,
            smtp_from: env
                .get("SMTP_FROM")
                .unwrap_or_else(|| "Conveyor <no-reply@conveyor.localhost>".to_owned()),
            smtp_timeout: env.seconds_in("SMTP_TIMEOUT_SECS", 30, 1..=600)?,
            smtp_pool_size: env.parsed_range("SMTP_POOL_SIZE", 10, 1..=1000)?,
            job_heartbeat_timeout: Duration::from_millis(env.parsed_range(
                "JOB_HEARTBEAT_TIMEOUT_MS",
                30_000,
                500..=3_600_000,
            )?),
            dispatch_interval: Duration::from_millis(env.parsed_range(
                "DISPATCH_INTERVAL_MS",
                1000,
                10..=60_000,
            )?),
            redelivery_timeout: env.seconds_in("REDELIVERY_TIMEOUT_SECS", 60, 1..=86_400)?,
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
            health_timeout: Duration::from_millis(env.parsed_range(
                "HEALTH_TIMEOUT_MS",
                1000,
                10..=60_000,
            )?),
            shutdown_grace: env.seconds("SHUTDOWN_GRACE_SECS", 30)?,
            cors_allowed_origins: env.origins("CORS_ALLOWED_ORIGINS")?,
            generated_secrets,
        };
        Ok(config)
    }
}

fn socket(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| unreachable!("built-in default address {s}"))
}

struct Env<'a, F: Fn(&str) -> Option<String>> {
    lookup: &'a F,
}

impl<F: Fn(&str) -> Option<String>> Env<'_, F> {
    /// A set, non-blank value.
    fn get(&self, var: &str) -> Option<String> {
        (self.lookup)(var).filter(|v| !v.trim().is_empty())
    }

    fn parsed<T>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|err: T::Err| ConfigError::Invalid {
                    var,
                    reason: err.to_string(),
                }),
        }
    }

    fn parsed_range<T>(
        &self,
        var: &'static str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + std::fmt::Display + Copy,
        T::Err: std::fmt::Display,
    {
        let value = self.parsed(var, default)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::Invalid {
                var,
                reason: format!("{value} is outside {}..={}", range.start(), range.end()),
            })
        }
    }

    fn seconds(&self, var: &'static str, default: u64) -> Result<Duration, ConfigError> {
        self.seconds_in(var, default, 1..=86_400)
    }

    fn seconds_in(
        &self,
        var: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(self.parsed_range(var, default, range)?))
    }

    /// `{PREFIX}_CONCURRENCY`, `{PREFIX}_MAX_ATTEMPTS`, `{PREFIX}_RETRY_BASE_MS`,
    /// `{PREFIX}_RETRY_CAP_MS`.
    fn queue(
        &self,
        prefix: &'static str,
        concurrency: usize,
        attempts: u32,
    ) -> Result<QueueSettings, ConfigError> {
        macro_rules! vars {
            ($($p:literal),*) => {
                match prefix {
                    $($p => [
                        concat!($p, "_CONCURRENCY"),
                        concat!($p, "_MAX_ATTEMPTS"),
                        concat!($p, "_RETRY_BASE_MS"),
                        concat!($p, "_RETRY_CAP_MS"),
                    ],)*
                    _ => unreachable!("queue prefixes are the three above"),
                }
            };
        }
        let [conc, attempts_var, base, cap] = vars!("EMAILS", "UPLOADS", "SCANS");
        Ok(QueueSettings {
            concurrency: self.parsed_range(conc, concurrency, 1..=10_000)?,
            max_attempts: self.parsed_range(attempts_var, attempts, 1..=100)?,
            retry_base: Duration::from_millis(self.parsed_range(base, 1000, 1..=3_600_000)?),
            retry_cap: Duration::from_millis(self.parsed_range(cap, 300_000, 1..=86_400_000)?),
        })
    }

    fn bool(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(var).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if matches!(v.as_str(), "true" | "1" | "yes" | "on") => Ok(true),
            Some(v) if matches!(v.as_str(), "false" | "0" | "no" | "off") => Ok(false),
            Some(v) => Err(ConfigError::Invalid {
                var,
                reason: format!("`{v}` is not a boolean (true/false)"),
            }),
        }
    }

    fn url(
        &self,
        var: &'static str,
        default: &str,
        schemes: &[&str],
    ) -> Result<SecretString, ConfigError> {
        let raw = self.get(var).unwrap_or_else(|| default.to_owned());
        // The parse error is safe to show; the URL itself may hold a password and is not.
        let url = url::Url::parse(raw.trim()).map_err(|err| ConfigError::Invalid {
            var,
            reason: format!("not a URL ({err})"),
        })?;
        if !schemes.contains(&url.scheme()) {
            return Err(ConfigError::Invalid {
                var,
                reason: format!(
                    "scheme `{}` is not one of {}",
                    url.scheme(),
                    schemes.join(", ")
                ),
            });
        }
        Ok(SecretString::from(raw.trim().to_owned()))
    }

    fn key256(
        &self,
        var: &'static str,
        app_env: AppEnv,
        hint: &'static str,
        generated: &mut Vec<&'static str>,
    ) -> Result<Key256, ConfigError> {
        let Some(raw) = self.get(var) else {
            if app_env == AppEnv::Production {
                return Err(ConfigError::MissingSecret { var, hint });
            }
            generated.push(var);
            return Ok(random_key());
        };
        Ok(SecretBox::new(Box::new(decode_key(var, &raw)?)))
    }

    fn previous_keys(&self, var: &'static str) -> Result<Vec<(String, [u8; 32])>, ConfigError> {
        let Some(raw) = self.get(var) else {
            return Ok(Vec::new());
        };
        raw.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let (id, key) = entry.split_once(':').ok_or_else(|| ConfigError::Invalid {
                    var,
                    reason: "entries must look like key_id:base64key".to_owned(),
                })?;
                Ok((id.trim().to_owned(), decode_key(var, key)?))
            })
            .collect()
    }

    fn key_id(&self, var: &'static str) -> Result<String, ConfigError> {
        let id = self.get(var).unwrap_or_else(|| "k1".to_owned());
        let valid = !id.is_empty()
            && id.len() <= 16
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(id)
        } else {
            Err(ConfigError::Invalid {
                var,
                reason: "must be 1 to 16 characters of A-Z, a-z, 0-9, - or _".to_owned(),
            })
        }
    }

    fn redis_prefix(&self) -> Result<String, ConfigError> {
        let prefix = self
            .get("REDIS_PREFIX")
            .unwrap_or_else(|| "conveyor".to_owned());
        let valid = prefix.len() <= 64
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if valid {
            Ok(prefix)
        } else {
            Err(ConfigError::Invalid {
                var: "REDIS_PREFIX",
                reason: "must be at most 64 characters of A-Z, a-z, 0-9, -, _ or .".to_owned(),
            })
        }
    }

    fn origins(&self, var: &'static str) -> Result<Vec<String>, ConfigError> {
        let Some(raw) = self.get(var) else {
            return Ok(Vec::new());
        };
        raw.split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(|origin| {
                let url = url::Url::parse(origin).map_err(|err| ConfigError::Invalid {
                    var,
                    reason: format!("`{origin}` is not an origin ({err})"),
                })?;
                let bare = url.path() == "/" && url.query().is_none() && url.fragment().is_none();
                if !matches!(url.scheme(), "http" | "https")
                    || !bare
                    || !origin.ends_with(|c: char| c != '/')
                {
                    return Err(ConfigError::Invalid {
                        var,
                        reason: format!("`{origin}` must look like https://host[:port]"),
                    });
                }
                Ok(origin.to_owned())
            })
            .collect()
    }
}

fn decode_key(var: &'static str, raw: &str) -> Result<[u8; 32], ConfigError> {
    let bytes = BASE64
        .decode(raw.trim())
        .map_err(|_| ConfigError::Invalid {
            var,
            reason: "not valid base64".to_owned(),
        })?;
    bytes
        .try_into()
        .map_err(|bytes: Vec<u8>| ConfigError::Invalid {
            var,
            reason: format!("decodes to {} bytes, 32 are required", bytes.len()),
        })
}

/// A fresh random key for development; never used in production.
fn random_key() -> Key256 {
    SecretBox::new(Box::new(crate::crypto::random_bytes::<32>()))
}

impl Config {
    /// The database URL, for the pool; never log it.
    pub fn database_url(&self) -> &str {
        self.database_url.expose_secret()
    }

    pub fn redis_url(&self) -> &str {
        self.redis_url.expose_secret()
    }

    pub fn smtp_url(&self) -> &str {
        self.smtp_url.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn defaults_outside_production_generate_secrets_and_migrate() {
        let cfg = config(&[]).expect("defaults are valid");
        assert_eq!(cfg.app_env, AppEnv::Development);
        assert!(cfg.auto_migrate);
        assert_eq!(
            cfg.generated_secrets,
            vec!["JWT_SIGNING_KEY", "PII_KEY", "BLIND_INDEX_KEY"]
        );
        assert_eq!(cfg.access_token_ttl, Duration::from_secs(900));
        assert_eq!(cfg.refresh_token_ttl, Duration::from_secs(14 * 86_400));
        assert_eq!(cfg.api_addr, socket("127.0.0.1:8080"));
        assert_eq!(
            cfg.database_url(),
            "postgres://postgres@127.0.0.1:5432/conveyor"
        );
        assert_eq!(cfg.log_format, LogFormat::Pretty);
    }

    #[test]
    fn production_without_jwt_key_names_the_variable() {
        let err = config(&[
            ("APP_ENV", "production"),
            ("PII_KEY", KEY),
            ("BLIND_INDEX_KEY", KEY),
        ])
        .expect_err("must fail");
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
        let err = config(&[
            ("APP_ENV", "production"),
            ("JWT_SIGNING_KEY", KEY),
            ("BLIND_INDEX_KEY", KEY),
        ])
        .expect_err("must fail");
        assert!(matches!(
            err,
            ConfigError::MissingSecret { var: "PII_KEY", .. }
        ));
    }

    #[test]
    fn production_with_secrets_does_not_auto_migrate_and_logs_json() {
        let cfg = config(&[
            ("APP_ENV", "production"),
            ("JWT_SIGNING_KEY", KEY),
            ("PII_KEY", KEY),
            ("BLIND_INDEX_KEY", KEY),
        ])
        .expect("complete production config");
        assert!(!cfg.auto_migrate);
        assert!(cfg.generated_secrets.is_empty());
        assert_eq!(cfg.log_format, LogFormat::Json);
        assert_eq!(cfg.pii_key.expose_secret()[1], 1);
    }

    #[test]
    fn bad_values_are_refused_with_the_variable_name() {
        let cases: &[(&str, &str)] = &[
            ("APP_ENV", "staging"),
            ("API_ADDR", "localhost"),
            ("AUTO_MIGRATE", "maybe"),
            ("DATABASE_URL", "mysql://x@y/z"),
            ("REDIS_URL", "not a url"),
            ("SMTP_URL", "http://mail"),
            ("PII_KEY", "c2hvcnQ="),
            ("JWT_SIGNING_KEY", "%%%"),
            ("DATABASE_MAX_CONNECTIONS", "0"),
            ("BODY_LIMIT_BYTES", "12abc"),
            ("REDIS_PREFIX", "a b"),
            ("JWT_KEY_ID", "way-too-long-key-identifier"),
            (
                "CORS_ALLOWED_ORIGINS",
                "https://ok.example,https://bad.example/path",
            ),
            ("LOG_FORMAT", "xml"),
            ("PII_PREVIOUS_KEYS", "k0"),
            ("JWT_ACCESS_TTL_SECS", "5"),
            ("TRUST_FORWARDED_FOR", "sometimes"),
        ];
        for (var, value) in cases {
            let err = config(&[(var, value)]).expect_err(var);
            match &err {
                ConfigError::Invalid { var: got, .. } => assert_eq!(got, var),
                other => panic!("{var}: unexpected {other:?}"),
            }
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let cfg = config(&[
            ("DATABASE_URL", "postgres://app:hunter2@db/conveyor"),
            ("PII_KEY", KEY),
        ])
        .expect("valid");
        let debug = format!("{cfg:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains(KEY));
        assert!(debug.contains("REDACTED"));
    }

    #[test]
    fn production_without_blind_index_key_names_the_variable() {
        let err = config(&[
            ("APP_ENV", "production"),
            ("JWT_SIGNING_KEY", KEY),
            ("PII_KEY", KEY),
        ])
        .expect_err("must fail");
        assert!(matches!(
            err,
            ConfigError::MissingSecret {
                var: "BLIND_INDEX_KEY",
                ..
            }
        ));
    }

    #[test]
    fn previous_pii_keys_are_parsed() {
        let cfg = config(&[("PII_PREVIOUS_KEYS", &format!("k0:{KEY}, old:{KEY}"))]).expect("valid");
        let ids: Vec<&str> = cfg
            .pii_previous_keys
            .iter()
            .map(|(id, _)| id.as_str())
            .collect();
        assert_eq!(ids, vec!["k0", "old"]);
        assert_eq!(cfg.pii_previous_keys[0].1[31], 31);
    }

    #[test]
    fn cors_origins_are_split_and_trimmed() {
        let cfg = config(&[(
            "CORS_ALLOWED_ORIGINS",
            " https://a.example , http://localhost:3000",
        )])
        .expect("valid");
        assert_eq!(
            cfg.cors_allowed_origins,
            vec!["https://a.example", "http://localhost:3000"]
        );
    }
}
