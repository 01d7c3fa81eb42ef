//! The worker's chores, each a small service with a `round()` (tests call it
//! directly) run by [`shared::maintenance::every`]: heartbeats keep this process's
//! consumers and running jobs alive; the reaper returns a dead worker's in-flight ids;
//! the promoter moves due retries to ready and reports Redis's queue depth; the
//! sampler reports PostgreSQL's counts and the live workers, from one replica at a
//! time. Retention (the pruner) is [`shared::maintenance::retention`].

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use shared::queue::pause::PauseWatch;
use shared::queue::{InFlight, Queue, QueueName};
use shared::redis::Redis;
use shared::telemetry::metric;
use sqlx::PgPool;
use uuid::Uuid;

use crate::lease::Lease;
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

/// The job states `conveyor_queue_jobs` reports.
const SAMPLED_STATES: [&str; 4] = ["queued", "running", "retrying", "dead"];

/// Sets `conveyor_queue_jobs`, `conveyor_queue_oldest_age_seconds` and
/// `conveyor_workers_alive` for every queue, from one worker process at a time: the
/// holder of a Redis lease, so replicas do not all run the same grouped count against
/// PostgreSQL. A process that does not hold the lease exports none of these series;
/// one that loses it (or cannot tell, Redis or PostgreSQL failing) sets the series it
/// had exported to 0, since an exporter cannot withdraw a series. Either way a
/// non-holder never shows a stale value, so `max` or `sum` by queue across instances
/// is the holder's value (never `avg` or `min`).
#[derive(Clone, Debug)]
pub struct QueueSampler {
    pool: PgPool,
    queues: Vec<Queue>,
    lease: Lease,
    /// Whether this process's gauges hold sampled values (to zero when it stops).
    exported: Arc<AtomicBool>,
    /// Campaigns whose gauges this process set (zeroed once they leave the window).
    campaigns: Arc<std::sync::Mutex<HashSet<Uuid>>>,
}

impl QueueSampler {
    pub const INTERVAL: Duration = Duration::from_secs(5);
    /// Three missed rounds: a holder that died is replaced within this.
    pub const LEASE_TTL: Duration = Duration::from_secs(15);

    /// A sampler for every queue, competing for the lease as `holder`.
    pub fn new(pool: PgPool, redis: Redis, holder: &str) -> Self {
        QueueSampler {
            pool,
            queues: QueueName::ALL
                .iter()
                .map(|&name| Queue::new(redis.clone(), name))
                .collect(),
            lease: Lease::new(redis, "queue-sampler", holder, Self::LEASE_TTL),
            exported: Arc::new(AtomicBool::new(false)),
            campaigns: Arc::default(),
        }
    }

    /// Campaigns (running, or finished within this) that have complaint gauges.
    pub const CAMPAIGN_WINDOW: Duration = Duration::from_secs(7 * 86_400);
    /// At most this many campaigns, newest first.
    pub const CAMPAIGNS: i64 = 100;

    /// `conveyor_campaign_complaint_ratio` and `conveyor_campaign_delivered` of recent
    /// campaigns; a campaign that left the window is set to 0.
    async fn sample_campaigns(&self) -> Result<(), String> {
        let rows = shared::db::suppressions::recent_campaign_complaints(
            &self.pool,
            Self::CAMPAIGN_WINDOW,
            Self::CAMPAIGNS,
        )
        .await
        .map_err(|err| format!("campaign complaints: {err}"))?;
        let Ok(mut exported) = self.campaigns.lock() else {
            return Ok(());
        };
        let current: HashSet<Uuid> = rows.iter().map(|(id, ..)| *id).collect();
        for gone in exported.difference(&current) {
            let campaign = gone.to_string();
            metrics::gauge!(metric::CAMPAIGN_COMPLAINT_RATIO, "campaign" => campaign.clone())
                .set(0.0);
            metrics::gauge!(metric::CAMPAIGN_DELIVERED, "campaign" => campaign).set(0.0);
        }
        for (id, delivered, complained) in &rows {
            let campaign = id.to_string();
            let ratio = if *delivered > 0 {
                *complained as f64 / *delivered as f64
            } else {
                0.0
            };
            metrics::gauge!(metric::CAMPAIGN_COMPLAINT_RATIO, "campaign" => campaign.clone())
                .set(ratio);
            metrics::gauge!(metric::CAMPAIGN_DELIVERED, "campaign" => campaign)
                .set(*delivered as f64);
        }
        *exported = current;
        Ok(())
    }

