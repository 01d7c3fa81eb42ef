//! A circuit breaker per dependency: once a request finds the dependency unreachable,
//! the breaker opens and every request that needs it is answered at once (503
//! `dependency_unavailable` with `Retry-After`) instead of each waiting out its own
//! timeout; one probe in the background tries the dependency every [`PROBE_EVERY`]
//! and closes the breaker the moment it answers. `conveyor_dependency_breaker_open`
//! shows the state.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::telemetry::metric;

/// How often an open breaker probes its dependency.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);
/// What an open breaker tells clients to wait.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct Breaker {
    dependency: &'static str,
    service: &'static str,
    open: Arc<AtomicBool>,
}

impl Breaker {
    /// A closed breaker for `dependency` of `service` (`api`, `worker`); its gauge is
    /// registered at 0 with the process's other series (`telemetry`).
    pub fn new(service: &'static str, dependency: &'static str) -> Self {
        Breaker {
            dependency,
            service,
            open: Arc::default(),
        }
    }

    pub fn dependency(&self) -> &'static str {
        self.dependency
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Opens the breaker (if it is not open already) and probes with `probe` every
    /// [`PROBE_EVERY`] until it answers `true`; then closes it.
    pub fn trip<F, Fut>(&self, probe: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send,
    {
        if self.open.swap(true, Ordering::AcqRel) {
            return;
        }
        let (dependency, service, open) = (self.dependency, self.service, self.open.clone());
        metrics::gauge!(metric::DEPENDENCY_BREAKER_OPEN, "service" => service, "dependency" => dependency)
            .set(1.0);
        tracing::warn!(
            dependency,
            "dependency unreachable: answering 503 at once until it is back"
        );
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                if probe().await {
                    break;
                }
            }
            open.store(false, Ordering::Release);
            metrics::gauge!(metric::DEPENDENCY_BREAKER_OPEN, "service" => service, "dependency" => dependency)
                .set(0.0);
            tracing::info!(
                dependency,
                open_secs = started.elapsed().as_secs_f64(),
                "dependency reachable again"
            );
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    #[tokio::test]
    async fn an_open_breaker_probes_until_the_dependency_answers_then_closes() {
        let breaker = Breaker::new("test", "thing");
        assert!(!breaker.is_open());
        let probes = Arc::new(AtomicU32::new(0));
        let counted = probes.clone();
        breaker.trip(move || {
            let counted = counted.clone();
            async move { counted.fetch_add(1, Ordering::SeqCst) >= 2 }
        });
        assert!(breaker.is_open());
        // A second trip while open starts no second probe.
        breaker.trip(|| async { panic!("a second probe") });
        testkit::eventually(Duration::from_secs(10), "the breaker closes", || async {
            (!breaker.is_open()).then_some(())
        })
        .await;
        assert_eq!(
            probes.load(Ordering::SeqCst),
            3,
            "closed at the first answer"
        );
    }
}
