//! Serving: the public listener and the metrics listener, each with header-read and
//! idle timeouts and a connection cap ([`crate::listener`]), both stopped gracefully by
//! one shutdown signal, with in-flight requests given `SHUTDOWN_GRACE_SECS`.

use std::future::Future;

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app;
use crate::listener::{self, ConnectionLimits};
use crate::state::AppState;

/// Connections the ops listener holds open at once: probes and scrapes need few, and
/// its own cap keeps them answering while the public listener is full.
const OPS_MAX_CONNECTIONS: usize = 64;

/// The operational listener: `/metrics`, `/health/live`, `/health/ready`.
pub fn ops_router(state: &AppState, prometheus: PrometheusHandle) -> Router {
    shared::health::routes(state.health()).merge(shared::health::metrics_routes(prometheus))
}

/// Serves until `shutdown` resolves, then drains for at most the configured grace.
pub async fn serve(
    state: AppState,
    prometheus: PrometheusHandle,
    api: TcpListener,
    ops: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    shared::telemetry::register_api_metrics();
    shared::telemetry::spawn_process_metrics();
    let grace = state.config.ops.shutdown_grace;
    state.storage.announce("api");
    let (stop_tx, stop_rx) = watch::channel(false);
    let watch = state
        .health()
        .spawn_watch(std::time::Duration::from_secs(10));
    // Pushes committed jobs Redis has not seen, and re-pushes ones it lost.
    let dispatcher = {
        let dispatcher = shared::maintenance::dispatcher::Dispatcher::new(
            state.pool.clone(),
            state.redis.clone(),
            state.config.pipeline.redelivery_timeout,
        );
        tokio::spawn(shared::maintenance::every(
            "dispatcher",
            state.config.pipeline.dispatch_interval,
            stop_rx.clone(),
            move || {
                let dispatcher = dispatcher.clone();
                async move { dispatcher.round().await }
            },
        ))
    };
    let stopped = move |mut rx: watch::Receiver<bool>| async move {
        // An error means the sender is gone, which also means stop.
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let http = &state.config.http;
    let api_limits = ConnectionLimits {
        header_read_timeout: http.header_read_timeout,
        idle_timeout: http.idle_timeout,
        max_connections: listener::connection_cap(http.max_connections),
    };
    let ops_limits = ConnectionLimits {
        max_connections: OPS_MAX_CONNECTIONS,
        ..api_limits
    };
    tracing::info!(
        max_connections = api_limits.max_connections,
        header_read_timeout_secs = api_limits.header_read_timeout.as_secs(),
        idle_timeout_secs = api_limits.idle_timeout.as_secs(),
        "connection limits"
    );
    let api_router =
        app::router(state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let api_server = listener::serve(api, api_router, api_limits, stopped(stop_rx.clone()));
    let ops_server = listener::serve(
        ops,
        ops_router(&state, prometheus).into_make_service(),
        ops_limits,
        stopped(stop_rx.clone()),
    );
    let servers = async {
        tokio::join!(api_server, ops_server);
    };
    tokio::pin!(servers);

    tokio::select! {
        () = &mut servers => { watch.abort(); return Ok(()); }
        () = shutdown => {}
    }
    watch.abort();
    tracing::info!(grace_secs = grace.as_secs(), "draining in-flight requests");
    let _ = stop_tx.send(true);
    let _ = dispatcher.await;
    if tokio::time::timeout(grace, servers).await.is_err() {
        tracing::warn!("grace period over; closing the remaining connections");
    }
    Ok(())
}
