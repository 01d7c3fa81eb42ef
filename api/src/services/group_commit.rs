//! Group commit: concurrent submissions share one transaction, so PostgreSQL flushes
//! the WAL once for all of them, and their jobs go to Redis in one push per lane.
//!
//! A submission's handler charges its quota (its own, unlogged, commit) and hands the
//! request to [`GroupCommit::insert`], which waits for the answer. One collector task
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
use shared::db::requests::RequestRow;
use shared::jobs::{BatchedRequest, EnqueueError, Enqueued};
use shared::redis::Redis;
use sqlx::PgPool;
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

type Stored = Result<(RequestRow, Enqueued), ApiError>;

struct Pending {
    submission: Submission,
    /// The submitting request's span: the insert runs in it, so the jobs carry the
    /// request's trace and its spans nest under the request's.
    span: tracing::Span,
    reply: oneshot::Sender<Stored>,
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

    /// Inserts `submission` with whatever else is being submitted, and pushes its jobs;
    /// returns once both are done.
    pub async fn insert(&self, submission: Submission) -> Stored {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            submission,
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

impl Committer {
    async fn commit(self, batch: Vec<Pending>, _slot: OwnedSemaphorePermit) {
        metrics::histogram!(shared::telemetry::metric::INGEST_BATCH_SIZE)
            .record(batch.len() as f64);
        if batch.len() > 1 {
            match self.together(&batch).await {
                Ok(Together::Committed(stored)) => {
                    let receipts: Vec<Enqueued> = stored.iter().map(|(_, e)| e.clone()).collect();
                    Enqueued::dispatch_together(&receipts, &self.pool, &self.redis).await;
                    for (pending, stored) in batch.into_iter().zip(stored) {
                        let _ = pending.reply.send(Ok(stored));
                    }
                    return;
                }
                Ok(Together::InsertFailed(err)) => {
                    tracing::warn!(error = %err, submissions = batch.len(), "a grouped insert failed; inserting each submission alone");
                }
                Err(err) => {
                    for pending in batch {
                        let _ = pending.reply.send(Err(each(&err)));
                    }
                    return;
                }
            }
        }
        for pending in batch {
            let stored = self
                .alone(pending.submission)
                .instrument(pending.span)
                .await;
            if let Ok((_, enqueued)) = &stored {
                enqueued.dispatch(&self.pool, &self.redis).await;
            }
            let _ = pending.reply.send(stored);
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

    async fn alone(&self, submission: Submission) -> Stored {
        let mut conn = self.pool.acquire().await?;
        requests::insert(&mut conn, &self.config.queues, submission).await
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
