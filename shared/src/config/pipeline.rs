//! The pipeline around the queues: the outbox dispatcher, the reconciler, retention
//! and how far ahead a send may be scheduled.

use std::time::Duration;

use super::ConfigError;
use super::env::Env;

/// The outbox dispatcher, the reconciler and retention.
#[derive(Debug)]
pub struct PipelineConfig {
    /// How often the dispatcher looks for jobs to (re)push.
    pub dispatch_interval: Duration,
    /// A job pushed but not claimed for this long is pushed again (Redis lost it).
    pub redelivery_timeout: Duration,
    /// Finished requests (and their jobs) older than this are deleted.
    pub retention: Duration,
    /// How often the retention chores are scheduled (`prune_retention`,
    /// `cleanup_unverified_accounts`).
    pub prune_interval: Duration,
    /// Whether this worker runs the scheduler role (`SCHEDULER_ENABLED`, default on;
    /// off in the test harness, whose tests tick schedulers themselves).
    pub scheduler: bool,
    /// How far ahead a submission's `send_at` may be (`SEND_AT_MAX_AHEAD_SECS`).
    pub send_at_max_ahead: Duration,
}

impl PipelineConfig {
    pub(crate) fn read<F: Fn(&str) -> Option<String>>(
        env: &Env<'_, F>,
    ) -> Result<Self, ConfigError> {
        Ok(PipelineConfig {
            dispatch_interval: env.millis_in("DISPATCH_INTERVAL_MS", 1000, 10..=60_000)?,
            redelivery_timeout: env.seconds_in("REDELIVERY_TIMEOUT_SECS", 60, 1..=86_400)?,
            retention: Duration::from_secs(
                86_400 * env.parsed_range("RETENTION_DAYS", 30u64, 1..=3650)?,
            ),
            prune_interval: env.seconds_in("PRUNE_INTERVAL_SECS", 600, 1..=86_400)?,
            scheduler: env.bool("SCHEDULER_ENABLED", true)?,
            send_at_max_ahead: env.seconds_in(
                "SEND_AT_MAX_AHEAD_SECS",
                30 * 86_400,
                60..=365 * 86_400,
            )?,
        })
    }
}
