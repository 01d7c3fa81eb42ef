//! Message quotas: how many messages (one per recipient) an account may submit per
//! sliding hour and per sliding day, by role (`EMAIL_QUOTA_<ROLE>_PER_HOUR|_PER_DAY`).
//!
//! Usage is kept in PostgreSQL, per owner and clock hour (`message_quota_usage`, an
//! unlogged table: see `shared::db::quotas`), checked and charged in one statement
//! just before the submission is inserted and given back if that insert fails: a
//! refused submission writes nothing, an idempotent replay is never charged, and the
//! row lock on the owner's current hour serialises that owner's concurrent charges so
//! a burst cannot overrun the quota. A window's usage is the sum of its
//! whole hours plus the part of the oldest hour still inside it (the sliding-window
//! counter), so the answer never jumps at an hour boundary by more than that hour's
//! share. Over quota: 429 `message_quota_exceeded` with `Retry-After` — when the same
//! submission would fit if nothing else were sent. A submission larger than a whole
//! quota can never fit: 422.

use std::collections::HashMap;
use std::time::Duration;

use shared::config::MessageQuota;
use shared::db::quotas::{self, QuotaLimit};
use shared::domain::Role;
use uuid::Uuid;

use crate::error::ApiError;

const HOUR: i64 = 3600;
/// Retry-After is searched in steps of this many seconds.
const STEP: i64 = 30;

/// What a submission costs, and whose quota pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaCharge {
    pub role: Role,
    pub messages: u64,
}

impl QuotaCharge {
    pub fn new(role: Role, messages: usize) -> Self {
        QuotaCharge {
            role,
            messages: u64::try_from(messages).unwrap_or(u64::MAX),
        }
    }
}

impl QuotaCharge {
    /// What [`quotas::charge`] checks and charges, or 422 when the submission is larger
    /// than a whole quota (it could never fit).
    pub fn limit(self, quota: MessageQuota) -> Result<QuotaLimit, ApiError> {
        if self.messages > quota.per_hour.min(quota.per_day) {
            return Err(ApiError::Unprocessable {
                detail: format!(
                    "{} messages are more than the {} role may send in an hour ({}) or a day ({}); \
                     split the submission",
                    self.messages,
                    self.role.as_str(),
                    quota.per_hour,
                    quota.per_day
                ),
                errors: Vec::new(),
            });
        }
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Ok(QuotaLimit {
            messages: clamp(self.messages),
            per_hour: clamp(quota.per_hour),
            per_day: clamp(quota.per_day),
        })
    }
}

/// The answer to a submission the quota refused: 429 `message_quota_exceeded` with
/// `Retry-After`, when the same charge would fit were nothing else sent.
pub async fn refused(
    db: impl sqlx::PgExecutor<'_>,
    owner: Uuid,
    charge: QuotaCharge,
    quota: MessageQuota,
) -> ApiError {
    metrics::counter!(
        shared::telemetry::metric::MESSAGE_QUOTA_REFUSED_TOTAL,
        "role" => charge.role.as_str()
    )
    .increment(1);
    let wait = match quotas::recent_usage(db, owner).await {
        Ok((rows, now)) => {
            let mut usage: HashMap<i64, i64> = rows.into_iter().collect();
            // As if charged: the refusal wrote nothing.
            #[allow(clippy::cast_possible_truncation)]
            let current = (now.floor() as i64).div_euclid(HOUR) * HOUR;
            *usage.entry(current).or_default() +=
                i64::try_from(charge.messages).unwrap_or(i64::MAX);
            // Usage may have fallen since the statement (an hour ended): retry at once.
            retry_after(&usage, now, quota).unwrap_or(Duration::from_secs(1))
        }
        Err(err) => {
            tracing::warn!(error = %err, "quota usage unreadable; Retry-After is a guess");
            Duration::from_secs(STEP.unsigned_abs())
        }
    };
    ApiError::MessageQuotaExceeded {
        detail: format!(
            "{} more messages would pass the {} role's quota of {} per hour and {} per day; \
             retry in {} s",
            charge.messages,
            charge.role.as_str(),
            quota.per_hour,
            quota.per_day,
            wait.as_secs().max(1)
        ),
        retry_after: wait,
    }
}