    /// Samples if this process holds (or takes) the lease; `Ok(true)` if it did.
    pub async fn round(&self) -> Result<bool, String> {
        match self.lease.hold().await {
            Ok(true) => {}
            Ok(false) => {
                self.withdraw();
                return Ok(false);
            }
            Err(err) => {
                self.withdraw();
                return Err(format!("queue sampler lease: {err}"));
            }
        }
        if let Err(err) = self.sample().await {
            // Let a replica that can reach PostgreSQL take over.
            self.withdraw();
            let _ = self.lease.release().await;
            return Err(err);
        }
        Ok(true)
    }

    async fn sample(&self) -> Result<(), String> {
        let rows = shared::db::jobs::sample_queues(&self.pool)
            .await
            .map_err(|err| format!("queue counts: {err}"))?;
        let mut alive = Vec::with_capacity(self.queues.len());
        for queue in &self.queues {
            alive.push(
                queue
                    .workers_alive()
                    .await
                    .map_err(|err| format!("workers alive: {err}"))?,
            );
        }
        for (queue, alive) in self.queues.iter().zip(alive) {
            let name = queue.name();
            let row = rows.iter().find(|row| row.queue == name);
            let counts = row.map_or([0; 4], |r| [r.queued, r.running, r.retrying, r.dead]);
            for (state, count) in SAMPLED_STATES.into_iter().zip(counts) {
                metrics::gauge!(metric::QUEUE_JOBS, "queue" => name.as_str(), "state" => state)
                    .set(count as f64);
            }
            let oldest = row.and_then(|r| r.oldest_queued_secs).unwrap_or(0.0);
            metrics::gauge!(metric::QUEUE_OLDEST_AGE_SECONDS, "queue" => name.as_str())
                .set(oldest.max(0.0));
            metrics::gauge!(metric::WORKERS_ALIVE, "queue" => name.as_str()).set(alive as f64);
        }
        self.exported.store(true, Ordering::Relaxed);
        self.sample_campaigns().await?;
        Ok(())
    }

    /// Zeroes the sampled gauges if this process had set them.
    fn withdraw(&self) {
        if !self.exported.swap(false, Ordering::Relaxed) {
            return;
        }
        for queue in &self.queues {
            let name = queue.name().as_str();
            for state in SAMPLED_STATES {
                metrics::gauge!(metric::QUEUE_JOBS, "queue" => name, "state" => state).set(0.0);
            }
            metrics::gauge!(metric::QUEUE_OLDEST_AGE_SECONDS, "queue" => name).set(0.0);
            metrics::gauge!(metric::WORKERS_ALIVE, "queue" => name).set(0.0);
        }
        if let Ok(mut exported) = self.campaigns.lock() {
            for campaign in exported.drain() {
                let campaign = campaign.to_string();
                metrics::gauge!(metric::CAMPAIGN_COMPLAINT_RATIO, "campaign" => campaign.clone())
                    .set(0.0);
                metrics::gauge!(metric::CAMPAIGN_DELIVERED, "campaign" => campaign).set(0.0);
            }
        }
    }

    /// On shutdown: stop exporting and hand the lease on at once.
    pub async fn stop(&self) {
        self.withdraw();
        if let Err(err) = self.lease.release().await {
            tracing::debug!(error = %err, "cannot release the queue sampler lease; it expires");
        }
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
