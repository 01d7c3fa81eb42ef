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
