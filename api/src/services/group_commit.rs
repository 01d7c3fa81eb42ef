//! Group commit: concurrent submissions share one transaction, so PostgreSQL flushes
//! the WAL once for all of them, and their jobs go to Redis in one push per lane.
//!
//! A submission's handler hands the request and its message quota to
//! [`GroupCommit::submit`], which waits for the answer. One collector task
//! forms the batches: it waits for a free committer, then takes everything that
//! arrived meanwhile (up to [`MAX_BATCH`]). At low load a batch is one submission and
//! starts at once, so nothing waits for company; under load the batches grow by
//! themselves while the committers are busy. Each batch inserts every submission's
//! request and jobs in one statement (`shared::jobs::enqueue_requests`, the one enqueue
//! path for many requests: one statement start, plan and commit instead of one each;
//! every request in its submission's own trace), pushes, and only then answers: every
//! 202 is durable before it is sent.
//!
//! Each submission keeps its own answer: if one insert fails, the batch is rolled back
//! and each of its submissions is inserted alone, so a failure of one never fails its
//! neighbours. A failed commit answers the whole batch with the error (as a failed
//! commit of a lone insert does: its outcome is not known, so nothing is retried).

use std::sync::{Arc, OnceLock};

use shared::config::Config;
use shared::db::quotas::QuotaLimit;
use shared::db::requests::RequestRow;
use shared::jobs::{BatchedRequest, EnqueueError, Enqueued};
use shared::redis::Redis;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::error::ApiError;
use crate::services::requests::{self, Submission};

/// Most submissions in one transaction.
pub const MAX_BATCH: usize = 64;

/// Submissions with more jobs than this (campaigns) are inserted on their own: a large
/// insert does not hold up the small ones of its batch.
pub const MAX_GROUPED_JOBS: usize = 64;

// A whole batch fits the one statement.
const _: () = assert!(MAX_BATCH * MAX_GROUPED_JOBS <= shared::db::jobs::INSERT_CHUNK);

/// What became of a submission.
#[derive(Debug)]
pub enum Outcome {
    /// Charged, committed and pushed: the request as stored.
    Stored(Box<RequestRow>),
    /// Its quota had no room: nothing charged, nothing stored.
    OverQuota,
}

type Answer = Result<Outcome, ApiError>;

struct Pending {
    submission: Submission,
    /// The message quota to charge (for the submission's `quota`), if any.
    quota: Option<QuotaLimit>,
    /// The submitting request's span: the insert runs in it, so the jobs carry the
    /// request's trace and its spans nest under the request's.
    span: tracing::Span,
    reply: oneshot::Sender<Answer>,
}

/// The api's group commit (cheap to clone). Its collector starts with the first
/// submission, on that submission's runtime, and ends when the last clone is dropped.
#[derive(Clone)]
pub struct GroupCommit {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    redis: Redis,
    config: Arc<Config>,
    /// Batches committing at once (each holds one connection).
    committers: usize,
    sender: OnceLock<mpsc::Sender<Pending>>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("committers", &self.inner.committers)
            .finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// `committers`: batches in flight at once, each on one of `pool`'s connections.
    pub fn new(pool: PgPool, redis: Redis, config: Arc<Config>, committers: usize) -> Self {
        GroupCommit {
            inner: Arc::new(Inner {
                pool,
                redis,
                config,
                committers: committers.max(1),
                sender: OnceLock::new(),
            }),
        }
    }

    /// Whether `submission` may share a transaction: no idempotency key (the caller
    /// checks), nothing to wait for (its locks need a transaction of its own), and few
    /// jobs.
    pub fn accepts(submission: &Submission) -> bool {
        submission.wait_for.is_empty()
            && submission.jobs.len() <= MAX_GROUPED_JOBS
            && BatchedRequest::fits(&submission.jobs)
    }

