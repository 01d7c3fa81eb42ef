//! A queue's gate, in one worker process: closed while a dependency its handler needs
//! is down, so an outage costs no attempts. A handler says a failure is the world's,
//! not the job's ([`crate::handler::Outcome::Blocked`]): that job goes back to wait
//! without spending its attempt, the gate closes — the producer takes no new job of
//! the queue — and one probe ([`crate::handler::Handler::probe`]) tries the dependency
//! every [`PROBE_EVERY`]. When it answers, the gate opens and the waiting jobs flow at
//! once. Operators see it in `conveyor_queue_blocked{queue,dependency}` and in
//! `GET /admin/queues` (`blocked_on`, `blocked_since`: kept in Redis while the probe
//! runs, so the api can show it).

use std::future::Future;
use std::time::Duration;

use shared::queue::QueueName;
use shared::queue::blocked::{self, Blocked};
use shared::redis::Redis;
use shared::telemetry::metric;
use time::OffsetDateTime;
use tokio::sync::watch;

/// How often a closed gate probes its dependency.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// When a blocked job is tried again if the gate has opened by then (it waits in the
/// delayed set meanwhile, its attempt given back).
pub const RETRY_BLOCKED: Duration = Duration::from_secs(2);
/// How long the Redis record of a closed gate outlives the probe's last renewal.
const RECORD_KEPT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct Gate {
    queue: QueueName,
    worker: String,
    redis: Redis,
    state: watch::Sender<Option<Blocked>>,
}

impl Gate {
    pub fn new(queue: QueueName, worker: &str, redis: Redis) -> Self {
        Gate {
            queue,
            worker: worker.to_owned(),
            redis,
            state: watch::channel(None).0,
        }
    }

    /// Whether the queue is blocked (the producer asks before every fetch: no copy).
    pub fn is_blocked(&self) -> bool {
        self.state.borrow().is_some()
    }

    /// Resolves once the gate is open (at once if it is).
    pub async fn opened(&self) {
        let mut state = self.state.subscribe();
        let _ = state.wait_for(Option::is_none).await;
    }

    /// Closes the gate for `dependency` (unless it is closed already) and probes with
    /// `probe` every [`PROBE_EVERY`] until it answers `true`; then opens it.
    pub fn block<F, Fut>(&self, dependency: &'static str, probe: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send,
    {
        let blocked = Blocked {
            dependency: dependency.to_owned(),
            since: OffsetDateTime::now_utc(),
            worker: self.worker.clone(),
        };
        let closed = self.state.send_if_modified(|state| {
            if state.is_some() {
                return false;
            }
            *state = Some(blocked.clone());
            true
        });
        if !closed {
            return;
        }
        let queue = self.queue.as_str();
        metrics::gauge!(metric::QUEUE_BLOCKED, "queue" => queue, "dependency" => dependency)
            .set(1.0);
        tracing::warn!(
            queue,
            dependency,
            "dependency down: taking no new job of this queue until it answers"
        );
        let gate = self.clone();
        tokio::spawn(async move {
            loop {
                let until = OffsetDateTime::now_utc() + RECORD_KEPT;
                if let Err(err) = blocked::record(&gate.redis, gate.queue, &blocked, until).await {
                    tracing::debug!(error = %err, "cannot record the queue's block in Redis");
                }
                tokio::time::sleep(PROBE_EVERY).await;
                if probe().await {
                    break;
                }
            }
            if let Err(err) = blocked::clear(&gate.redis, gate.queue, &blocked).await {
                tracing::debug!(error = %err, "cannot clear the queue's block in Redis; it expires");
            }
            metrics::gauge!(metric::QUEUE_BLOCKED, "queue" => gate.queue.as_str(), "dependency" => dependency)
                .set(0.0);
            tracing::info!(
                queue = gate.queue.as_str(),
                dependency,
                blocked_secs = (OffsetDateTime::now_utc() - blocked.since).as_seconds_f64(),
                "dependency answers again: the queue runs"
            );
            gate.state.send_replace(None);
        });
    }
}
