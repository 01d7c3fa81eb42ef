//! Building and running the worker: its dependencies, its operational listener
//! (`/metrics`, `/health/live`, `/health/ready` on WORKER_METRICS_ADDR) and graceful
//! shutdown. Queue consumers join here with the job pipeline.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use shared::Config;
use shared::health::Health;
use shared::redis::Redis;
use sqlx::PgPool;
use tokio::net::TcpListener;

/// How often dependencies are re-checked for the `conveyor_dependency_up` gauge.
const WATCH_EVERY: Duration = Duration::from_secs(10);

/// A worker process's shared handles.
#[derive(Clone, Debug)]
pub struct Worker {
    pub config: Arc<Config>,
    pub pool: PgPool,
    pub redis: Redis,
}

impl Worker {
    pub fn new(config: Arc<Config>, pool: PgPool, redis: Redis) -> Self {
        Worker {
            config,
            pool,
            redis,
        }
    }

    pub fn health(&self) -> Health {
        Health {
            pool: self.pool.clone(),
            redis: self.redis.clone(),
            timeout: self.config.health_timeout,
            service: "worker",
        }
    }

    /// The operational listener's routes.
    pub fn ops_router(&self, prometheus: PrometheusHandle) -> Router {
        shared::health::routes(self.health()).merge(shared::health::metrics_routes(prometheus))
    }

    /// Runs until `shutdown` resolves, then stops within SHUTDOWN_GRACE_SECS.
    pub async fn run(
        self,
        prometheus: PrometheusHandle,
        ops: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let readiness = self.health().check().await;
        tracing::info!(postgres = ?readiness.postgres, redis = ?readiness.redis, "worker dependencies checked");
        let watch = self.health().spawn_watch(WATCH_EVERY);
        let grace = self.config.shutdown_grace;
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let server =
            axum::serve(ops, self.ops_router(prometheus)).with_graceful_shutdown(async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            });
        let server = server.into_future();
        tokio::pin!(server);
        tokio::select! {
            result = &mut server => { watch.abort(); return result; }
            () = shutdown => {}
        }
        tracing::info!(grace_secs = grace.as_secs(), "worker stopping");
        watch.abort();
        let _ = stop_tx.send(true);
        match tokio::time::timeout(grace, server).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!("grace period over; stopping now");
                Ok(())
            }
        }
    }
}
