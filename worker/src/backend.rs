//! Conveyor's apalis backend: takes job ids from the reliable Redis queue, claims
//! their rows in PostgreSQL in one batched compare-and-set, and hands apalis only
//! jobs this worker now owns. A fetch never takes more ids than the worker has free
//! slots, so no claimed job waits in a buffer.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::Task;
use apalis_core::worker::context::WorkerContext;
use shared::db::jobs::{self, ClaimedJob};
use shared::queue::Consumer;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tower::layer::util::Identity;
use uuid::Uuid;

use crate::bookkeeper::Acker;

/// A claimed job and the slot it occupies until its outcome is recorded.
#[derive(Debug)]
pub struct Job {
    pub row: ClaimedJob,
    pub slot: OwnedSemaphorePermit,
}

#[derive(Debug, thiserror::Error)]
#[error("the job feed of queue {0} stopped")]
pub struct FeedClosed(pub String);

/// The apalis side: a stream of claimed jobs fed by [`Feeder`].
pub struct JobBackend {
    queue: String,
    jobs: mpsc::Receiver<Job>,
}

impl JobBackend {
    pub fn new(queue: String, jobs: mpsc::Receiver<Job>) -> Self {
        JobBackend { queue, jobs }
    }
}

impl Backend for JobBackend {
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
            // The feeder stopped (shutdown): no more tasks.
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

impl BackendConfig for JobBackend {
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

/// Feeds one queue: waits for free slots, takes that many ids, claims them.
pub struct Feeder {
    pub consumer: Consumer,
    pub pool: PgPool,
    pub slots: Arc<Semaphore>,
    pub jobs: mpsc::Sender<Job>,
    pub acker: Acker,
    pub heartbeat_timeout: Duration,
    pub running: crate::bookkeeper::Running,
}

impl Feeder {
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

    /// Claims `ids`; acknowledges at once the ones that were not claimable.
    async fn claim(&self, ids: &[String]) -> Result<Vec<ClaimedJob>, sqlx::Error> {
        let parsed: Vec<Uuid> = ids
            .iter()
            .filter_map(|id| Uuid::parse_str(id).ok())
            .collect();
        let stale_before = OffsetDateTime::now_utc() - self.heartbeat_timeout;
        let claimed =
            jobs::claim(&self.pool, &parsed, self.consumer.worker(), stale_before).await?;
        if claimed.len() < ids.len() {
            let owned: std::collections::HashSet<String> =
                claimed.iter().map(|j| j.id.to_string()).collect();
            let noops: Vec<&String> = ids.iter().filter(|id| !owned.contains(*id)).collect();
            tracing::debug!(
                count = noops.len(),
                "duplicate deliveries acknowledged as no-ops"
            );
            metrics::counter!(shared::telemetry::metric::JOBS_DUPLICATE_TOTAL, "queue" => self.consumer.queue().name().as_str())
                .increment(noops.len() as u64);
            self.acker.ack(&noops).await;
        }
        if !claimed.is_empty() {
            let requests: Vec<Uuid> = claimed.iter().map(|j| j.request_id).collect();
            if let Ok(rows) = shared::db::requests::mark_running(&self.pool, &requests).await {
                shared::events::publish(self.acker.redis(), &rows).await;
            }
        }
        Ok(claimed)
    }
}

fn pause(failures: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << failures.min(6)).min(5_000))
}
