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
/// the next one runs on time. A round still running after [`round_deadline`] is
/// abandoned (its future dropped) and logged: one call that never answers — a Redis
/// reply lost with its connection — must not stop the chore for good (a reaper stuck
/// so would leave a killed worker's jobs to the reconciler).
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
        let deadline = round_deadline(interval);
        match tokio::time::timeout(deadline, round()).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!(chore = name, error = %err, "maintenance round failed"),
            Err(_) => tracing::warn!(
                chore = name,
                deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
                "maintenance round did not finish in time; abandoned, the next one runs on time"
            ),
        }
    }
}

/// How long one round of a chore run every `interval` may take: four intervals, and
/// at least 5 s (rounds take milliseconds; this only catches one that hangs).
pub fn round_deadline(interval: Duration) -> Duration {
    (interval * 4).max(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use tokio::sync::watch;

    use super::{every, round_deadline};

    /// A round that never finishes is abandoned after its deadline and the chore goes on.
    #[tokio::test]
    async fn a_hung_round_is_abandoned_and_the_next_one_runs() {
        let (stop_tx, stop) = watch::channel(false);
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let chore = tokio::spawn(every("test", Duration::from_millis(10), stop, move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    std::future::pending::<()>().await;
                }
                Ok::<_, String>(())
            }
        }));
        let deadline = Instant::now() + round_deadline(Duration::from_millis(10)) * 3;
        while calls.load(Ordering::SeqCst) < 2 {
            assert!(
                Instant::now() < deadline,
                "the chore stopped at its hung round"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop_tx.send(true).expect("stop");
        chore.await.expect("the chore ends");
    }
}