/// Messages counted at `at` (unix seconds) in a window of `hours` whole hours.
fn used(usage: &HashMap<i64, i64>, at: f64, hours: i64) -> f64 {
    #[allow(clippy::cast_possible_truncation)]
    let at_secs = at.floor() as i64;
    let current = at_secs.div_euclid(HOUR) * HOUR;
    let into_hour = (at - current as f64) / HOUR as f64;
    let bucket = |k: i64| usage.get(&(current - k * HOUR)).copied().unwrap_or(0) as f64;
    let whole: f64 = (0..hours).map(bucket).sum();
    whole + bucket(hours) * (1.0 - into_hour)
}

/// `None` if the usage (the new charge included) is within `quota` at `now`; else
/// how long until it would be, were nothing else sent.
fn retry_after(usage: &HashMap<i64, i64>, now: f64, quota: MessageQuota) -> Option<Duration> {
    let fits = |at: f64| {
        used(usage, at, 1) <= quota.per_hour as f64 && used(usage, at, 24) <= quota.per_day as f64
    };
    if fits(now) {
        return None;
    }
    // Usage only falls as time passes; after 25 hours every bucket has left the window.
    let wait = (1..=(25 * HOUR / STEP))
        .map(|step| step * STEP)
        .find(|&secs| fits(now + secs as f64))
        .unwrap_or(25 * HOUR);
    Some(Duration::from_secs(u64::try_from(wait).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUOTA: MessageQuota = MessageQuota {
        per_hour: 100,
        per_day: 1000,
    };

    fn usage(buckets: &[(i64, i64)]) -> HashMap<i64, i64> {
        buckets.iter().copied().collect()
    }

    #[test]
    fn within_both_windows_is_allowed() {
        let now = 10.0 * HOUR as f64 + 600.0;
        let u = usage(&[(10 * HOUR, 60), (9 * HOUR, 40)]);
        // 60 + 40 × (1 − 1/6) ≈ 93.3 ≤ 100
        assert_eq!(retry_after(&u, now, QUOTA), None);
    }

    #[test]
    fn the_previous_hour_weighs_what_is_left_of_it_in_the_window() {
        let now = 10.0 * HOUR as f64 + 600.0;
        let u = usage(&[(10 * HOUR, 60), (9 * HOUR, 60)]);
        // 60 + 60 × 5/6 = 110 > 100: fits once 60 × (1 − f) ≤ 40, f ≥ 1/3 (20 min in).
        let wait = retry_after(&u, now, QUOTA).expect("over the hourly quota");
        assert!(
            (590..=630).contains(&wait.as_secs()),
            "wait {wait:?} should be about 600 s"
        );
    }

    #[test]
    fn a_full_current_hour_waits_for_the_next_hour_and_its_decay() {
        let now = 10.0 * HOUR as f64;
        let u = usage(&[(10 * HOUR, 101)]);
        // In the next hour 101 × (1 − f) ≤ 100 needs f ≥ 1/101: just past the boundary.
        let wait = retry_after(&u, now, QUOTA).expect("over");
        assert!(
            (HOUR as u64..=HOUR as u64 + 60).contains(&wait.as_secs()),
            "{wait:?}"
        );
    }

    #[test]
    fn the_daily_window_counts_24_hours() {
        let now = 30.0 * HOUR as f64;
        let buckets: Vec<(i64, i64)> = (7..=30).map(|h| (h * HOUR, 42)).collect();
        // 24 × 42 = 1008 > 1000, although every hour is far below 100.
        let u = usage(&buckets);
        let wait = retry_after(&u, now, QUOTA).expect("over the daily quota");
        // Hour 7 starts to leave the window when hour 31 begins; once 8 of its 42
        // messages are out (8/42 of an hour, 686 s) the day fits: about 4,286 s.
        assert!((4260..=4320).contains(&wait.as_secs()), "{wait:?}");
        let older = usage(&(6..=29).map(|h| (h * HOUR, 41)).collect::<Vec<_>>());
        assert_eq!(retry_after(&older, now, QUOTA), None, "24 × 41 = 984 fits");
    }
}
