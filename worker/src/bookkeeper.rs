//! Recording outcomes: handlers report each job's result here; the bookkeeper writes
//! them to PostgreSQL in batches (whatever arrived since the last write, one
//! transaction), then schedules retries and acknowledges the ids in Redis — in that
//! order, so a crash between the two only causes a redelivery that is a no-op.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use shared::db::jobs::{self, Failure};
use shared::queue::{Queue, QueueName};
use shared::redis::Redis;
use shared::telemetry::metric;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Outcomes written per transaction, at most.
const BATCH: usize = 512;

/// Removes ids from a consumer's in-flight list.
#[derive(Clone, Debug)]
pub struct Acker {
    queue: Queue,
    worker: String,
    redis: Redis,
}

impl Acker {
    pub fn new(redis: Redis, queue: Queue, worker: String) -> Self {
        Acker {
            queue,
            worker,
            redis,
        }
    }

    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    pub async fn ack<S: AsRef<str>>(&self, ids: &[S]) {
        let inflight = self.redis.key(&format!(
            "queue:{}:inflight:{}",
            self.queue.name(),
            self.worker
        ));
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.lrem(&inflight, 1, id.as_ref()).ignore();
        }
        let mut conn = self.redis.connection();
        if let Err(err) = pipe.query_async::<()>(&mut conn).await {
            // The ids stay in flight; the reaper or the claim check makes this harmless.
            tracing::warn!(error = %err, "cannot acknowledge jobs in Redis");
        }
    }
}

/// The ids of jobs this process is running (for heartbeats).
#[derive(Clone, Debug, Default)]
pub struct Running(Arc<Mutex<HashSet<Uuid>>>);

impl Running {
    pub fn insert(&self, id: Uuid) {
        if let Ok(mut set) = self.0.lock() {
            set.insert(id);
        }
    }

    pub fn remove(&self, id: &Uuid) {
        if let Ok(mut set) = self.0.lock() {
            set.remove(id);
        }
    }

    pub fn snapshot(&self) -> Vec<Uuid> {
        self.0
            .lock()
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// How a job ended this attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Transient: try again at the given time, if attempts remain.
    Retry {
        error: String,
        at: SystemTime,
    },
    /// Permanent, or nothing more to try.
    Dead {
        error: String,
    },
}

#[derive(Debug)]
struct Report {
    queue: QueueName,
    id: Uuid,
    outcome: Outcome,
    started: std::time::Instant,
    done: oneshot::Sender<()>,
}

/// The handlers' end: report an outcome and wait until it is recorded.
#[derive(Clone, Debug)]
pub struct Recorder {
    tx: mpsc::Sender<Report>,
}

impl Recorder {
    pub async fn record(
        &self,
        queue: QueueName,
        id: Uuid,
        outcome: Outcome,
        started: std::time::Instant,
    ) {
        let (done, recorded) = oneshot::channel();
        if self
            .tx
            .send(Report {
                queue,
                id,
                outcome,
                started,
                done,
            })
            .await
            .is_ok()
        {
            let _ = recorded.await;
        }
    }
}

pub struct Bookkeeper {
    pool: PgPool,
    redis: Redis,
    ackers: HashMap<QueueName, Acker>,
    running: Running,
    rx: mpsc::Receiver<Report>,
}

impl Bookkeeper {
    pub fn new(
        pool: PgPool,
        redis: Redis,
        ackers: HashMap<QueueName, Acker>,
        running: Running,
    ) -> (Self, Recorder) {
        let (tx, rx) = mpsc::channel(4 * BATCH);
        (
            Bookkeeper {
                pool,
                redis,
                ackers,
                running,
                rx,
            },
            Recorder { tx },
        )
    }

