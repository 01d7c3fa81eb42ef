//! Self-service accounts: email verification, account emails, the deletion of
//! unconfirmed accounts and each role's message quota.

use std::time::Duration;

use super::ConfigError;
use super::env::Env;

/// `EMAIL_QUOTA_<ROLE>_PER_HOUR` and `_PER_DAY`.
macro_rules! quota_vars {
    ($prefix:literal) => {
        (concat!($prefix, "_PER_HOUR"), concat!($prefix, "_PER_DAY"))
    };
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

    pub(crate) fn read<F: Fn(&str) -> Option<String>>(
        env: &Env<'_, F>,
    ) -> Result<Self, ConfigError> {
        Ok(AccountsConfig {
            verification_ttl: env.seconds_in(
                "EMAIL_VERIFICATION_TTL_SECS",
                86_400,
                300..=30 * 86_400,
            )?,
            account_mail_interval: env.seconds_in("ACCOUNT_MAIL_INTERVAL_SECS", 300, 0..=86_400)?,
            unverified_ttl: env.seconds_in(
                "UNVERIFIED_ACCOUNT_TTL_SECS",
                7 * 86_400,
                3600..=365 * 86_400,
            )?,
            quota_user: quota(env, quota_vars!("EMAIL_QUOTA_USER"), 100, 1_000)?,
            quota_promoter: quota(env, quota_vars!("EMAIL_QUOTA_PROMOTER"), 100_000, 300_000)?,
            quota_admin: quota(env, quota_vars!("EMAIL_QUOTA_ADMIN"), 100_000, 300_000)?,
        })
    }
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
