//! The `operations` queue: operators' bulk operations run as jobs. An operation's row
//! (`admin_operations`, the same id as its job) holds its scope and its progress; its
//! job works through the scope in chunks, each chunk one transaction that changes the
//! jobs in it and advances the progress together, so a worker that takes the job over
//! after a crash (or a retry) resumes where the last committed chunk left off and never
//! repeats one. Shared by the worker (which runs it) and the api (which starts and
//! shows it), so neither imports the other.

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::{EnqueueError, Enqueued, Job, NewJob};
use crate::config::QueuesConfig;
use crate::db::jobs;
use crate::db::operations::{self, OperationRow};
use crate::db::requests::{self, RequestRow};
use crate::domain::JobStatus;
use crate::queue::QueueName;

/// Jobs per chunk (one transaction each).
pub const CHUNK: i64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationJob {
    pub operation_id: Uuid,
}

impl Job for OperationJob {
    const QUEUE: QueueName = QueueName::Operations;
}

/// Records a bulk retry of `queue`'s jobs in `job_status` and enqueues its job, in the
/// caller's transaction; dispatch the receipt after the commit.
pub async fn start_bulk_retry(
    conn: &mut sqlx::PgConnection,
    queues: &QueuesConfig,
    actor: &str,
    queue: QueueName,
    job_status: JobStatus,
    request_id: Option<&str>,
) -> Result<(OperationRow, Enqueued), EnqueueError> {
    let row =
        operations::insert_bulk_retry(&mut *conn, actor, queue, job_status, request_id).await?;
    enqueue_job(conn, queues, row).await
}

/// The operation's job (the same id), in the caller's transaction.
async fn enqueue_job(
    conn: &mut sqlx::PgConnection,
    queues: &QueuesConfig,
    row: OperationRow,
) -> Result<(OperationRow, Enqueued), EnqueueError> {
    let job = NewJob::of(&OperationJob {
        operation_id: row.id,
    })?
    .with_id(row.id);
    let enqueued = super::enqueue_many(conn, queues, &[job]).await?;
    Ok((row, enqueued))
}

/// What one chunk did.
#[derive(Debug)]
pub enum Chunk {
    /// Jobs went back to their queue (a bulk retry) or were added to the request (a
    /// rescan): dispatch them after the commit, and publish the requests reopened.
    Advanced {
        row: OperationRow,
        requeued: Enqueued,
        reopened: Vec<RequestRow>,
    },
    /// Nothing was left: the operation is done (or had already ended); the jobs its
    /// end enqueued (the completion webhook of the request a rescan finished), to
    /// dispatch.
    Finished {
        row: OperationRow,
        enqueued: Enqueued,
    },
}

