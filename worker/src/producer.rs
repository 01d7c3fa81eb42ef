//! The producer: waits for free slots, takes that many ids from the queue's ready
//! list (a blocking move into this consumer's in-flight list), claims their rows in
//! PostgreSQL in one compare-and-set, and hands apalis only jobs this worker now
//! owns — through [`ClaimedJobs`], the apalis backend. Ids it could not claim are
//! duplicate deliveries: acknowledged at once as no-ops.

use std::collections::HashSet;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::Task;
use apalis_core::worker::context::WorkerContext;
use shared::db::jobs::{self, ClaimedJob};
use shared::queue::Consumer;
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
}

impl Producer {
    /// Runs until `stop` turns true. Redis or PostgreSQL errors are retried with a
    /// capped backoff; only a closed job channel ends the feed early.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), FeedClosed> {
        let queue = self.consumer.queue().name().to_string();
        let mut failures: u32 = 0;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let first = tokio::select! {
                permit = self.slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return Ok(()),
                },
                _ = stop.changed() => return Ok(()),
            };
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

    /// Claims `ids`; acknowledges at once the ones that were not claimable; marks the
    /// requests of the claimed ones running.
    async fn claim(&self, ids: &[String]) -> Result<Vec<ClaimedJob>, sqlx::Error> {
        let parsed: Vec<Uuid> = ids
            .iter()
            .filter_map(|id| Uuid::parse_str(id).ok())
            .collect();
        let stale_before = OffsetDateTime::now_utc() - self.heartbeat_timeout;
        let claimed =
            jobs::claim(&self.pool, &parsed, self.consumer.worker(), stale_before).await?;
        if claimed.len() < ids.len() {
            let owned: HashSet<String> = claimed.iter().map(|j| j.id.to_string()).collect();
            let noops: Vec<&String> = ids.iter().filter(|id| !owned.contains(*id)).collect();
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
        if !claimed.is_empty() {
            let requests: Vec<Uuid> = claimed.iter().map(|j| j.request_id).collect();
            match shared::db::requests::mark_running(&self.pool, &requests).await {
                Ok(rows) => shared::events::publish(&self.redis, &rows).await,
                Err(err) => tracing::warn!(error = %err, "cannot mark requests running"),
            }
        }
        Ok(claimed)
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
