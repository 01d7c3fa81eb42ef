//! Conveyor's worker as a library: the binary in `main.rs` and the tests run the same
//! [`runtime::Runtime`]. The runtime is named for its roles — [`producer`],
//! [`executor`], [`completer`], [`maintenance`], [`scheduler`] — and a queue is a
//! [`handler::Handler`] in [`handlers`] plus one line in [`queues`] (a periodic job:
//! one more line there).

pub mod caps;
pub mod completer;
pub mod dkim;
pub mod executor;
pub mod gate;
pub mod handler;
pub mod handlers;
pub mod maintenance;
pub mod pacing;
pub mod producer;
pub mod queues;
pub mod running;
pub mod runtime;
pub mod scanner;
pub mod scheduler;
pub mod signals;
pub mod smtp;

/// Helpers of the crate's own unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use shared::redis::Redis;

    /// A Redis client (`REDIS_URL`, else the local server) under a prefix of its own.
    pub(crate) fn redis() -> Redis {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
        Redis::connect_lazy_to(&url, &prefix).expect("redis url")
    }
}
