//! The producer: waits for free slots, takes that many ids from the queue's ready
//! list (a blocking move into this consumer's in-flight list), claims their rows in
//! PostgreSQL in one compare-and-set, and hands apalis only jobs this worker now
//! owns — through [`ClaimedJobs`], the apalis backend. Ids it could not claim are
//! duplicate deliveries: acknowledged at once as no-ops — except jobs delivered
//! before their `run_after` (a scheduled send or retry pushed early), which go back
//! to the delayed set for their time first. While an operator has paused
//! the queue it takes nothing (jobs already running finish): it checks the process's
//! [`PauseWatch`] before each fetch, and gives back ids a fetch returned after the
//! pause was seen.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::Task;
use apalis_core::worker::context::WorkerContext;
use shared::db::jobs::{self, ClaimedJob};
use shared::queue::pause::PauseWatch;
use shared::queue::{Consumer, Lane};
use shared::redis::Redis;
use shared::telemetry::metric;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tower::layer::util::Identity;
use uuid::Uuid;

use crate::running::Running;

/// A claimed job and the slot it occupies until its verdict is recorded.
#[derive(Debug)]
pub struct Job {
    pub row: ClaimedJob,
    pub slot: OwnedSemaphorePermit,
}

/// The producer stopped early: the executor side is gone.
#[derive(Debug, thiserror::Error)]
#[error("the {0} job feed closed")]
pub struct FeedClosed(pub String);

pub struct Producer {
    pub consumer: Consumer,
    pub pool: PgPool,
    pub redis: Redis,
    /// The queue's concurrency: one permit per job in progress.
    pub slots: Arc<Semaphore>,
    pub jobs: mpsc::Sender<Job>,
    /// A running job whose heartbeat is older than this may be claimed again.
    pub heartbeat_timeout: Duration,
    pub running: Running,
    /// The operators' pause switch, as this process last read it.
    pub pause: PauseWatch,
    /// Closed while a dependency the queue needs is down.
    pub gate: crate::gate::Gate,
}

impl Producer {
    /// Runs until `stop` turns true. Redis or PostgreSQL errors are retried with a
    /// capped backoff; only a closed job channel ends the feed early.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), FeedClosed> {
        let name = self.consumer.queue().name();
        let queue = name.to_string();
        let mut failures: u32 = 0;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            if self.gate.is_blocked() {
                // A dependency of the queue is down: no new job until it answers.
                tokio::select! {
                    () = self.gate.opened() => {}
                    _ = stop.changed() => return Ok(()),
                }
                continue;
            }
            if self.pause.is_paused(name) {
                tracing::info!(queue = %queue, "queue paused: taking no new jobs");
                let resumed = tokio::select! {
                    resumed = self.pause.wait_running(name) => resumed,
                    _ = stop.changed() => return Ok(()),
                };
                if !resumed {
                    // The watch stopped while paused: paused it stays, until shutdown.
                    let _ = stop.wait_for(|stop| *stop).await;
                    return Ok(());
                }
                tracing::info!(queue = %queue, "queue resumed");
                continue;
            }
            let first = tokio::select! {
                permit = self.slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return Ok(()),
                },
                _ = stop.changed() => return Ok(()),
            };
            if self.pause.is_paused(name) {
                // Paused while every slot was busy: wait above, holding none.
                continue;
            }
            let mut slots = vec![first];
            while let Ok(permit) = self.slots.clone().try_acquire_owned() {
                slots.push(permit);
            }
            let ids = tokio::select! {
                fetched = self.consumer.fetch(slots.len()) => fetched,
                _ = stop.changed() => return Ok(()),
            };
            let ids = match ids {
                Ok(ids) => ids,
                Err(err) => {
                    failures += 1;
                    tracing::warn!(queue = %queue, error = %err, "fetching from Redis failed; reconnecting");
                    tokio::time::sleep(pause(failures)).await;
                    if let Err(err) = self.consumer.reconnect().await {
                        tracing::warn!(queue = %queue, error = %err, "Redis still unreachable");
                    }
                    continue;
                }
            };
            if ids.is_empty() {
                continue;
            }
            if self.pause.is_paused(name) || self.gate.is_blocked() {
                // A pause (or a block) arrived while the fetch waited: these stay unstarted.
                self.give_back(&ids).await;
                continue;
            }
            match self.claim(&ids).await {
                Ok(claimed) => {
                    failures = 0;
                    for row in claimed {
                        let Some(slot) = slots.pop() else { break };
                        self.running.insert(row.id);
                        if self.jobs.send(Job { row, slot }).await.is_err() {
                            return Err(FeedClosed(queue));
                        }
                    }
                }
                Err(err) => {
                    // The ids stay in this consumer's in-flight list; if this worker
                    // dies they are reaped, otherwise the reconciler re-pushes them.
                    failures += 1;
                    tracing::warn!(queue = %queue, error = %err, "claiming jobs failed; retrying");
                    tokio::time::sleep(pause(failures)).await;
                }
            }
        }
    }

    /// Claims `ids` (their requests start in the same statement); acknowledges at once
    /// the ones that were not claimable; publishes the started requests' status in the
    /// background, off the path of the next fetch.
    async fn claim(&self, ids: &[String]) -> Result<Vec<ClaimedJob>, sqlx::Error> {
        let parsed: Vec<Uuid> = ids
            .iter()
            .filter_map(|id| Uuid::parse_str(id).ok())
            .collect();
        let stale_before = OffsetDateTime::now_utc() - self.heartbeat_timeout;
        let claim =
            jobs::claim_starting(&self.pool, &parsed, self.consumer.worker(), stale_before).await?;
        let claimed = claim.jobs;
        if claimed.len() < ids.len() {
            let owned: HashSet<String> = claimed.iter().map(|j| j.id.to_string()).collect();
            let noops: Vec<&String> = ids.iter().filter(|id| !owned.contains(*id)).collect();
            self.reschedule_early(&parsed, &owned, stale_before).await;
            tracing::debug!(
                count = noops.len(),
                "duplicate deliveries acknowledged as no-ops"
            );
            metrics::counter!(metric::JOBS_DUPLICATE_TOTAL, "queue" => self.consumer.queue().name().as_str())
                .increment(noops.len() as u64);
            if let Err(err) = self.consumer.in_flight().ack(&noops).await {
                tracing::warn!(error = %err, "cannot acknowledge duplicate deliveries");
            }
        }
        if !claim.started_requests.is_empty() {
            let (pool, redis) = (self.pool.clone(), self.redis.clone());
            let started = claim.started_requests;
            tokio::spawn(async move {
                // The status may have moved on meanwhile (a fast job finished): the
                // event carries the request as it is now.
                match shared::db::requests::find_many(&pool, &started).await {
                    Ok(rows) => shared::events::publish(&redis, &rows).await,
                    Err(err) => tracing::warn!(error = %err, "cannot read started requests"),
                }
            });
        }
        Ok(claimed)
    }
}

