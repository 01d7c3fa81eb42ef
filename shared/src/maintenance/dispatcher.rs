//! The outbox's other half. After a submission commits, [`push_committed`] pushes its
//! job ids to Redis (they were inserted stamped dispatched); if that fails the client
//! still has its 202, the stamp is cleared and the [`Dispatcher`] pushes them on its
//! next round. The same round is the
//! reconciler: it re-pushes jobs Redis lost (pushed but never claimed within the
//! redelivery timeout, retries past due, running jobs whose worker went silent), and
//! sets the backlog gauge. Safe in every replica: rows are taken `FOR UPDATE SKIP
//! LOCKED`.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::jobs::{self, LostJob};
use crate::domain::JobStatus;
use crate::queue::{Lane, Queue, QueueName};
use crate::redis::Redis;
use crate::telemetry::metric;

/// Rows per dispatcher transaction.
const BATCH: i64 = 5000;

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Pushes the ids of jobs just committed (inserted stamped dispatched, see
/// [`jobs::insert_many`]) to their lane. If the push fails the stamp is cleared, so
/// the dispatcher pushes them on its next round; if even that fails, the reconciler
/// re-pushes them after the redelivery timeout. Failure is logged, never returned.
pub async fn push_committed(
    pool: &PgPool,
    redis: &Redis,
    queue: QueueName,
    lane: Lane,
    ids: &[Uuid],
) {
    if ids.is_empty() {
        return;
    }
    let strings: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    if let Err(err) = Queue::new(redis.clone(), queue)
        .push_to(lane, &strings)
        .await
    {
        tracing::warn!(error = %err, jobs = ids.len(), "cannot push jobs to Redis; the dispatcher will");
        if let Err(err) = jobs::undispatch(pool, ids).await {
            tracing::warn!(error = %err, jobs = ids.len(), "cannot hand the jobs to the dispatcher; the reconciler will re-push them");
        }
        return;
    }
    metrics::counter!(metric::JOBS_DISPATCHED_TOTAL, "queue" => queue.as_str(), "source" => "request")
        .increment(ids.len() as u64);
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Committed jobs pushed for the first time.
    pub dispatched: usize,
    /// Jobs pushed again because Redis lost them.
    pub redelivered: usize,
    /// Jobs still committed but not pushed after the round.
    pub backlog: i64,
}

#[derive(Debug, Clone)]
pub struct Dispatcher {
    pub pool: PgPool,
    pub redis: Redis,
    /// A job pushed but not claimed for this long is pushed again.
    pub redelivery_timeout: Duration,
}

impl Dispatcher {
    pub fn new(pool: PgPool, redis: Redis, redelivery_timeout: Duration) -> Self {
        Dispatcher {
            pool,
            redis,
            redelivery_timeout,
        }
    }

    pub async fn round(&self) -> Result<Round, DispatchError> {
        let mut round = Round::default();
        loop {
            let mut tx = self.pool.begin().await?;
            let batch = jobs::lock_undispatched(&mut tx, BATCH).await?;
            let n = batch.len();
            round.dispatched += self.push_locked(&mut tx, batch, "dispatcher").await?;
            tx.commit().await?;
            if n < usize::try_from(BATCH).unwrap_or(usize::MAX) {
                break;
            }
        }
        let before = OffsetDateTime::now_utc() - self.redelivery_timeout;
        let mut tx = self.pool.begin().await?;
        let lost = jobs::lock_lost(&mut tx, before, BATCH).await?;
        let lost = self.skip_still_queued(lost).await;
        round.redelivered = self.push_locked(&mut tx, lost, "reconciler").await?;
        tx.commit().await?;
        round.backlog = jobs::count_undispatched(&self.pool).await?;
        metrics::gauge!(metric::DISPATCHER_BACKLOG).set(round.backlog as f64);
        Ok(round)
    }

    /// A queued job that is not claimed may simply wait behind a long backlog: re-push
    /// queued jobs of a queue only when its ready list is empty (then Redis lost them).
    async fn skip_still_queued(&self, lost: Vec<LostJob>) -> Vec<(Uuid, QueueName, Option<Uuid>)> {
        let mut ready_len: HashMap<QueueName, u64> = HashMap::new();
        let mut kept = Vec::with_capacity(lost.len());
        for job in lost {
            if job.status == JobStatus::Queued {
                let len = match ready_len.get(&job.queue) {
                    Some(len) => *len,
                    None => {
                        let len = Queue::new(self.redis.clone(), job.queue)
                            .depth()
                            .await
                            .map(|(ready, _)| ready)
                            .unwrap_or(0);
                        ready_len.insert(job.queue, len);
                        len
                    }
                };
                if len > 0 {
                    continue;
                }
            }
            kept.push((job.id, job.queue, job.lane_owner));
        }
        kept
    }

    async fn push_locked(
        &self,
        tx: &mut sqlx::PgConnection,
        rows: Vec<(Uuid, QueueName, Option<Uuid>)>,
        source: &'static str,
    ) -> Result<usize, DispatchError> {
        // By queue and lane, each group in the rows' order.
        let mut groups: Vec<((QueueName, Lane), Vec<Uuid>)> = Vec::new();
        for (id, queue, owner) in rows {
            let key = (queue, Lane::of(owner));
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, ids)) => ids.push(id),
                None => groups.push((key, vec![id])),
            }
        }
        let mut pushed = 0;
        for ((queue, lane), ids) in groups {
            let strings: Vec<String> = ids.iter().map(Uuid::to_string).collect();
            Queue::new(self.redis.clone(), queue)
                .push_to(lane, &strings)
                .await?;
            jobs::mark_dispatched(&mut *tx, &ids).await?;
            metrics::counter!(metric::JOBS_DISPATCHED_TOTAL, "queue" => queue.as_str(), "source" => source)
                .increment(ids.len() as u64);
            if source == "reconciler" {
                tracing::warn!(queue = %queue, jobs = ids.len(), "re-pushed jobs Redis seems to have lost");
            }
            pushed += ids.len();
        }
        Ok(pushed)
    }
}
