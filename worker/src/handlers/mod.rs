//! Job handlers, one file per queue. A handler turns a claimed job into an
//! [`Outcome`](crate::handler::Outcome); it never writes job state itself. The list
//! of queues a worker runs is [`crate::queues::register`].

pub mod attachments;
pub mod canary;
pub mod chores;
pub mod emails;
pub mod operations;
pub mod scans;
pub mod uploads;
pub mod webhooks;
