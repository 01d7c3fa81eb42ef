//! The api's general rate limits per route group (`RATE_LIMIT_*`), each a
//! `REQUESTS/SECONDS` budget.

use std::str::FromStr;
use std::time::Duration;

use super::ConfigError;
use super::env::Env;

const fn rate(requests: u32, seconds: u64) -> Rate {
    Rate {
        requests,
        per: Duration::from_secs(seconds),
    }
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

impl RateLimitsConfig {
    pub(crate) fn read<F: Fn(&str) -> Option<String>>(
        env: &Env<'_, F>,
    ) -> Result<Self, ConfigError> {
        Ok(RateLimitsConfig {
            auth: env.parsed("RATE_LIMIT_AUTH", rate(30, 60))?,
            submit: env.parsed("RATE_LIMIT_SUBMIT", rate(120, 60))?,
            read: env.parsed("RATE_LIMIT_READ", rate(600, 60))?,
        })
    }
}