impl Producer {
    /// Schedules again, for when they can be claimed, the jobs of `ids` not in `owned`
    /// that were delivered too early — before their `run_after`, or (given back by the
    /// reaper) before their dead worker's heartbeat was stale — so an early push neither
    /// runs them early nor loses them. A failure is logged: the reconciler pushes such a
    /// job once the redelivery timeout has passed.
    async fn reschedule_early(
        &self,
        ids: &[Uuid],
        owned: &HashSet<String>,
        stale_before: OffsetDateTime,
    ) {
        let unclaimed: Vec<Uuid> = ids
            .iter()
            .filter(|id| !owned.contains(&id.to_string()))
            .copied()
            .collect();
        let early = match jobs::not_yet_claimable(&self.pool, &unclaimed, stale_before).await {
            Ok(early) => early,
            Err(err) => {
                tracing::warn!(error = %err, "cannot tell which unclaimed jobs are not claimable yet");
                return;
            }
        };
        let mut by_lane: HashMap<Lane, Vec<(String, SystemTime)>> = HashMap::new();
        for job in early {
            by_lane
                .entry(Lane::of(job.lane_owner))
                .or_default()
                .push((job.id.to_string(), SystemTime::from(job.run_after)));
        }
        for (lane, due) in by_lane {
            match self.consumer.queue().schedule_in(lane, &due).await {
                Ok(()) => {
                    tracing::debug!(
                        jobs = due.len(),
                        "delivered before their time: scheduled again"
                    );
                }
                Err(err) => {
                    tracing::warn!(error = %err, jobs = due.len(), "cannot schedule again jobs delivered early");
                }
            }
        }
    }

    /// Returns fetched, unclaimed ids to the front of the ready list in the order they
    /// were taken, then forgets them: pushed before acknowledged, so a failure between
    /// the two leaves a duplicate (a no-op claim), never a lost id. Failures are logged;
    /// ids left in flight are returned when this process stops or dies, and the
    /// reconciler pushes again jobs that stay unclaimed.
    async fn give_back(&self, ids: &[String]) {
        let mut conn = self.redis.connection();
        // Consumers take from the right: the first id taken goes back rightmost.
        let front_first: Vec<&String> = ids.iter().rev().collect();
        let pushed: redis::RedisResult<()> = redis::cmd("RPUSH")
            .arg(self.consumer.queue().ready_key())
            .arg(&front_first)
            .query_async(&mut conn)
            .await;
        if let Err(err) = pushed {
            tracing::warn!(error = %err, jobs = ids.len(), "cannot give back jobs fetched while paused");
            return;
        }
        if let Err(err) = self.consumer.in_flight().ack(ids).await {
            tracing::warn!(error = %err, "cannot forget jobs given back while paused");
        }
    }
}

