//! Serving: the public listener and the metrics listener, both stopped gracefully by
//! one shutdown signal, with in-flight requests given `SHUTDOWN_GRACE_SECS`.

use std::future::Future;

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app;
use crate::state::AppState;

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
    let api_router =
        app::router(state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let api_server = axum::serve(api, api_router).with_graceful_shutdown(stopped(stop_rx.clone()));
    let ops_server = axum::serve(ops, ops_router(&state, prometheus))
        .with_graceful_shutdown(stopped(stop_rx.clone()));
    let servers = async { tokio::try_join!(api_server.into_future(), ops_server.into_future()) };
    tokio::pin!(servers);

    tokio::select! {
        result = &mut servers => { watch.abort(); return result.map(|_| ()); }
        () = shutdown => {}
    }
    watch.abort();
    tracing::info!(grace_secs = grace.as_secs(), "draining in-flight requests");
    let _ = stop_tx.send(true);
    let _ = dispatcher.await;
    match tokio::time::timeout(grace, servers).await {
        Ok(result) => result.map(|_| ()),
        Err(_) => {
            tracing::warn!("grace period over; closing the remaining connections");
            Ok(())
        }
    }
}
