//! Background chores shared by the binaries, each a small service with its own
//! settings and a `round()` that tests call directly: the [`dispatcher`] (outbox
//! push and reconciler) runs in the api; [`retention`] (pruner and idempotency
//! purge) and [`sample`] (the sampled gauges) are chores the worker runs as jobs.
//! The worker's process upkeep (heartbeats, reaper, retry promotion) lives in its
//! `maintenance` module.

pub mod dispatcher;
pub mod retention;
pub mod sample;

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

/// Runs `round` every `interval` until `stop` turns true; a failed round is logged and
/// the next one runs on time.
pub async fn every<F, Fut, T, E>(
    name: &'static str,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticker.tick() => {}
        }
        if let Err(err) = round().await {
            tracing::warn!(chore = name, error = %err, "maintenance round failed");
        }
    }
}
