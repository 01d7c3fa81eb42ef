//! The completer: every job and request status change after the claim. Executors
//! report verdicts; the completer writes whatever arrived since its last write in one
//! transaction — with the follow-up jobs of the successes, the jobs that waited for
//! the ones that ended (released) and the completion webhooks of the requests it
//! finishes, through the one enqueue path — and only then, once,
//! from what that commit returned: metrics, status events, the new jobs' dispatch,
//! retries into Redis's delayed set, acknowledgements. A failed write is
//! retried as a write; the side effects never run twice and never run for a write
//! that did not happen. A crash between commit and ack only causes a redelivery,
//! which the claim turns into a no-op.
//!
//! An executor's slot is free once its verdict is handed over, not once it is written:
//! the producer claims the next jobs while the completer commits, so the queue's
//! concurrency is spent running handlers rather than waiting for PostgreSQL. At most
//! [`UNWRITTEN`] verdicts per process wait to be written (then executors wait). A
//! process that dies holding them loses nothing: their jobs are still `running` in
//! PostgreSQL and in its in-flight lists, so they are redelivered and run again
//! (at-least-once), exactly as if it had died mid-job.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use shared::Config;
use shared::config::QueuesConfig;
use shared::db::jobs::{self, Deferral, Failure};
use shared::db::requests::{self, RequestRow};
use shared::jobs::{EnqueueError, Enqueued, NewJob};
use shared::queue::{InFlight, Lane, Queue, QueueName};
use shared::redis::Redis;
use shared::telemetry::metric;
use sqlx::PgPool;
use std::sync::Arc;
use time::OffsetDateTime;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use uuid::Uuid;

use crate::running::Running;
use crate::signals::{Signal, Signals};

/// Outcomes written per transaction, at most.
pub const BATCH: usize = 512;
/// Verdicts handed over and not yet written, per process, at most.
pub const UNWRITTEN: usize = 2 * BATCH;

/// What the executor decided for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Succeeded,
    /// Retry at `at` (attempts remain).
    Retry {
        error: String,
        at: SystemTime,
    },
    /// Permanent, or no attempts left.
    Dead {
        error: String,
    },
    /// Never sent: every recipient is suppressed.
    Suppressed,
    /// Run again at `at` without spending the attempt (pacing).
    Deferred {
        at: SystemTime,
        reason: String,
    },
}

impl Verdict {
    /// When the job runs again, if it does.
    fn again_at(&self) -> Option<SystemTime> {
        match self {
            Verdict::Retry { at, .. } | Verdict::Deferred { at, .. } => Some(*at),
            _ => None,
        }
    }
}

/// One attempt's end, on its way to the completer.
#[derive(Debug)]
pub struct Report {
    pub queue: QueueName,
    pub id: Uuid,
    pub request_id: Option<Uuid>,
    pub verdict: Verdict,
    /// Jobs to insert if (and only if) this success is recorded.
    pub follow_ups: Vec<NewJob>,
    pub started: Instant,
    /// The lane a retry goes back to.
    pub lane: Lane,
    /// Its place among the [`UNWRITTEN`] verdicts; freed once written.
    unwritten: Option<OwnedSemaphorePermit>,
}

impl Report {
    pub fn new(
        queue: QueueName,
        id: Uuid,
        request_id: Option<Uuid>,
        verdict: Verdict,
        started: Instant,
    ) -> Self {
        Report {
            queue,
            id,
            request_id,
            verdict,
            follow_ups: Vec::new(),
            started,
            lane: Lane::Priority,
            unwritten: None,
        }
    }

    /// The report of a job of `lane` (its retry goes back there).
    pub fn in_lane(mut self, lane: Lane) -> Self {
        self.lane = lane;
        self
    }

    /// A success these jobs follow.
    pub fn followed_by(mut self, jobs: Vec<NewJob>) -> Self {
        self.follow_ups = jobs;
        self
    }
}

