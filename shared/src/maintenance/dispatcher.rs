//! The outbox's other half. After a submission commits, [`push_committed`] pushes its
//! job ids to Redis (they were inserted stamped dispatched); if that fails the client
//! still has its 202, the stamp is cleared and the [`Dispatcher`] pushes them on its
//! next round. The same round is the
//! reconciler: it re-pushes jobs Redis lost (pushed but never claimed within the
//! redelivery timeout, retries past due, running jobs whose worker went silent), and
//! sets the backlog gauge. Safe in every replica: rows are taken `FOR UPDATE SKIP
//! LOCKED`. A job whose `run_after` is ahead (a scheduled send) goes to its queue's
//! delayed set for that time, never to a ready lane: the workers' promoter moves it
//! when due.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use sqlx::PgPool;
use time::OffsetDateTime;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::db::jobs::{self, LostJob, ToPush};
use crate::domain::JobStatus;
use crate::queue::{Lane, Queue, QueueName};
use crate::redis::Redis;
use crate::telemetry::metric;

/// Rows per dispatcher transaction.
const BATCH: i64 = 5000;

/// The key whose absence tells the dispatcher that Redis lost its data.
const MARKER: &str = "dispatch:marker";

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
    push_committed_at(pool, redis, queue, lane, ids, None).await;
}

/// [`push_committed`] for jobs that may run from `run_after` on: when that is ahead
/// (a scheduled send) the ids go to the queue's delayed set for that time, else to
/// `lane` at once.
pub async fn push_committed_at(
    pool: &PgPool,
    redis: &Redis,
    queue: QueueName,
    lane: Lane,
    ids: &[Uuid],
    run_after: Option<OffsetDateTime>,
) {
    if ids.is_empty() {
        return;
    }
    let strings: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let transport = Queue::new(redis.clone(), queue);
    let span = tracing::info_span!(
        target: "conveyor_trace",
        "redis",
        otel.name = "redis push",
        otel.kind = "client",
        db.system.name = "redis",
        db.operation.name = if run_after.is_some() {
            "ZADD"
        } else {
            "EVALSHA"
        },
        messaging.destination.name = queue.as_str(),
        messaging.batch.message_count = ids.len(),
    );
    let pushed = async {
        match run_after.filter(|at| *at > OffsetDateTime::now_utc()) {
            Some(at) => {
                let due: Vec<(&str, SystemTime)> = strings
                    .iter()
                    .map(|id| (id.as_str(), SystemTime::from(at)))
                    .collect();
                transport.schedule_in(lane, &due).await
            }
            None => transport.push_to(lane, &strings).await,
        }
    }
    .instrument(span)
    .await;
    if let Err(err) = pushed {
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
        let now = OffsetDateTime::now_utc();
        let before = now - self.redelivery_timeout;
        if self.redis_forgot().await {
            // Every id Redis held is gone: push every job waiting in it again now (a
            // scheduled one to the delayed set for its time), not after the timeout.
            let everything = now + time::Duration::days(36_500);
            loop {
                let mut tx = self.pool.begin().await?;
                let lost = jobs::lock_lost(&mut tx, everything, before, BATCH).await?;
                let n = lost.len();
                let lost = lost.into_iter().map(ToPush::from).collect();
                round.redelivered += self.push_locked(&mut tx, lost, "reconciler").await?;
                tx.commit().await?;
                if n < usize::try_from(BATCH).unwrap_or(usize::MAX) {
                    break;
                }
            }
            self.remember().await?;
            if round.redelivered > 0 {
                tracing::warn!(
                    jobs = round.redelivered,
                    "Redis lost its data (the dispatcher's marker is gone): every job waiting in it was pushed again"
                );
            }
        } else {
            let mut tx = self.pool.begin().await?;
            let lost = jobs::lock_lost(&mut tx, before, before, BATCH).await?;
            let lost = self.skip_still_queued(lost).await;
            round.redelivered = self.push_locked(&mut tx, lost, "reconciler").await?;
            tx.commit().await?;
        }
        round.backlog = jobs::count_undispatched(&self.pool).await?;
        metrics::gauge!(metric::DISPATCHER_BACKLOG).set(round.backlog as f64);
        Ok(round)
    }

    /// The marker [`Dispatcher::remember`] keeps in Redis is missing: Redis lost its
    /// data (restarted without persistence, failed over to a replica that lacked the
    /// writes, flushed), or this is the first round on it. Unknown (Redis unreachable)
    /// is not forgotten: nothing can be pushed then anyway.
    async fn redis_forgot(&self) -> bool {
        let mut conn = self.redis.connection();
        let marker: redis::RedisResult<Option<String>> = redis::cmd("GET")
            .arg(self.redis.key(MARKER))
            .query_async(&mut conn)
            .await;
        matches!(marker, Ok(None))
    }

    async fn remember(&self) -> Result<(), DispatchError> {
        let mut conn = self.redis.connection();
        let () = redis::cmd("SET")
            .arg(self.redis.key(MARKER))
            .arg("1")
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// A queued job that is not claimed may simply wait behind a long backlog: re-push
    /// queued jobs of a queue only when its ready list is empty (then Redis lost them).
    async fn skip_still_queued(&self, lost: Vec<LostJob>) -> Vec<ToPush> {
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
            kept.push(ToPush::from(job));
        }
        kept
    }

    async fn push_locked(
        &self,
        tx: &mut sqlx::PgConnection,
        rows: Vec<ToPush>,
        source: &'static str,
    ) -> Result<usize, DispatchError> {
        // By queue and lane, each group in the rows' order; within a group, the jobs
        // due now go to the lane, the scheduled ones to the delayed set for their time.
        let now = OffsetDateTime::now_utc();
        type Group = ((QueueName, Lane), Vec<Uuid>, Vec<(Uuid, SystemTime)>);
        let mut groups: Vec<Group> = Vec::new();
        for row in rows {
            let key = (row.queue, Lane::of(row.lane_owner));
            let index = match groups.iter().position(|(k, ..)| *k == key) {
                Some(index) => index,
                None => {
                    groups.push((key, Vec::new(), Vec::new()));
                    groups.len() - 1
                }
            };
            let (_, due, later) = &mut groups[index];
            match row.run_after.filter(|at| *at > now) {
                Some(at) => later.push((row.id, SystemTime::from(at))),
                None => due.push(row.id),
            }
        }
        let mut pushed = 0;
        for ((queue, lane), due, later) in groups {
            let transport = Queue::new(self.redis.clone(), queue);
            let strings: Vec<String> = due.iter().map(Uuid::to_string).collect();
            if !strings.is_empty() {
                transport.push_to(lane, &strings).await?;
            }
            let scheduled: Vec<(String, SystemTime)> =
                later.iter().map(|(id, at)| (id.to_string(), *at)).collect();
            if !scheduled.is_empty() {
                transport.schedule_in(lane, &scheduled).await?;
            }
            let ids: Vec<Uuid> = due
                .iter()
                .copied()
                .chain(later.iter().map(|(id, _)| *id))
                .collect();
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
