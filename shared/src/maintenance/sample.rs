//! The sampled gauges (`conveyor_queue_jobs`, `conveyor_queue_oldest_age_seconds`,
//! `conveyor_workers_alive`, the campaign complaint gauges): taken by the
//! `sample_queues` chore — a job on the `chores` queue the scheduler enqueues once per
//! [`INTERVAL`], so one worker runs each sample however many there are — and stored in
//! Redis for [`KEPT`]. Every worker's `/metrics` shows the stored sample
//! ([`Exporter::refresh`] before each render), so each replica shows the same values
//! and `max by (queue)` across instances is the sample. When no sample is stored (the
//! scheduler stopped, Redis unreachable) the gauges read 0 rather than a stale value:
//! an exporter cannot withdraw a series.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::queue::{Queue, QueueName};
use crate::redis::Redis;
use crate::telemetry::metric;

/// How often the scheduler enqueues the sample.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// How long a stored sample is shown: three missed samples and the gauges read 0.
pub const KEPT: Duration = Duration::from_secs(15);
/// Campaigns (running, or finished within this) that have complaint gauges.
pub const CAMPAIGN_WINDOW: Duration = Duration::from_secs(7 * 86_400);
/// At most this many campaigns, newest first.
pub const CAMPAIGNS: i64 = 100;

/// The job states `conveyor_queue_jobs` reports.
const STATES: [&str; 5] = ["waiting", "queued", "running", "retrying", "dead"];
/// The Redis key (under the prefix) of the latest sample.
const KEY: &str = "sample:queues";

/// One queue's sampled values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueValues {
    pub queue: String,
    /// Jobs by [`STATES`], in that order.
    pub jobs: [i64; 5],
    /// Seconds since the oldest queued job became runnable (0: none).
    pub oldest_queued_secs: f64,
    pub workers_alive: u64,
}

/// One campaign's complaint figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignValues {
    pub campaign: uuid::Uuid,
    pub delivered: i64,
    pub complained: i64,
}

/// Everything one sample measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub queues: Vec<QueueValues>,
    pub campaigns: Vec<CampaignValues>,
}

impl Sample {
    /// Measures every queue (PostgreSQL's grouped count of open and dead jobs, Redis's
    /// live consumers) and the recent campaigns.
    pub async fn take(pool: &PgPool, redis: &Redis) -> Result<Sample, String> {
        let rows = crate::db::jobs::sample_queues(pool)
            .await
            .map_err(|err| format!("queue counts: {err}"))?;
        let mut queues = Vec::with_capacity(QueueName::ALL.len());
        for &name in QueueName::ALL.iter() {
            let workers_alive = Queue::new(redis.clone(), name)
                .workers_alive()
                .await
                .map_err(|err| format!("workers alive: {err}"))?;
            let row = rows.iter().find(|row| row.queue == name);
            queues.push(QueueValues {
                queue: name.as_str().to_owned(),
                jobs: row.map_or([0; 5], |r| {
                    [r.waiting, r.queued, r.running, r.retrying, r.dead]
                }),
                oldest_queued_secs: row
                    .and_then(|r| r.oldest_queued_secs)
                    .unwrap_or(0.0)
                    .max(0.0),
                workers_alive,
            });
        }
        let campaigns =
            crate::db::suppressions::recent_campaign_complaints(pool, CAMPAIGN_WINDOW, CAMPAIGNS)
                .await
                .map_err(|err| format!("campaign complaints: {err}"))?
                .into_iter()
                .map(|(campaign, delivered, complained)| CampaignValues {
                    campaign,
                    delivered,
                    complained,
                })
                .collect();
        Ok(Sample { queues, campaigns })
    }

    /// Stores this sample as the latest, shown for [`KEPT`].
    pub async fn store(&self, redis: &Redis) -> Result<(), String> {
        let json = serde_json::to_string(self).map_err(|err| format!("sample: {err}"))?;
        let mut conn = redis.connection();
        redis::cmd("SET")
            .arg(redis.key(KEY))
            .arg(json)
            .arg("PX")
            .arg(u64::try_from(KEPT.as_millis()).unwrap_or(u64::MAX))
            .query_async::<()>(&mut conn)
            .await
            .map_err(|err| format!("store the sample: {err}"))
    }

    /// The latest sample, if one is stored and still shown.
    pub async fn latest(redis: &Redis) -> redis::RedisResult<Option<Sample>> {
        let mut conn = redis.connection();
        let json: Option<String> = redis::cmd("GET")
            .arg(redis.key(KEY))
            .query_async(&mut conn)
            .await?;
        // A sample this build cannot read (another version's) counts as none.
        Ok(json.and_then(|json| serde_json::from_str(&json).ok()))
    }
}

/// Sets a process's sampled gauges from the latest stored sample.
#[derive(Clone, Debug)]
pub struct Exporter {
    redis: Redis,
    /// Campaigns whose gauges this process set (zeroed once they leave the sample).
    campaigns: Arc<Mutex<HashSet<uuid::Uuid>>>,
}

impl Exporter {
    pub fn new(redis: Redis) -> Self {
        Exporter {
            redis,
            campaigns: Arc::default(),
        }
    }

    /// Sets the gauges to the latest sample, or to 0 when there is none (or Redis
    /// cannot say): never a stale value.
    pub async fn refresh(&self) {
        let sample = match Sample::latest(&self.redis).await {
            Ok(sample) => sample,
            Err(err) => {
                tracing::debug!(error = %err, "cannot read the queue sample; gauges read 0");
                None
            }
        };
        self.show(sample.as_ref());
    }

    /// Sets the gauges to `sample`'s values (0 for everything when `None`).
    pub fn show(&self, sample: Option<&Sample>) {
        for &name in QueueName::ALL.iter() {
            let values = sample.and_then(|s| s.queues.iter().find(|q| q.queue == name.as_str()));
            let jobs = values.map_or([0; 5], |v| v.jobs);
            for (state, count) in STATES.into_iter().zip(jobs) {
                metrics::gauge!(metric::QUEUE_JOBS, "queue" => name.as_str(), "state" => state)
                    .set(count as f64);
            }
            metrics::gauge!(metric::QUEUE_OLDEST_AGE_SECONDS, "queue" => name.as_str())
                .set(values.map_or(0.0, |v| v.oldest_queued_secs));
            metrics::gauge!(metric::WORKERS_ALIVE, "queue" => name.as_str())
                .set(values.map_or(0.0, |v| v.workers_alive as f64));
        }
        let Ok(mut exported) = self.campaigns.lock() else {
            return;
        };
        let campaigns = sample.map(|s| s.campaigns.as_slice()).unwrap_or_default();
        let current: HashSet<uuid::Uuid> = campaigns.iter().map(|c| c.campaign).collect();
        for gone in exported.difference(&current) {
            let campaign = gone.to_string();
            metrics::gauge!(metric::CAMPAIGN_COMPLAINT_RATIO, "campaign" => campaign.clone())
                .set(0.0);
            metrics::gauge!(metric::CAMPAIGN_DELIVERED, "campaign" => campaign).set(0.0);
        }
        for values in campaigns {
            let campaign = values.campaign.to_string();
            let ratio = if values.delivered > 0 {
                values.complained as f64 / values.delivered as f64
            } else {
                0.0
            };
            metrics::gauge!(metric::CAMPAIGN_COMPLAINT_RATIO, "campaign" => campaign.clone())
                .set(ratio);
            metrics::gauge!(metric::CAMPAIGN_DELIVERED, "campaign" => campaign)
                .set(values.delivered as f64);
        }
        *exported = current;
    }
}