/// The executors' end: hand a verdict to the completer (waiting only while
/// [`UNWRITTEN`] verdicts are already waiting to be written).
#[derive(Clone, Debug)]
pub struct Recorder {
    tx: mpsc::Sender<Report>,
    unwritten: Arc<Semaphore>,
}

impl Recorder {
    #[cfg(test)]
    pub(crate) fn for_tests(tx: mpsc::Sender<Report>) -> Self {
        Recorder {
            tx,
            unwritten: Arc::new(Semaphore::new(UNWRITTEN)),
        }
    }

    pub async fn record(&self, mut report: Report) {
        // The semaphore is never closed; without a permit the report goes unbounded.
        report.unwritten = self.unwritten.clone().acquire_owned().await.ok();
        let _ = self.tx.send(report).await;
    }
}

/// What one transaction changed: the basis of every side effect that follows it.
#[derive(Debug, Default, Clone)]
pub struct Committed {
    pub succeeded: HashSet<Uuid>,
    pub retried: HashSet<Uuid>,
    pub dead: HashSet<Uuid>,
    pub suppressed: HashSet<Uuid>,
    pub deferred: HashSet<Uuid>,
    /// The requests whose counts or status changed, as the transaction left them.
    pub requests: Vec<RequestRow>,
    /// Jobs the transaction inserted (follow-ups, completion webhooks) or released from
    /// waiting, to dispatch.
    pub enqueued: Enqueued,
}

impl Committed {
    /// How a reported job ended, if the write changed it (a late duplicate did not).
    pub fn outcome_of(&self, id: &Uuid) -> Option<&'static str> {
        if self.succeeded.contains(id) {
            Some("succeeded")
        } else if self.retried.contains(id) {
            Some("retried")
        } else if self.dead.contains(id) {
            Some("dead")
        } else if self.suppressed.contains(id) {
            Some("suppressed")
        } else if self.deferred.contains(id) {
            Some("deferred")
        } else {
            None
        }
    }
}

pub struct Completer {
    pool: PgPool,
    redis: Redis,
    config: Arc<Config>,
    signals: Signals,
    in_flight: HashMap<QueueName, InFlight>,
    running: Running,
    rx: mpsc::Receiver<Report>,
}

impl Completer {
    /// `in_flight`: each queue's consumer list, where acknowledgements go.
    pub fn new(
        config: Arc<Config>,
        pool: PgPool,
        redis: Redis,
        in_flight: HashMap<QueueName, InFlight>,
        running: Running,
    ) -> (Self, Recorder) {
        let (tx, rx) = mpsc::channel(UNWRITTEN);
        (
            Completer {
                pool,
                redis,
                config,
                signals: Signals::default(),
                in_flight,
                running,
                rx,
            },
            Recorder {
                tx,
                unwritten: Arc::new(Semaphore::new(UNWRITTEN)),
            },
        )
    }

