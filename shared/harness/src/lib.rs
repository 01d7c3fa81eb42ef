//! The high layer of Conveyor's test harness, for the api's and the worker's tests:
//! [`app`] serves the api in process on a database of its own and runs the worker
//! runtime in process (its test signals say when a job was recorded or the scheduler
//! ticked); [`system`] starts the real `api` and `worker` binaries for end-to-end
//! tests. The services underneath (PostgreSQL, Redis, SMTP, clamd, S3, DKIM) are
//! `testkit`'s, re-exported here so a test names one crate.

pub mod app;
pub mod system;

pub use testkit::{
    KEY, PASSWORD, clamd, database_url_of, dkim, eventually, eventually_every, fixtures, free_port,
    holds_for, otlp, process, proxy, redis_cluster_urls, redis_url, s3, smtp, wait_out, workspace,
};
