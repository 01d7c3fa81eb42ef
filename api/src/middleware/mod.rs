//! Tower middleware of the api. Their order is decided in one place: `app.rs`.

pub mod auth;
pub mod breaker;
pub mod deadline;
pub mod http_metrics;
pub mod problem;
pub mod rate_limit;
pub mod request_id;
