//! Where [`Config::from_env`](super::Config::from_env) and `AuthConfig::from_env` read
//! from: the process environment after `.env`, and the development keys file.

use std::path::PathBuf;

use super::dev_keys::{self, DevKeys};
use super::env::Env;
use super::{AppEnv, ConfigError};

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
