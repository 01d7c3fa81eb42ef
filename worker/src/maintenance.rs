//! The worker process's upkeep, each a small service with a `round()` (tests call it
//! directly) run by [`shared::maintenance::every`]: heartbeats keep this process's
//! consumers and running jobs alive; the reaper returns a dead worker's in-flight ids;
//! the promoter moves due retries to ready and reports Redis's queue depth. Durable
//! chores (retention, unconfirmed accounts, the sampled gauges) are jobs on the
//! `chores` queue, enqueued by the scheduler.

use std::time::{Duration, SystemTime};

use shared::queue::pause::PauseWatch;
use shared::queue::{InFlight, Queue, QueueName};
use shared::telemetry::metric;
use sqlx::PgPool;

use crate::running::Running;

/// Keeps this process's consumers registered in Redis and its running jobs' rows
/// fresh, so neither is taken for dead.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    pub pool: PgPool,
    pub worker: String,
    pub consumers: Vec<InFlight>,
    pub running: Running,
    /// How long a beat keeps a consumer alive.
    pub ttl: Duration,
}

impl Heartbeat {
    /// Beats every `ttl / 3`.
    pub fn interval(&self) -> Duration {
        self.ttl / 3
    }

    pub async fn round(&self) -> Result<u64, String> {
        let mut errors = Vec::new();
        for consumer in &self.consumers {
            if let Err(err) = consumer.heartbeat(self.ttl).await {
                errors.push(format!("consumer heartbeat: {err}"));
            }
        }
        let ids = self.running.snapshot();
        let mut beaten = 0;
        if !ids.is_empty() {
            match shared::db::jobs::heartbeat(&self.pool, &ids, &self.worker).await {
                Ok(n) => beaten = n,
                Err(err) => errors.push(format!("job heartbeat: {err}")),
            }
        }
        if errors.is_empty() {
            Ok(beaten)
        } else {
            Err(errors.join("; "))
        }
    }
}

/// Returns the in-flight ids of consumers whose heartbeat expired to their queue.
#[derive(Clone, Debug)]
pub struct Reaper {
    pub queues: Vec<Queue>,
}

impl Reaper {
    pub async fn round(&self) -> redis::RedisResult<usize> {
        let mut total = 0;
        for queue in &self.queues {
            total += queue.reap().await?;
        }
        Ok(total)
    }
}

/// Moves retries whose time has come to the ready list; sets the depth gauges.
#[derive(Clone, Debug)]
pub struct Promoter {
    pub queues: Vec<Queue>,
}

impl Promoter {
    pub const INTERVAL: Duration = Duration::from_millis(250);

    pub async fn round(&self) -> redis::RedisResult<usize> {
        let mut total = 0;
        for queue in &self.queues {
            total += queue.promote_due(SystemTime::now()).await?;
            let (ready, delayed) = queue.depth().await?;
            let name = queue.name().as_str();
            metrics::gauge!(metric::QUEUE_DEPTH, "queue" => name, "state" => "ready")
                .set(ready as f64);
            metrics::gauge!(metric::QUEUE_DEPTH, "queue" => name, "state" => "delayed")
                .set(delayed as f64);
        }
        Ok(total)
    }
}

/// Keeps `conveyor_queue_paused` equal to what this process's pause watch says, for
/// the queues it runs, until the watch stops. The producers read the same watch, so
/// once this process shows 1 it takes no new job of that queue.
pub async fn export_paused(mut pause: PauseWatch, queues: Vec<QueueName>) {
    loop {
        for &queue in &queues {
            metrics::gauge!(metric::QUEUE_PAUSED, "queue" => queue.as_str())
                .set(f64::from(u8::from(pause.is_paused(queue))));
        }
        if !pause.changed().await {
            return;
        }
    }
}
