//! Process-wide settings: where the process runs (`APP_ENV`) and how it logs
//! (`LOG_FORMAT`).

use std::str::FromStr;

use super::ConfigError;
use super::env::Env;

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

    /// `APP_ENV`, development when unset.
    pub(crate) fn read<F: Fn(&str) -> Option<String>>(
        env: &Env<'_, F>,
    ) -> Result<Self, ConfigError> {
        env.parsed("APP_ENV", AppEnv::Development)
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

impl LogFormat {
    /// `LOG_FORMAT`: JSON by default in production, pretty elsewhere.
    pub(crate) fn read<F: Fn(&str) -> Option<String>>(
        env: &Env<'_, F>,
        production: bool,
    ) -> Result<Self, ConfigError> {
        let default_format = if production {
            LogFormat::Json
        } else {
            LogFormat::Pretty
        };
        env.parsed("LOG_FORMAT", default_format)
    }
}
