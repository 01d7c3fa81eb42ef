//! Jobs: the one way work is enqueued. Each job kind is a [`Job`] — its queue and its
//! serde payload (one type per kind, in the submodules) — and every producer (api
//! submissions, account mail, rescans, webhook deliveries, follow-ups a handler
//! returns) inserts it in its own transaction with [`enqueue`] / [`enqueue_many`]
//! ([`enqueue_with_request`] when the request is made in the same statement), then
//! hands the [`Enqueued`] receipt's [`Enqueued::dispatch`] the pool after the commit:
//! the one place ids reach Redis. A job may wait for others ([`NewJob::after`]): it is
//! inserted `waiting` and released by whatever ends the last of them. Also the retry
//! policy, [`backoff`].

pub mod email;
mod enqueue;
pub mod files;
pub mod operations;
pub mod schedule;
pub mod webhooks;

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::QueueSettings;
use crate::db::jobs::Payload;
use crate::queue::{Lane, QueueName};

pub use enqueue::{
    BatchedRequest, EnqueueError, Enqueued, enqueue, enqueue_many, enqueue_requests,
    enqueue_with_request,
};

/// A kind of job: the queue that runs it and its payload (this type, as JSON). The
/// queue's settings (attempts, backoff, timeout, concurrency) are the queue's, from
/// the configuration.
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    const QUEUE: QueueName;
}

/// `canary`: nothing to do; proves the pipeline end to end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CanaryJob {}

impl Job for CanaryJob {
    const QUEUE: QueueName = QueueName::Canary;
}

/// A job about to be inserted: its payload and where and when it runs. Made from a
/// typed [`Job`] with [`NewJob::of`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// Chosen before the insert (UUIDv7), so a caller can name the job in the same
    /// transaction (a webhook delivery's row shares its job's id).
    pub id: Uuid,
    pub queue: QueueName,
    pub payload: Payload,
    /// The request it carries out and is counted on; `None`: work of its own (a
    /// webhook delivery, an operation, a periodic chore).
    pub request_id: Option<Uuid>,
    pub lane: Lane,
    /// Not before this time (a scheduled send); `None`: at once.
    pub run_after: Option<OffsetDateTime>,
    /// At most one job with this key is ever inserted; a second is skipped.
    pub unique_key: Option<String>,
    /// The `traceparent` its first attempt continues; `None`: the enqueue's own span
    /// (a follow-up carries the span of the job it follows).
    pub trace_context: Option<String>,
    /// Jobs it runs after ([`NewJob::after`]): those not yet ended when it is
    /// enqueued are locked `FOR SHARE` and it is inserted `waiting` until they (and
    /// every follow-up they spawn) have ended, whichever way; a dead dependency
    /// releases it too, and its handler decides what that means. Empty, or every one
    /// ended (or unknown): inserted `queued` as any job.
    pub depends_on: Vec<Uuid>,
}

impl NewJob {
    /// `job` as a new job of its queue: no request, the priority lane, at once.
    pub fn of<J: Job>(job: &J) -> Result<NewJob, EnqueueError> {
        Ok(NewJob {
            id: Uuid::now_v7(),
            queue: J::QUEUE,
            payload: Payload::of(job)?,
            request_id: None,
            lane: Lane::Priority,
            run_after: None,
            unique_key: None,
            trace_context: None,
            depends_on: Vec::new(),
        })
    }

    /// Continues the trace `traceparent` names (when there is one).
    pub fn traced(mut self, traceparent: Option<String>) -> Self {
        if traceparent.is_some() {
            self.trace_context = traceparent;
        }
        self
    }

    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// Counted on `request` (it carries part of it out).
    pub fn for_request(mut self, request: Uuid) -> Self {
        self.request_id = Some(request);
        self
    }

    pub fn in_lane(mut self, lane: Lane) -> Self {
        self.lane = lane;
        self
    }

    pub fn run_after(mut self, at: Option<OffsetDateTime>) -> Self {
        self.run_after = at;
        self
    }

    pub fn unique(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// Runs only after the jobs `ids` (and the follow-ups they spawn) have ended:
    /// see [`NewJob::depends_on`]. Adds to the ones already named.
    pub fn after(mut self, ids: impl IntoIterator<Item = Uuid>) -> Self {
        for id in ids {
            if id != self.id && !self.depends_on.contains(&id) {
                self.depends_on.push(id);
            }
        }
        self
    }
}

/// Exponential backoff with full jitter before attempt `attempt + 1`, given that
/// `attempt` (1-based) just failed: a uniformly random delay in
/// `[0, min(cap, base * 2^(attempt-1))]`.
pub fn backoff(settings: &QueueSettings, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let ceiling = settings
        .retry_base
        .saturating_mul(1u32 << exponent)
        .min(settings.retry_cap);
    let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    let random = u64::from_le_bytes(crate::crypto::random_bytes::<8>());
    Duration::from_millis(random % (ceiling_ms + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_the_growing_ceiling_and_the_cap() {
        let settings = QueueSettings {
            concurrency: 1,
            max_attempts: 10,
            retry_base: Duration::from_millis(100),
            retry_cap: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            lifetime: None,
        };
        for attempt in 1..=10u32 {
            let ceiling =
                Duration::from_millis(100 * 2u64.pow(attempt - 1)).min(Duration::from_secs(2));
            for _ in 0..200 {
                assert!(backoff(&settings, attempt) <= ceiling, "attempt {attempt}");
            }
        }
        // Full jitter really spreads: 200 draws at the cap are not all equal.
        let draws: std::collections::BTreeSet<Duration> =
            (0..200).map(|_| backoff(&settings, 10)).collect();
        assert!(draws.len() > 50);
    }
}