    /// Charges `quota` (if any) and inserts `submission` with whatever else is being
    /// submitted, and pushes its jobs; returns once all is done.
    pub async fn submit(&self, submission: Submission, quota: Option<QuotaLimit>) -> Answer {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            submission,
            quota,
            span: tracing::Span::current(),
            reply,
        };
        if self.sender().send(pending).await.is_err() {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "the group commit has stopped"
            )));
        }
        // Dropped unanswered only if the batch's task died: its outcome is not known.
        answer.await.unwrap_or_else(|_| {
            Err(ApiError::Internal(anyhow::anyhow!(
                "the group commit ended without an answer"
            )))
        })
    }

    /// Submissions handed over and not yet taken into a batch.
    pub fn waiting(&self) -> usize {
        self.inner
            .sender
            .get()
            .map_or(0, |sender| sender.max_capacity() - sender.capacity())
    }

    fn sender(&self) -> &mpsc::Sender<Pending> {
        self.inner.sender.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(MAX_BATCH * self.inner.committers * 4);
            // The task holds the inner parts it needs, not `Inner`: it ends when the
            // last sender (in `Inner`) is dropped.
            tokio::spawn(collect(
                receiver,
                Committer {
                    pool: self.inner.pool.clone(),
                    redis: self.inner.redis.clone(),
                    config: self.inner.config.clone(),
                },
                Arc::new(Semaphore::new(self.inner.committers)),
            ));
            sender
        })
    }
}

#[derive(Clone)]
struct Committer {
    pool: PgPool,
    redis: Redis,
    config: Arc<Config>,
}

/// Forms the batches: a free committer first, then everything waiting (up to
/// [`MAX_BATCH`]; at least one).
async fn collect(
    mut receiver: mpsc::Receiver<Pending>,
    committer: Committer,
    slots: Arc<Semaphore>,
) {
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        if receiver.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        tokio::spawn(committer.clone().commit(batch, slot));
    }
}

/// Charges made for a batch, to give back if its insert fails: (owner, hour, messages).
type Charges = Vec<(Uuid, OffsetDateTime, i64)>;

impl Committer {
    async fn commit(self, batch: Vec<Pending>, _slot: OwnedSemaphorePermit) {
        metrics::histogram!(shared::telemetry::metric::INGEST_BATCH_SIZE)
            .record(batch.len() as f64);
        if batch.len() == 1 {
            for pending in batch {
                self.alone(pending).await;
            }
            return;
        }
        let (batch, charges) = self.charge(batch).await;
        if batch.is_empty() {
            return;
        }
        match self.together(&batch).await {
            Ok(Together::Committed(stored)) => {
                let receipts: Vec<Enqueued> = stored.iter().map(|(_, e)| e.clone()).collect();
                Enqueued::dispatch_together(&receipts, &self.pool, &self.redis).await;
                for (pending, (row, _)) in batch.into_iter().zip(stored) {
                    let _ = pending.reply.send(Ok(Outcome::Stored(Box::new(row))));
                }
            }
            Ok(Together::InsertFailed(err)) => {
                tracing::warn!(error = %err, submissions = batch.len(), "a grouped insert failed; inserting each submission alone");
                self.refund(charges).await;
                for pending in batch {
                    self.alone(pending).await;
                }
            }
            Err(err) => {
                self.refund(charges).await;
                for pending in batch {
                    let _ = pending.reply.send(Err(each(&err)));
                }
            }
        }
    }

    /// Charges the batch's quotas: each owner's submissions together in one statement
    /// (their messages summed), or — when the sum has no room — one by one in order, so
    /// each gets its own outcome. Returns the submissions charged (or without a quota)
    /// and what was charged; the others have their answer.
    async fn charge(&self, batch: Vec<Pending>) -> (Vec<Pending>, Charges) {
        let mut charges = Charges::new();
        let mut owners: Vec<(Uuid, QuotaLimit, Vec<Pending>)> = Vec::new();
        let mut ready = Vec::with_capacity(batch.len());
        for pending in batch {
            let Some(limit) = pending.quota else {
                ready.push(pending);
                continue;
            };
            let owner = pending.submission.owner;
            match owners.iter_mut().find(|(o, l, _)| {
                *o == owner && (l.per_hour, l.per_day) == (limit.per_hour, limit.per_day)
            }) {
                Some((_, sum, members)) => {
                    sum.messages += limit.messages;
                    members.push(pending);
                }
                None => owners.push((owner, limit, vec![pending])),
            }
        }
        for (owner, sum, members) in owners {
            if members.len() > 1 {
                match shared::db::quotas::charge(&self.pool, owner, sum).await {
                    Ok(Some(hour)) => {
                        charges.push((owner, hour, sum.messages));
                        ready.extend(members);
                        continue;
                    }
                    Ok(None) => {}
                    Err(err) => {
                        for pending in members {
                            let _ = pending.reply.send(Err(each(&err)));
                        }
                        continue;
                    }
                }
            }
            for pending in members {
                let Some(limit) = pending.quota else {
                    ready.push(pending);
                    continue;
                };
                match shared::db::quotas::charge(&self.pool, owner, limit).await {
                    Ok(Some(hour)) => {
                        charges.push((owner, hour, limit.messages));
                        ready.push(pending);
                    }
                    Ok(None) => {
                        let _ = pending.reply.send(Ok(Outcome::OverQuota));
                    }
                    Err(err) => {
                        let _ = pending.reply.send(Err(each(&err)));
                    }
                }
            }
        }
        (ready, charges)
    }