fn pause(failures: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << failures.min(6)).min(5_000))
}

/// The apalis backend of a queue: the jobs its producer claimed, in order.
pub struct ClaimedJobs {
    queue: String,
    jobs: mpsc::Receiver<Job>,
}

impl ClaimedJobs {
    pub fn new(queue: String, jobs: mpsc::Receiver<Job>) -> Self {
        ClaimedJobs { queue, jobs }
    }
}

impl Backend for ClaimedJobs {
    type Task = Task<Job>;
    type Error = FeedClosed;

    fn poll_ready(
        &mut self,
        _cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        match self.jobs.poll_recv(cx) {
            Poll::Ready(Some(job)) => Poll::Ready(Some(Ok(Task::new(job)))),
            // The producer stopped (shutdown): no more tasks.
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_close(
        &mut self,
        _cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        self.jobs.close();
        Poll::Ready(Ok(()))
    }
}

impl BackendConfig for ClaimedJobs {
    type Args = Job;
    type Id = apalis_core::task::task_id::RandomId;
    type Kind = Ephemeral;
    type Config = String;
    type Layer = Identity;

    fn config(&self) -> &Self::Config {
        &self.queue
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Self::Layer {
        Identity::new()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use redis::AsyncCommands as _;
    use shared::queue::pause;
    use shared::queue::{Queue, QueueName};

    use super::*;
    use crate::test_support::redis;

    /// The ready list in the order consumers will take it.
    async fn next_in_line(redis: &Redis, queue: &Queue) -> Vec<String> {
        let mut conn = redis.connection();
        let mut ids: Vec<String> = conn.lrange(queue.ready_key(), 0, -1).await.expect("lrange");
        ids.reverse();
        ids
    }

    #[tokio::test]
    async fn ids_fetched_after_a_pause_go_back_first_in_line_unclaimed() {
        let redis = redis();
        let queue = Queue::new(redis.clone(), QueueName::Emails);
        let consumer = queue
            .consumer("w1", Duration::from_secs(1))
            .await
            .expect("consumer");
        let (stop_tx, stop) = watch::channel(false);
        let pause = PauseWatch::start(redis.clone(), Duration::from_millis(20), stop.clone()).await;
        let (jobs_tx, mut jobs_rx) = mpsc::channel(4);
        let producer = Producer {
            consumer,
            // Never reached: a claim would fail and leave the ids in flight.
            pool: sqlx::postgres::PgPoolOptions::new()
                .connect_lazy("postgres://nobody@127.0.0.1:1/none")
                .expect("a lazy pool"),
            redis: redis.clone(),
            slots: Arc::new(Semaphore::new(4)),
            jobs: jobs_tx,
            heartbeat_timeout: Duration::from_secs(30),
            running: Running::default(),
            pause: pause.clone(),
            gate: crate::gate::Gate::new(QueueName::Emails, "w1", redis.clone()),
        };
        let in_flight = producer.consumer.in_flight().clone();
        let task = tokio::spawn(producer.run(stop));
        // Let the producer block in its fetch of the empty queue, then pause.
        tokio::time::sleep(Duration::from_millis(100)).await;
        pause::pause(&redis, QueueName::Emails)
            .await
            .expect("pause");
        let mut seen = pause.clone();
        while !seen.is_paused(QueueName::Emails) {
            assert!(seen.changed().await);
        }
        let ids: Vec<String> = (0..3).map(|n| format!("job-{n}")).collect();
        queue.push(&ids).await.expect("push");

        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let waiting = next_in_line(&redis, &queue).await;
            let held = in_flight.ids().await.expect("in flight");
            if waiting == ids && held.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "ready {waiting:?}, in flight {held:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            jobs_rx.try_recv().is_err(),
            "nothing was handed to an executor"
        );

        stop_tx.send(true).expect("stop");
        let stopped = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
        let mut conn = redis.connection();
        let keys: Vec<String> = conn
            .keys(format!("{}:*", redis.prefix()))
            .await
            .expect("keys");
        conn.del::<_, ()>(keys).await.expect("cleanup");
    }
}