/// Starts a chunk of operation `id` in `tx` (its row locked): the operation, or — when
/// it has ended — the chunk that says so.
async fn begin(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
) -> Result<Result<OperationRow, Chunk>, sqlx::Error> {
    if let Some(op) = operations::begin_chunk(&mut *tx, id).await? {
        return Ok(Ok(op));
    }
    let row = operations::find(&mut *tx, id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    Ok(Err(Chunk::Finished {
        row,
        enqueued: Enqueued::default(),
    }))
}

/// Runs the next chunk of operation `id`, whatever its kind.
pub async fn next_chunk(
    pool: &PgPool,
    queues: &QueuesConfig,
    id: Uuid,
) -> Result<Chunk, EnqueueError> {
    let kind = operations::find(pool, id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?
        .kind;
    match kind.as_str() {
        "rescan_all" => rescan_chunk(pool, queues, id).await,
        _ => Ok(bulk_retry_chunk(pool, id).await?),
    }
}

/// Records a rescan of every stored upload for `request` (made by the caller in the
/// same transaction, with no jobs yet) and enqueues its job; the request's total
/// becomes the uploads in scope. Dispatch the receipt after the commit.
pub async fn start_rescan_all(
    conn: &mut sqlx::PgConnection,
    queues: &QueuesConfig,
    actor: &str,
    request: Uuid,
    request_id: Option<&str>,
) -> Result<(OperationRow, Enqueued), EnqueueError> {
    let row = operations::insert_rescan_all(&mut *conn, actor, request, request_id).await?;
    let total = i32::try_from(row.total).unwrap_or(i32::MAX);
    requests::set_total(&mut *conn, request, total).await?;
    enqueue_job(conn, queues, row).await
}

/// The next chunk of rescan-all `id`, in one transaction: the scans of up to [`CHUNK`]
/// more uploads (by id, after its cursor), counted on its request — whose total never
/// drops below what has been added, so it cannot finish before the last chunk — and
/// its progress; or, when none is left, the request's total set to exactly what was
/// added (closing it if its scans have all ended) and the operation `done`.
async fn rescan_chunk(
    pool: &PgPool,
    queues: &QueuesConfig,
    id: Uuid,
) -> Result<Chunk, EnqueueError> {
    let mut tx = pool.begin().await?;
    let op = match begin(&mut tx, id).await? {
        Ok(op) => op,
        Err(ended) => return Ok(ended),
    };
    let request = op.work_request_id.ok_or(sqlx::Error::RowNotFound)?;
    let uploads = crate::db::uploads::scannable_ids(&mut *tx, op.cursor, op.id, CHUNK).await?;
    let Some(&last) = uploads.last() else {
        let done = i32::try_from(op.done).unwrap_or(i32::MAX);
        requests::set_total(&mut *tx, request, done).await?;
        let finished = requests::finish(&mut tx, queues, &[request]).await?;
        let row = operations::finish(&mut *tx, id).await?.unwrap_or(op);
        tx.commit().await?;
        return Ok(Chunk::Finished {
            row,
            enqueued: finished.webhooks,
        });
    };
    let owner = requests::find(&mut *tx, request, None)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?
        .owner_id;
    // Bulk work: the admin's turns in the scans queue's fair lane, so new uploads'
    // scans go first.
    let lane = crate::queue::Lane::Fair(owner);
    let jobs = uploads
        .iter()
        .map(|&upload_id| {
            NewJob::of(&super::files::ScanJob { upload_id })
                .map(|j| j.for_request(request).in_lane(lane))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let enqueued = super::enqueue_many(&mut tx, queues, &jobs).await?;
    let n = i64::try_from(enqueued.len()).unwrap_or(i64::MAX);
    let row = operations::advance(&mut tx, id, n, Some(last)).await?;
    let added = i32::try_from(row.done).unwrap_or(i32::MAX);
    requests::raise_total(&mut *tx, request, added).await?;
    tx.commit().await?;
    Ok(Chunk::Advanced {
        row,
        requeued: enqueued,
        reopened: Vec::new(),
    })
}

/// The next chunk of bulk retry `id`, in one transaction: up to [`CHUNK`] of its jobs
/// (those that ended before it began, not discarded) back to their queue, their
/// requests reopened, its progress advanced; or, when none is left, `done`.
pub async fn bulk_retry_chunk(pool: &PgPool, id: Uuid) -> Result<Chunk, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let op = match begin(&mut tx, id).await? {
        Ok(op) => op,
        Err(ended) => return Ok(ended),
    };
    let status = op.job_status.ok_or(sqlx::Error::RowNotFound)?;
    let requeued = jobs::requeue_batch(&mut tx, op.queue, status, op.created_at, CHUNK).await?;
    if requeued.is_empty() {
        let row = operations::finish(&mut *tx, id).await?.unwrap_or(op);
        tx.commit().await?;
        return Ok(Chunk::Finished {
            row,
            enqueued: Enqueued::default(),
        });
    }
    let mut request_ids: Vec<Uuid> = requeued.iter().filter_map(|j| j.request_id).collect();
    request_ids.sort_unstable();
    request_ids.dedup();
    let reopened = requests::reopen(&mut *tx, &request_ids).await?;
    let n = i64::try_from(requeued.len()).unwrap_or(i64::MAX);
    let row = operations::advance(&mut tx, id, n, None).await?;
    tx.commit().await?;
    Ok(Chunk::Advanced {
        row,
        // Each job back to its lane (a campaign's dead messages stay behind
        // transactional mail), for its time (a scheduled send waits for it).
        requeued: Enqueued::requeued(&requeued),
        reopened,
    })
}
