//! What a queue is to the runtime: a [`Handler`] that turns a claimed job into an
//! [`Outcome`]. It never writes a status, never acks, never schedules a retry — the
//! executor and the completer do, the same way for every queue.

use std::future::Future;

use shared::db::jobs::ClaimedJob;

/// How one attempt ended, as the handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// A transient failure (timeout, refused connection, SMTP 4xx): try again later,
    /// if attempts remain.
    Retry(String),
    /// A permanent failure (invalid recipient, SMTP 5xx, malformed payload): dead now.
    Dead(String),
    /// Not attempted, and never will be: every recipient of the message is on the
    /// sender's suppression list. Final.
    Suppressed,
    /// Not attempted yet, by choice (a recipient domain's pace or backoff): run again
    /// at `until` without spending an attempt.
    Defer {
        until: std::time::SystemTime,
        reason: String,
    },
}

/// One queue's work. Implementations are shared by every concurrent job of the queue.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, job: &ClaimedJob) -> impl Future<Output = Outcome> + Send;
}
