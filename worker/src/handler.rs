//! What a queue is to the runtime: a [`Handler`] of one [`Job`] kind that turns a
//! claimed job and its typed payload into an [`Outcome`]. It never writes a status,
//! never acks, never schedules a retry, never enqueues — the executor and the
//! completer do, the same way for every queue: work that must follow is returned
//! ([`Outcome::SucceededWith`]) and the completer inserts it in the transaction that
//! records the success.

use std::future::Future;

use shared::db::jobs::ClaimedJob;
use shared::jobs::{Job, NewJob};

/// How one attempt ended, as the handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Succeeded, and these jobs follow (an upload's scan): inserted with the success,
    /// in one transaction, so they exist exactly when the success is recorded.
    SucceededWith(Vec<NewJob>),
    /// A transient failure (timeout, refused connection, SMTP 4xx): try again later,
    /// if attempts remain.
    Retry(String),
    /// A permanent failure (invalid recipient, SMTP 5xx, malformed payload): dead now.
    Dead(String),
    /// Not attempted, and never will be: every recipient of the message is on the
    /// sender's suppression list. Final.
    Suppressed,
    /// Not done because a dependency the whole queue needs is down (the SMTP relay
    /// refuses connections): the job waits without spending its attempt, and this
    /// process takes no new job of the queue until [`Handler::probe`] says the
    /// dependency answers again (`crate::gate`).
    Blocked {
        dependency: &'static str,
        reason: String,
    },
    /// Not attempted yet, by choice (a recipient domain's pace or backoff): run again
    /// at `until` without spending an attempt.
    Defer {
        until: std::time::SystemTime,
        reason: String,
    },
}

impl Outcome {
    /// The outcome without its follow-up jobs, and those jobs.
    pub fn split(self) -> (Outcome, Vec<NewJob>) {
        match self {
            Outcome::SucceededWith(jobs) => (Outcome::Succeeded, jobs),
            other => (other, Vec::new()),
        }
    }
}

/// One queue's work: the queue is `Self::Job`'s. Implementations are shared by every
/// concurrent job of the queue.
pub trait Handler: Send + Sync + 'static {
    type Job: Job;

    fn handle(&self, job: &ClaimedJob, payload: Self::Job) -> impl Future<Output = Outcome> + Send;

    /// Whether `dependency` (one this handler reported [`Outcome::Blocked`] on)
    /// answers again; probed while the queue is blocked on it.
    fn probe(&self, dependency: &'static str) -> impl Future<Output = bool> + Send {
        let _ = dependency;
        async { true }
    }
}
