//! Queues: their names, and the reliable Redis transport that carries job ids from
//! the api to the workers. PostgreSQL holds the jobs; Redis holds only their ids.

pub mod blocked;
pub mod pause;
pub mod transport;

pub use transport::{Consumer, InFlight, Lane, Queue};

crate::domain::status::text_enum!(
    /// The queues, one per job kind.
    QueueName {
        Emails => "emails",
        Uploads => "uploads",
        Scans => "scans",
        /// Completion webhook deliveries.
        Webhooks => "webhooks",
        /// Operators' bulk operations, worked through in chunks.
        Operations => "operations",
        /// Periodic maintenance (retention, unconfirmed accounts), from the schedules.
        Chores => "chores",
        /// No-op jobs that prove the pipeline end to end (operators, benchmarks);
        /// last, so a test's own canary handler registers in its place.
        Canary => "canary",
    }
);