    /// Runs until every `Recorder` is dropped and every report is written.
    pub async fn run(mut self) {
        while let Some(first) = self.rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match self.rx.try_recv() {
                    Ok(report) => batch.push(report),
                    Err(_) => break,
                }
            }
            let mut attempt = 0u32;
            // PostgreSQL down: keep the batch and retry; handlers wait meanwhile.
            while let Err(err) = self.write(&batch).await {
                attempt += 1;
                tracing::error!(error = %err, attempt, "cannot record job outcomes; retrying");
                tokio::time::sleep(Duration::from_millis(200u64 * u64::from(attempt.min(25))))
                    .await;
            }
            for report in batch {
                self.running.remove(&report.id);
                let _ = report.done.send(());
            }
        }
    }

    async fn write(&self, batch: &[Report]) -> Result<(), sqlx::Error> {
        let succeeded: Vec<Uuid> = batch
            .iter()
            .filter(|r| r.outcome == Outcome::Succeeded)
            .map(|r| r.id)
            .collect();
        let failures: Vec<Failure> = batch
            .iter()
            .filter_map(|r| match &r.outcome {
                Outcome::Succeeded => None,
                Outcome::Retry { error, at } => Some(Failure {
                    id: r.id,
                    error: error.clone(),
                    retry_at: Some(OffsetDateTime::from(*at)),
                }),
                Outcome::Dead { error } => Some(Failure {
                    id: r.id,
                    error: error.clone(),
                    retry_at: None,
                }),
            })
            .collect();
        let mut tx = self.pool.begin().await?;
        let mut ended = jobs::succeed(&mut tx, &succeeded).await?;
        let (retried, dead) = if failures.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            jobs::fail(&mut tx, &failures).await?
        };
        ended.extend(dead);
        let touched: Vec<Uuid> = ended.iter().map(|e| e.request_id).collect();
        let finished = shared::db::requests::finish_completed(&mut *tx, &touched).await?;
        tx.commit().await?;

        // Metrics and events, then Redis: retries into the delayed set, then acks.
        for report in batch {
            let (label, queue) = (
                outcome_label(&report.outcome, &retried, report.id),
                report.queue.as_str(),
            );
            metrics::counter!(metric::JOBS_FINISHED_TOTAL, "queue" => queue, "outcome" => label)
                .increment(1);
            metrics::histogram!(metric::JOB_DURATION_SECONDS, "queue" => queue, "outcome" => label)
                .record(report.started.elapsed().as_secs_f64());
        }
        let mut changed: Vec<Uuid> = touched.clone();
        changed.retain(|id| !finished.iter().any(|f| f.id == *id));
        let mut rows = finished;
        if !changed.is_empty() {
            changed.sort_unstable();
            changed.dedup();
            rows.extend(shared::db::requests::find_many(&self.pool, &changed).await?);
        }
        shared::events::publish(&self.redis, &rows).await;

        for (queue, acker) in &self.ackers {
            let mine: Vec<&Report> = batch.iter().filter(|r| r.queue == *queue).collect();
            if mine.is_empty() {
                continue;
            }
            let retries: Vec<(String, SystemTime)> = mine
                .iter()
                .filter(|r| retried.contains(&r.id))
                .filter_map(|r| match &r.outcome {
                    Outcome::Retry { at, .. } => Some((r.id.to_string(), *at)),
                    _ => None,
                })
                .collect();
            if let Err(err) = Queue::new(self.redis.clone(), *queue)
                .schedule(&retries)
                .await
            {
                // The reconciler re-pushes retries that are overdue.
                tracing::warn!(error = %err, "cannot schedule retries in Redis");
            }
            let ids: Vec<String> = mine.iter().map(|r| r.id.to_string()).collect();
            acker.ack(&ids).await;
        }
        Ok(())
    }
}

fn outcome_label(outcome: &Outcome, retried: &[Uuid], id: Uuid) -> &'static str {
    match outcome {
        Outcome::Succeeded => "succeeded",
        Outcome::Retry { .. } if retried.contains(&id) => "retried",
        Outcome::Retry { .. } | Outcome::Dead { .. } => "dead",
    }
}
