//! Queues: their names, and the reliable Redis transport that carries job ids from
//! the api to the workers. PostgreSQL holds the jobs; Redis holds only their ids.

pub mod pause;
pub mod transport;

pub use transport::{Consumer, InFlight, Lane, Queue};

crate::domain::status::text_enum!(
    /// The queues, one per job kind.
    QueueName {
        Emails => "emails",
        Uploads => "uploads",
        Scans => "scans",
        /// No-op jobs that prove the pipeline end to end (operators, benchmarks).
        Canary => "canary",
    }
);
