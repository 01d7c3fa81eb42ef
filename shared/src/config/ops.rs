//! The operational side of every process: the metrics and health listeners and the
//! shutdown grace.

use std::net::SocketAddr;
use std::time::Duration;

use super::ConfigError;
use super::env::Env;
use super::http::socket;

/// The operational side of every process: metrics and health listeners, shutdown.
#[derive(Debug)]
pub struct OpsConfig {
    pub metrics_addr: SocketAddr,
    pub worker_metrics_addr: SocketAddr,
    pub health_timeout: Duration,
    pub shutdown_grace: Duration,
}

impl OpsConfig {
    pub(crate) fn read<F: Fn(&str) -> Option<String>>(
        env: &Env<'_, F>,
    ) -> Result<Self, ConfigError> {
        Ok(OpsConfig {
            metrics_addr: env.parsed("METRICS_ADDR", socket("127.0.0.1:9100"))?,
            worker_metrics_addr: env.parsed("WORKER_METRICS_ADDR", socket("127.0.0.1:9101"))?,
            health_timeout: env.millis_in("HEALTH_TIMEOUT_MS", 1000, 10..=60_000)?,
            shutdown_grace: env.seconds("SHUTDOWN_GRACE_SECS", 30)?,
        })
    }
}