    /// Gives back charges whose submissions were not stored.
    async fn refund(&self, charges: Charges) {
        for (owner, hour, messages) in charges {
            if let Err(err) = shared::db::quotas::refund(&self.pool, owner, hour, messages).await {
                tracing::warn!(error = %err, owner = %owner, "cannot give back the quota of a failed submission");
            }
        }
    }

    /// Every submission of `batch` in one statement (`shared::jobs::enqueue_requests`:
    /// one autocommit, one WAL flush). `Err` only when its outcome is not known (the
    /// connection failed): then nothing is retried.
    async fn together(&self, batch: &[Pending]) -> Result<Together, sqlx::Error> {
        let mut requests = Vec::with_capacity(batch.len());
        for pending in batch {
            let submission = &pending.submission;
            match requests::new_request(submission, Uuid::now_v7(), submission.jobs.len()) {
                Ok(new) => requests.push(BatchedRequest {
                    new,
                    jobs: submission.jobs.clone(),
                    span: pending.span.clone(),
                }),
                Err(err) => return Ok(Together::InsertFailed(err)),
            }
        }
        let mut conn = self.pool.acquire().await?;
        match shared::jobs::enqueue_requests(&mut conn, &self.config.queues, requests).await {
            Ok(stored) => Ok(Together::Committed(stored)),
            // The statement failed, so nothing of it was stored: each goes again alone.
            Err(EnqueueError::Database(sqlx::Error::Database(err))) => Ok(Together::InsertFailed(
                ApiError::Database(sqlx::Error::Database(err)),
            )),
            Err(EnqueueError::Encode(err)) => {
                Ok(Together::InsertFailed(ApiError::Internal(err.into())))
            }
            Err(EnqueueError::Database(err)) => Err(err),
        }
    }

    /// One submission on its own: charged, inserted (or its charge given back), pushed,
    /// answered.
    async fn alone(&self, pending: Pending) {
        let answer = self
            .charge_and_insert(pending.submission, pending.quota)
            .instrument(pending.span)
            .await;
        let _ = pending.reply.send(answer);
    }

    async fn charge_and_insert(&self, submission: Submission, quota: Option<QuotaLimit>) -> Answer {
        let mut conn = self.pool.acquire().await?;
        let charged = match quota {
            Some(limit) => {
                match shared::db::quotas::charge(&mut *conn, submission.owner, limit).await? {
                    Some(hour) => Some((submission.owner, hour, limit.messages)),
                    None => return Ok(Outcome::OverQuota),
                }
            }
            None => None,
        };
        let inserted = requests::insert(&mut conn, &self.config.queues, submission).await;
        drop(conn);
        match inserted {
            Ok((row, enqueued)) => {
                enqueued.dispatch(&self.pool, &self.redis).await;
                Ok(Outcome::Stored(Box::new(row)))
            }
            Err(err) => {
                self.refund(charged.into_iter().collect()).await;
                Err(err)
            }
        }
    }
}

/// A failed commit's error, for each submission of the batch: unavailable stays
/// unavailable (a 503 with `Retry-After`), anything else is internal.
fn each(err: &sqlx::Error) -> ApiError {
    ApiError::Database(match err {
        sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        sqlx::Error::Io(io) => sqlx::Error::Io(std::io::Error::new(io.kind(), io.to_string())),
        other => return ApiError::Internal(anyhow::anyhow!("committing the group: {other}")),
    })
}

enum Together {
    Committed(Vec<(RequestRow, Enqueued)>),
    InsertFailed(ApiError),
}
