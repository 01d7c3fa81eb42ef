//! The job queues: each queue's concurrency, attempts, backoff and timeout, and the
//! heartbeat timeout shared by every queue.

use std::time::Duration;

use super::ConfigError;
use super::env::Env;
use crate::queue::QueueName;

/// The five variable names of a queue's settings.
macro_rules! queue_vars {
    ($q:literal) => {
        [
            concat!($q, "_CONCURRENCY"),
            concat!($q, "_MAX_ATTEMPTS"),
            concat!($q, "_RETRY_BASE_MS"),
            concat!($q, "_RETRY_CAP_MS"),
            concat!($q, "_TIMEOUT_SECS"),
            concat!($q, "_RETRY_LIFETIME_SECS"),
        ]
    };
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
    /// One attempt running longer is stopped and retried.
    pub timeout: Duration,
    /// Transient failures are retried only while the job is younger than this
    /// (`{QUEUE}_RETRY_LIFETIME_SECS`), like a mail server's queue lifetime; `None`:
    /// `max_attempts` alone bounds them.
    pub lifetime: Option<Duration>,
}

/// Per-queue worker settings and the liveness rule shared by every queue.
#[derive(Debug)]
pub struct QueuesConfig {
    pub emails: QueueSettings,
    pub uploads: QueueSettings,
    pub scans: QueueSettings,
    pub canary: QueueSettings,
    /// Completion webhook deliveries (the `WEBHOOK_*` variables).
    pub webhooks: QueueSettings,
    /// Operators' bulk operations: few at once, each long (it works through its scope
    /// in chunks and resumes from its progress when retried).
    pub operations: QueueSettings,
    /// Periodic maintenance chores, enqueued by the scheduler.
    pub chores: QueueSettings,
    /// A job (and a consumer) without a heartbeat for this long is given to another worker.
    pub heartbeat_timeout: Duration,
}

impl QueuesConfig {
    pub fn settings(&self, queue: QueueName) -> QueueSettings {
        match queue {
            QueueName::Emails => self.emails,
            QueueName::Uploads => self.uploads,
            QueueName::Scans => self.scans,
            QueueName::Canary => self.canary,
            QueueName::Webhooks => self.webhooks,
            QueueName::Operations => self.operations,
            QueueName::Chores => self.chores,
        }
    }

    /// `webhooks`: the `webhooks` queue, as `WebhookConfig` reads it.
    pub(crate) fn read<F: Fn(&str) -> Option<String>>(
        env: &Env<'_, F>,
        webhooks: QueueSettings,
    ) -> Result<Self, ConfigError> {
        let queue = |vars: [&'static str; 6], defaults| env.queue(vars, defaults);
        let defaults = |concurrency, max_attempts, timeout_secs| QueueSettings {
            concurrency,
            max_attempts,
            retry_base: Duration::from_millis(1000),
            retry_cap: Duration::from_millis(300_000),
            timeout: Duration::from_secs(timeout_secs),
            lifetime: None,
        };
        // Mail is retried like a mail server retries it: for a day, backing off to
        // 15 minutes between attempts, so a relay outage of hours costs no message.
        let mail = QueueSettings {
            retry_cap: Duration::from_secs(900),
            lifetime: Some(Duration::from_secs(86_400)),
            ..defaults(32, 500, 120)
        };
        Ok(QueuesConfig {
            emails: queue(queue_vars!("EMAILS"), mail)?,
            uploads: queue(queue_vars!("UPLOADS"), defaults(4, 10, 300))?,
            scans: queue(queue_vars!("SCANS"), defaults(4, 20, 300))?,
            canary: queue(queue_vars!("CANARY"), defaults(50, 3, 30))?,
            webhooks,
            operations: queue(queue_vars!("OPERATIONS"), defaults(2, 5, 3600))?,
            chores: queue(queue_vars!("CHORES"), defaults(2, 3, 3600))?,
            heartbeat_timeout: env.millis_in("JOB_HEARTBEAT_TIMEOUT_MS", 6_000, 500..=3_600_000)?,
        })
    }
}