    /// Sends a [`Signal::Committed`] after each commit (tests).
    pub fn with_signals(mut self, signals: Signals) -> Self {
        self.signals = signals;
        self
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
            // PostgreSQL down: keep the batch and retry the write; executors wait.
            let committed = loop {
                match write(&self.pool, &self.config.queues, &batch).await {
                    Ok(committed) => break committed,
                    Err(err) => {
                        attempt += 1;
                        tracing::error!(error = %err, attempt, "cannot record job outcomes; retrying");
                        tokio::time::sleep(Duration::from_millis(
                            200u64 * u64::from(attempt.min(25)),
                        ))
                        .await;
                    }
                }
            };
            self.after_commit(&batch, &committed).await;
            self.signals.send(|| {
                Signal::Committed(
                    batch
                        .iter()
                        .filter_map(|r| committed.outcome_of(&r.id).map(|o| (r.id, o)))
                        .collect(),
                )
            });
            for report in batch {
                self.running.remove(&report.id);
                // Dropping the report frees its place among the unwritten verdicts.
            }
        }
    }

    /// The side effects of one commit, run exactly once. Failures are logged: Redis
    /// trouble here delays a retry (the reconciler re-pushes it) or leaves an id in
    /// flight (its redelivery is a no-op), it never changes a recorded outcome.
    async fn after_commit(&self, batch: &[Report], committed: &Committed) {
        for report in batch {
            let queue = report.queue.as_str();
            match committed.outcome_of(&report.id) {
                Some(outcome) => {
                    metrics::counter!(metric::JOBS_FINISHED_TOTAL, "queue" => queue, "outcome" => outcome)
                        .increment(1);
                    metrics::histogram!(metric::JOB_DURATION_SECONDS, "queue" => queue, "outcome" => outcome)
                        .record(report.started.elapsed().as_secs_f64());
                }
                None => {
                    tracing::debug!(job_id = %report.id, "outcome of a job no longer running ignored")
                }
            }
        }
        shared::events::publish(&self.redis, &committed.requests).await;
        committed.enqueued.dispatch(&self.pool, &self.redis).await;
        let mut by_queue: HashMap<QueueName, Vec<&Report>> = HashMap::new();
        for report in batch {
            by_queue.entry(report.queue).or_default().push(report);
        }
        for (queue, reports) in by_queue {
            let mut retries: HashMap<Lane, Vec<(String, SystemTime)>> = HashMap::new();
            let again = reports.iter().filter(|r| {
                committed.retried.contains(&r.id) || committed.deferred.contains(&r.id)
            });
            for report in again {
                if let Some(at) = report.verdict.again_at() {
                    retries
                        .entry(report.lane)
                        .or_default()
                        .push((report.id.to_string(), at));
                }
            }
            for (lane, due) in retries {
                if let Err(err) = Queue::new(self.redis.clone(), queue)
                    .schedule_in(lane, &due)
                    .await
                {
                    tracing::warn!(error = %err, "cannot schedule retries in Redis; the reconciler will");
                }
            }
            let ids: Vec<String> = reports.iter().map(|r| r.id.to_string()).collect();
            match self.in_flight.get(&queue) {
                Some(in_flight) => {
                    if let Err(err) = in_flight.ack(&ids).await {
                        tracing::warn!(error = %err, "cannot acknowledge jobs in Redis");
                    }
                }
                None => {
                    tracing::error!(queue = %queue, "a report for a queue this process does not consume")
                }
            }
        }
    }
}

