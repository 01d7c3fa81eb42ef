//! The api's authentication settings: token signing, the email blind index, session
//! lifetimes, login throttling and the bound on password hashing. Only the api reads
//! them; a worker never needs these keys.

use std::path::PathBuf;
use std::time::Duration;

use super::env::Env;
use super::{AppEnv, ConfigError, EnvSource, Key256};

/// Login throttling: failures counted in a fixed window.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    pub window: Duration,
    pub max_failures_account_ip: u32,
    /// Applies only to addresses the account has not signed in from lately.
    pub max_failures_account: u32,
    pub max_failures_ip: u32,
    /// How long an address that signed in to an account stays exempt from that
    /// account's limit.
    pub known_address_ttl: Duration,
    /// Wrong second factors (TOTP or recovery codes) and wrong current passwords one
    /// account may get in `window`, across every route that checks one.
    pub max_factor_failures: u32,
}

#[derive(Debug)]
pub struct AuthConfig {
    pub jwt_signing_key: Key256,
    pub jwt_key_id: String,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub session_max_lifetime: Duration,
    pub blind_index_key: Key256,
    pub login: LoginLimits,
    /// argon2id runs (19 MiB each) at once in this process.
    pub password_hash_concurrency: usize,
    /// How long a login or registration waits for a hashing slot before 429.
    pub password_hash_wait: Duration,
    /// The api's public origin (`https://api.example.com`), for links in account
    /// emails (`PUBLIC_URL`). Required in production; elsewhere derived from `API_ADDR`.
    pub public_url: String,
    pub dev_keys_file: Option<PathBuf>,
    /// Keys made for this process alone (configurations built from a map).
    pub generated_secrets: Vec<&'static str>,
}

impl AuthConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let source = EnvSource::load()?;
        let mut config = Self::from_lookup(|name| source.get(name))?;
        config.dev_keys_file = source.dev_keys_file();
        Ok(config)
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env { lookup: &lookup };
        let app_env: AppEnv = env.parsed("APP_ENV", AppEnv::Development)?;
        let mut generated_secrets = Vec::new();
        let jwt_signing_key = env.key256(
            "JWT_SIGNING_KEY",
            app_env,
            "the Ed25519 signing seed, base64 of 32 random bytes: openssl rand -base64 32",
            &mut generated_secrets,
        )?;
        let blind_index_key = env.key256(
            "BLIND_INDEX_KEY",
            app_env,
            "the HMAC key of the email blind index, base64 of 32 random bytes: openssl rand -base64 32",
            &mut generated_secrets,
        )?;
        Ok(AuthConfig {
            jwt_signing_key,
            jwt_key_id: env.key_id("JWT_KEY_ID")?,
            jwt_issuer: env.string("JWT_ISSUER", "conveyor"),
            jwt_audience: env.string("JWT_AUDIENCE", "conveyor-api"),
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
            blind_index_key,
            login: LoginLimits {
                window: env.seconds_in("LOGIN_WINDOW_SECS", 900, 1..=86_400)?,
                max_failures_account_ip: env.parsed_range(
                    "LOGIN_MAX_FAILURES_ACCOUNT_IP",
                    5,
                    1..=10_000,
                )?,
                max_failures_account: env.parsed_range(
                    "LOGIN_MAX_FAILURES_ACCOUNT",
                    20,
                    1..=100_000,
                )?,
                max_failures_ip: env.parsed_range("LOGIN_MAX_FAILURES_IP", 100, 1..=1_000_000)?,
                known_address_ttl: env.seconds_in(
                    "LOGIN_KNOWN_ADDRESS_TTL_SECS",
                    30 * 86_400,
                    60..=365 * 86_400,
                )?,
                max_factor_failures: env.parsed_range(
                    "SECOND_FACTOR_MAX_FAILURES",
                    10,
                    1..=10_000,
                )?,
            },
            password_hash_concurrency: env.parsed_range("PASSWORD_HASH_CONCURRENCY", 4, 1..=256)?,
            password_hash_wait: env.millis_in("PASSWORD_HASH_WAIT_MS", 2_000, 0..=30_000)?,
            public_url: super::public_url(&env, app_env == AppEnv::Production)?,
            dev_keys_file: None,
            generated_secrets,
        })
    }
}
