//! Sending like a real sender, read by the api and the worker alike: the public
//! origin unsubscribe links point at, the key of the suppression list's blind index,
//! the token inbound bounce and complaint reports must carry, and the pace each
//! recipient domain is sent at.

use std::collections::HashMap;
use std::time::Duration;

use secrecy::SecretString;

use super::env::Env;
use super::{AppEnv, ConfigError, Key256};

/// How fast one recipient domain is sent to, across every worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainPace {
    /// Messages per second (all workers together); 0 = unlimited.
    pub per_second: u32,
    /// Sends in flight at once, per worker process (SMTP transactions open); 0 =
    /// unlimited.
    pub connections: u32,
}

impl std::str::FromStr for DomainPace {
    type Err = String;

    /// `RATE` or `RATE:CONNECTIONS`, e.g. `50:10`.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let (rate, connections) = raw.split_once(':').unwrap_or((raw, "0"));
        let number = |text: &str, what: &str| {
            text.trim()
                .parse::<u32>()
                .map_err(|_| format!("`{raw}`: the {what} is not a whole number"))
        };
        Ok(DomainPace {
            per_second: number(rate, "rate")?,
            connections: number(connections, "connection limit")?,
        })
    }
}

/// The large mailbox providers' domains and a pace well inside what they accept from
/// one sender (`EMAIL_DOMAIN_PACE` overrides or adds domains).
pub const DEFAULT_DOMAIN_PACE: &str = "gmail.com=100:20,googlemail.com=100:20,\
yahoo.com=50:10,ymail.com=50:10,aol.com=50:10,outlook.com=50:10,hotmail.com=50:10,\
live.com=50:10,msn.com=50:10,icloud.com=20:5,me.com=20:5,mac.com=20:5,gmx.com=20:5,\
gmx.de=20:5,web.de=20:5,mail.ru=20:5,yandex.ru=20:5";

#[derive(Debug)]
pub struct MailConfig {
    /// The api's public origin (`PUBLIC_URL`): one-click unsubscribe links in
    /// campaign mail point at it.
    pub public_url: String,
    /// The HMAC key of the suppression list's blind index (`BLIND_INDEX_KEY`, the key
    /// of the account email index).
    pub index_key: Key256,
    /// `Authorization: Bearer` of `POST /api/v1/inbound/reports`; unset = the endpoint
    /// answers 404.
    pub inbound_token: Option<SecretString>,
    pub pacing: Pacing,
    /// The most bytes of a message's attachments together (`ATTACHMENTS_MAX_BYTES`).
    pub attachments_max_bytes: u64,
}

/// How fast each recipient domain is sent to.
#[derive(Debug, Clone)]
pub struct Pacing {
    /// Per recipient domain (lowercase); domains not listed use `default_pace`.
    pub domain_pace: HashMap<String, DomainPace>,
    pub default_pace: DomainPace,
    /// The first pause of a domain after a 4xx deferral; doubled on each further one
    /// while it lasts, up to `backoff_cap`.
    pub backoff: Duration,
    pub backoff_cap: Duration,
}

impl Pacing {
    /// The pace of `domain` (lowercase).
    pub fn pace_of(&self, domain: &str) -> DomainPace {
        self.domain_pace
            .get(domain)
            .copied()
            .unwrap_or(self.default_pace)
    }
}

impl MailConfig {
    pub(crate) fn from_env<F: Fn(&str) -> Option<String>>(
        env: &Env<'_, F>,
        app_env: AppEnv,
        generated_secrets: &mut Vec<&'static str>,
    ) -> Result<Self, ConfigError> {
        let mut domain_pace = pace_list("EMAIL_DOMAIN_PACE", DEFAULT_DOMAIN_PACE)?;
        if let Some(raw) = env.get("EMAIL_DOMAIN_PACE") {
            domain_pace.extend(pace_list("EMAIL_DOMAIN_PACE", &raw)?);
        }
        let default_pace = env
            .string("EMAIL_DOMAIN_DEFAULT_PACE", "0:0")
            .parse()
            .map_err(|reason| ConfigError::Invalid {
                var: "EMAIL_DOMAIN_DEFAULT_PACE",
                reason,
            })?;
        Ok(MailConfig {
            public_url: super::public_url(env, app_env == AppEnv::Production)?,
            index_key: env.key256(
                "BLIND_INDEX_KEY",
                app_env,
                "the HMAC key of the email blind index, base64 of 32 random bytes: openssl rand -base64 32",
                generated_secrets,
            )?,
            inbound_token: env.get("INBOUND_REPORTS_TOKEN").map(SecretString::from),
            pacing: Pacing {
                domain_pace,
                default_pace,
                backoff: env.seconds_in("EMAIL_DOMAIN_BACKOFF_SECS", 30, 1..=3600)?,
                backoff_cap: env.seconds_in("EMAIL_DOMAIN_BACKOFF_CAP_SECS", 900, 1..=86_400)?,
            },
            attachments_max_bytes: env.parsed_range(
                "ATTACHMENTS_MAX_BYTES",
                10 * super::MIB,
                1..=100 * super::MIB,
            )?,
        })
    }
}

/// `domain=RATE[:CONNECTIONS],…`
fn pace_list(var: &'static str, raw: &str) -> Result<HashMap<String, DomainPace>, ConfigError> {
    raw.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (domain, pace) = item.split_once('=').ok_or_else(|| ConfigError::Invalid {
                var,
                reason: format!("`{item}` is not domain=RATE[:CONNECTIONS]"),
            })?;
            let domain = domain.trim().to_ascii_lowercase();
            if domain.is_empty() || domain.contains(['@', ' ']) {
                return Err(ConfigError::Invalid {
                    var,
                    reason: format!("`{domain}` is not a domain"),
                });
            }
            let pace = pace
                .parse()
                .map_err(|reason| ConfigError::Invalid { var, reason })?;
            Ok((domain, pace))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_parse_with_and_without_a_connection_limit() {
        assert_eq!(
            "50:10".parse::<DomainPace>(),
            Ok(DomainPace {
                per_second: 50,
                connections: 10
            })
        );
        assert_eq!(
            "7".parse::<DomainPace>(),
            Ok(DomainPace {
                per_second: 7,
                connections: 0
            })
        );
        assert!("fast".parse::<DomainPace>().is_err());
        let list = pace_list("X", DEFAULT_DOMAIN_PACE).expect("the defaults parse");
        assert_eq!(list["gmail.com"].per_second, 100);
        assert!(pace_list("X", "gmail.com").is_err());
        assert!(pace_list("X", "a@b=1").is_err());
    }
}