/// Writes a batch of verdicts in one transaction and returns what changed.
pub async fn write(
    pool: &PgPool,
    queues: &QueuesConfig,
    batch: &[Report],
) -> Result<Committed, EnqueueError> {
    let succeeded: Vec<Uuid> = batch
        .iter()
        .filter(|r| r.verdict == Verdict::Succeeded)
        .map(|r| r.id)
        .collect();
    let suppressed: Vec<Uuid> = batch
        .iter()
        .filter(|r| r.verdict == Verdict::Suppressed)
        .map(|r| r.id)
        .collect();
    let deferrals: Vec<Deferral> = batch
        .iter()
        .filter_map(|r| match &r.verdict {
            Verdict::Deferred { at, reason } => Some(Deferral {
                id: r.id,
                at: OffsetDateTime::from(*at),
                reason: shared::domain::email::redact_addresses(reason),
            }),
            _ => None,
        })
        .collect();
    let failures: Vec<Failure> = batch
        .iter()
        .filter_map(|r| match &r.verdict {
            Verdict::Succeeded | Verdict::Suppressed | Verdict::Deferred { .. } => None,
            Verdict::Retry { error, at } => Some(Failure {
                id: r.id,
                error: error.clone(),
                retry_at: Some(OffsetDateTime::from(*at)),
            }),
            Verdict::Dead { error } => Some(Failure {
                id: r.id,
                error: error.clone(),
                retry_at: None,
            }),
        })
        .collect();
    let mut tx = pool.begin().await?;
    let succeeded: HashSet<Uuid> = jobs::succeed(&mut tx, &succeeded)
        .await?
        .into_iter()
        .collect();
    let retried: HashSet<Uuid> = jobs::schedule_retry(&mut tx, &failures)
        .await?
        .into_iter()
        .collect();
    // Retries the database refused (no attempts left) die with their error.
    let to_bury: Vec<&Failure> = failures
        .iter()
        .filter(|f| !retried.contains(&f.id))
        .collect();
    let dead: HashSet<Uuid> = jobs::bury(&mut tx, &to_bury).await?.into_iter().collect();
    let suppressed: HashSet<Uuid> = jobs::suppress(&mut tx, &suppressed)
        .await?
        .into_iter()
        .collect();
    let deferred: HashSet<Uuid> = jobs::defer(&mut tx, &deferrals)
        .await?
        .into_iter()
        .collect();
    let mut enqueued = enqueue_follow_ups(&mut tx, queues, batch, &succeeded).await?;
    // After the statements that recorded the outcomes (see `jobs::release_dependents`):
    // the jobs waiting for these are queued if they wait for nothing else, to be
    // dispatched with the follow-ups. A success's waits moved to its follow-ups above.
    let finished: Vec<Uuid> = succeeded
        .iter()
        .chain(&dead)
        .chain(&suppressed)
        .copied()
        .collect();
    let released = jobs::release_dependents(&mut tx, &finished).await?;
    enqueued.merge(Enqueued::released(&released));
    let mut touched: Vec<Uuid> = batch
        .iter()
        .filter(|r| succeeded.contains(&r.id) || dead.contains(&r.id) || suppressed.contains(&r.id))
        .filter_map(|r| r.request_id)
        .collect();
    touched.sort_unstable();
    touched.dedup();
    let requests = if touched.is_empty() {
        Vec::new()
    } else {
        let finished = requests::finish(&mut tx, queues, &touched).await?;
        enqueued.merge(finished.webhooks);
        requests::find_many(&mut *tx, &touched).await?
    };
    tx.commit().await?;
    Ok(Committed {
        succeeded,
        retried,
        dead,
        suppressed,
        deferred,
        requests,
        enqueued,
    })
}

/// The follow-up jobs of the successes this transaction records, inserted through the
/// one enqueue path; a follow-up that carries out part of a request joins its total
/// (so the request stays open until it has run too), and the jobs waiting for the job
/// it follows wait for it too (`jobs::transfer_dependents`).
async fn enqueue_follow_ups(
    tx: &mut sqlx::PgConnection,
    queues: &QueuesConfig,
    batch: &[Report],
    succeeded: &HashSet<Uuid>,
) -> Result<Enqueued, EnqueueError> {
    let follow_ups: Vec<NewJob> = batch
        .iter()
        .filter(|r| succeeded.contains(&r.id))
        .flat_map(|r| r.follow_ups.iter().cloned())
        .collect();
    if follow_ups.is_empty() {
        return Ok(Enqueued::default());
    }
    let enqueued = shared::jobs::enqueue_many(&mut *tx, queues, &follow_ups).await?;
    let inserted: HashSet<Uuid> = enqueued.ids().collect();
    let mut joining: HashMap<Uuid, i32> = HashMap::new();
    for job in follow_ups.iter().filter(|j| inserted.contains(&j.id)) {
        if let Some(request) = job.request_id {
            *joining.entry(request).or_default() += 1;
        }
    }
    for (request, n) in joining {
        requests::add_jobs(&mut *tx, request, n).await?;
    }
    let moves: Vec<(Uuid, Uuid)> = batch
        .iter()
        .filter(|r| succeeded.contains(&r.id))
        .flat_map(|r| {
            r.follow_ups
                .iter()
                .filter(|job| inserted.contains(&job.id))
                .map(|job| (r.id, job.id))
        })
        .collect();
    jobs::transfer_dependents(&mut *tx, &moves).await?;
    Ok(enqueued)
}
