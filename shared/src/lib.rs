//! Conveyor's shared library: what the `api` and `worker` binaries both stand on —
//! configuration, telemetry, the database and Redis handles, health checks and the
//! stable error codes of the public API.

pub mod breaker;
pub mod config;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod error_code;
pub mod events;
pub mod files;
pub mod health;
pub mod jobs;
pub mod mail;
pub mod maintenance;
pub mod monitoring;
pub mod otel;
pub mod problem;
pub mod queue;
pub mod redis;
pub mod session_epoch;
pub mod shutdown;
pub mod storage;
pub mod suppression;
pub mod telemetry;
pub mod webhooks;

pub use config::{AppEnv, Config, ConfigError};
pub use error_code::ErrorCode;
