//! Periodic jobs: when a schedule ticks ([`Every`]: a fixed interval, or a cron
//! expression in a time zone) and the `chores` queue's payload ([`ChoreJob`]). The
//! workers' scheduler role enqueues a schedule's job once per tick across every worker
//! (`db::schedules`), through the one enqueue path.
//!
//! Missed ticks (every worker down, the schedule paused): when the scheduler next
//! finds the schedule due it enqueues **one** job, for the latest tick that passed,
//! and counts the others as missed; the next tick is the first after now. A chore
//! that runs late runs once, not once per tick it missed.

use std::str::FromStr as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::Job;
use crate::queue::QueueName;

/// When a schedule ticks.
#[derive(Debug, Clone)]
pub enum Every {
    /// Every `n` seconds, at multiples of `n` since the Unix epoch (so every worker
    /// agrees on the ticks).
    Interval(Duration),
    /// A five-field cron expression (minute hour day-of-month month day-of-week),
    /// evaluated in `zone`: `0 3 * * *` in `Europe/Paris` is 03:00 Paris time, across
    /// daylight-saving changes.
    Cron {
        expr: String,
        cron: Box<croner::Cron>,
        zone: chrono_tz::Tz,
    },
}

impl Every {
    /// A cron expression in an IANA time zone (`UTC`, `Europe/Paris`).
    pub fn cron(expr: &str, zone: &str) -> Result<Every, String> {
        let cron = croner::Cron::from_str(expr)
            .map_err(|err| format!("`{expr}` is not a cron expression: {err}"))?;
        let zone: chrono_tz::Tz = zone
            .parse()
            .map_err(|_| format!("`{zone}` is not an IANA time zone"))?;
        Ok(Every::Cron {
            expr: expr.to_owned(),
            cron: Box::new(cron),
            zone,
        })
    }

    /// How it is stored and shown: `every 300s` or `cron 0 3 * * *`.
    pub fn text(&self) -> String {
        match self {
            Every::Interval(every) => format!("every {}s", every.as_secs().max(1)),
            Every::Cron { expr, .. } => format!("cron {expr}"),
        }
    }

    /// The zone cron ticks are computed in (`UTC` for intervals).
    pub fn zone(&self) -> String {
        match self {
            Every::Interval(_) => "UTC".to_owned(),
            Every::Cron { zone, .. } => zone.name().to_owned(),
        }
    }

    /// The first tick strictly after `t`; `None` if there is none (a cron expression
    /// that never matches again).
    pub fn next_after(&self, t: OffsetDateTime) -> Option<OffsetDateTime> {
        match self {
            Every::Interval(every) => {
                let step = i128::from(every.as_secs().max(1)) * 1_000_000_000;
                let now = t.unix_timestamp_nanos();
                let next = (now.div_euclid(step) + 1) * step;
                OffsetDateTime::from_unix_timestamp_nanos(next).ok()
            }
            Every::Cron { cron, zone, .. } => {
                let nanos = t.unix_timestamp_nanos();
                let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
                let sub = u32::try_from(nanos.rem_euclid(1_000_000_000)).ok()?;
                let start = chrono::DateTime::from_timestamp(secs, sub)?.with_timezone(zone);
                let next = cron.find_next_occurrence(&start, false).ok()?;
                OffsetDateTime::from_unix_timestamp(next.timestamp()).ok()
            }
        }
    }
}

/// The periodic maintenance chores, each a schedule of the `chores` queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Chore {
    /// Finished requests past `RETENTION_DAYS` (with their jobs and deliveries),
    /// finished jobs of no request past it, expired idempotency keys, old quota hours.
    PruneRetention,
    /// Accounts that never confirmed their address past `UNVERIFIED_ACCOUNT_TTL_SECS`,
    /// and expired verification links.
    CleanupUnverifiedAccounts,
    /// The sampled gauges: every queue's jobs by state, oldest queued age and live
    /// workers, and recent campaigns' complaints, stored for every worker's `/metrics`
    /// ([`crate::maintenance::sample`]).
    SampleQueues,
}

impl Chore {
    pub const ALL: [Chore; 3] = [
        Chore::PruneRetention,
        Chore::CleanupUnverifiedAccounts,
        Chore::SampleQueues,
    ];

    /// The schedule's name.
    pub fn name(self) -> &'static str {
        match self {
            Chore::PruneRetention => "prune_retention",
            Chore::CleanupUnverifiedAccounts => "cleanup_unverified_accounts",
            Chore::SampleQueues => "sample_queues",
        }
    }
}

/// `chores`: run one chore (the tick it was enqueued for is in its unique key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChoreJob {
    pub chore: Chore,
}

impl Job for ChoreJob {
    const QUEUE: QueueName = QueueName::Chores;
}

/// The unique key of a schedule's job for one tick.
pub fn tick_key(schedule: &str, tick: OffsetDateTime) -> String {
    format!("schedule:{schedule}:{}", tick.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datetime(rfc3339: &str) -> OffsetDateTime {
        OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
            .expect("RFC 3339")
    }

    #[test]
    fn interval_ticks_are_multiples_of_the_interval_strictly_after() {
        let every = Every::Interval(Duration::from_secs(300));
        assert_eq!(
            every.next_after(datetime("2026-12-06T10:02:30Z")),
            Some(datetime("2026-12-06T10:05:00Z"))
        );
        assert_eq!(
            every.next_after(datetime("2026-12-06T10:05:00Z")),
            Some(datetime("2026-12-06T10:10:00Z")),
            "a tick is never its own successor"
        );
        assert_eq!(every.text(), "every 300s");
        assert_eq!(every.zone(), "UTC");
    }

    #[test]
    fn cron_ticks_follow_the_local_time_of_their_zone_across_daylight_saving() {
        let every = Every::cron("0 3 * * *", "Europe/Paris").expect("valid");
        // Winter: Paris is UTC+1.
        assert_eq!(
            every.next_after(datetime("2026-12-06T10:00:00Z")),
            Some(datetime("2026-12-07T02:00:00Z"))
        );
        // Summer: UTC+2.
        assert_eq!(
            every.next_after(datetime("2026-07-01T10:00:00Z")),
            Some(datetime("2026-07-02T01:00:00Z"))
        );
        assert_eq!(every.text(), "cron 0 3 * * *");
        assert_eq!(every.zone(), "Europe/Paris");
    }

    #[test]
    fn bad_expressions_and_zones_are_refused_with_what_is_wrong() {
        assert!(
            Every::cron("61 * * * *", "UTC")
                .expect_err("minute 61")
                .contains("61 * * * *")
        );
        assert!(
            Every::cron("0 3 * * *", "Mars/Olympus")
                .expect_err("zone")
                .contains("Mars/Olympus")
        );
    }

    #[test]
    fn a_tick_s_key_names_the_schedule_and_the_second() {
        assert_eq!(
            tick_key("prune_retention", datetime("2026-12-06T10:05:00Z")),
            "schedule:prune_retention:1796551500"
        );
    }
}
