//! `jobs`: the outbox and the record of every unit of work. Every state change is a
//! compare-and-set (`UPDATE … WHERE status IN (…)`), and the worker's changes come
//! in batches (`WHERE id = ANY($1)`), one round trip per batch.

use sqlx::{FromRow, PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

/// Rows per `INSERT … SELECT FROM UNNEST` statement.
const INSERT_CHUNK: usize = 5000;

/// Inserts a request's jobs in chunks; returns their ids in payload order.
pub async fn insert_many(
    db: &mut PgConnection,
    request_id: Uuid,
    queue: &str,
    payloads: Vec<serde_json::Value>,
    max_attempts: i32,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut all = Vec::with_capacity(payloads.len());
    for chunk in payloads.chunks(INSERT_CHUNK) {
        let ids: Vec<Uuid> = chunk.iter().map(|_| Uuid::now_v7()).collect();
        sqlx::query(
            "INSERT INTO jobs (id, request_id, queue, payload, max_attempts) \
             SELECT id, $2, $3, payload, $5 FROM UNNEST($1::uuid[], $4::jsonb[]) AS t(id, payload)",
        )
        .bind(&ids)
        .bind(request_id)
        .bind(queue)
        .bind(chunk)
        .bind(max_attempts)
        .execute(&mut *db)
        .await?;
        all.extend(ids);
    }
    Ok(all)
}

pub async fn mark_dispatched(db: impl PgExecutor<'_>, ids: &[Uuid]) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("UPDATE jobs SET dispatched_at = now() WHERE id = ANY($1)")
        .bind(ids)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

/// A job a worker has claimed.
#[derive(Debug, Clone, FromRow)]
pub struct ClaimedJob {
    pub id: Uuid,
    pub request_id: Uuid,
    pub queue: String,
    pub payload: serde_json::Value,
    pub attempt: i32,
    pub max_attempts: i32,
}

/// Claims jobs for `worker`: queued or retrying ones, and running ones whose heartbeat
/// is older than `stale_before` (their worker died). Ids not returned were already
/// claimed, finished or cancelled: a duplicate delivery, to be acknowledged as a no-op.
pub async fn claim(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
    worker: &str,
    stale_before: OffsetDateTime,
) -> Result<Vec<ClaimedJob>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE jobs SET status = 'running', attempt = attempt + 1, claimed_by = $2, \
             started_at = now(), heartbeat_at = now(), run_after = NULL \
         WHERE id = ANY($1) \
           AND (status IN ('queued', 'retrying') OR (status = 'running' AND heartbeat_at < $3)) \
         RETURNING id, request_id, queue, payload, attempt, max_attempts",
    )
    .bind(ids)
    .bind(worker)
    .bind(stale_before)
    .fetch_all(db)
    .await
}

/// Keeps running jobs from looking abandoned.
pub async fn heartbeat(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
    worker: &str,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE jobs SET heartbeat_at = now() WHERE id = ANY($1) AND status = 'running' AND claimed_by = $2",
    )
    .bind(ids)
    .bind(worker)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Hands back jobs this worker claimed but did not finish (shutdown), so another
/// worker can claim them at once instead of after the heartbeat timeout.
pub async fn unclaim(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
    worker: &str,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE jobs SET status = 'queued', attempt = greatest(attempt - 1, 0), claimed_by = NULL, \
             heartbeat_at = NULL, dispatched_at = NULL \
         WHERE id = ANY($1) AND status = 'running' AND claimed_by = $2",
    )
    .bind(ids)
    .bind(worker)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Per-request counts of jobs that reached an end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromRow)]
pub struct Ended {
    pub request_id: Uuid,
    pub succeeded: i64,
    pub failed: i64,
}

/// Records successes (only of jobs still running: a late duplicate changes nothing)
/// and adds them to their requests' counts.
pub async fn succeed(db: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<Ended>, sqlx::Error> {
    sqlx::query_as(
        "WITH done AS ( \
             UPDATE jobs SET status = 'succeeded', finished_at = now(), last_error = NULL \
             WHERE id = ANY($1) AND status = 'running' RETURNING request_id), \
         counts AS (SELECT request_id, count(*) AS n FROM done GROUP BY request_id), \
         bumped AS (UPDATE requests r SET succeeded = r.succeeded + c.n FROM counts c \
                    WHERE r.id = c.request_id RETURNING r.id) \
         SELECT request_id, n AS succeeded, 0::bigint AS failed FROM counts",
    )
    .bind(ids)
    .fetch_all(&mut *db)
    .await
}

/// A failed attempt.
#[derive(Debug, Clone)]
pub struct Failure {
    pub id: Uuid,
    pub error: String,
    /// `Some(t)`: retry at `t`; `None`: dead now (permanent, or attempts exhausted).
    pub retry_at: Option<OffsetDateTime>,
}

/// Records failures: retries go to `retrying` with their due time, the rest to `dead`
/// (counted on their requests). Returns the ids actually set to retry.
pub async fn fail(
    db: &mut PgConnection,
    failures: &[Failure],
) -> Result<(Vec<Uuid>, Vec<Ended>), sqlx::Error> {
    let ids: Vec<Uuid> = failures.iter().map(|f| f.id).collect();
    let errors: Vec<&str> = failures.iter().map(|f| f.error.as_str()).collect();
    let retry_at: Vec<Option<OffsetDateTime>> = failures.iter().map(|f| f.retry_at).collect();
    let retried: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE jobs j SET status = 'retrying', run_after = f.retry_at, last_error = f.error, heartbeat_at = NULL \
         FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[]) AS f(id, error, retry_at) \
         WHERE j.id = f.id AND j.status = 'running' AND f.retry_at IS NOT NULL AND j.attempt < j.max_attempts \
         RETURNING j.id",
    )
    .bind(&ids)
    .bind(&errors)
    .bind(&retry_at)
    .fetch_all(&mut *db)
    .await?;
    let dead: Vec<Ended> = sqlx::query_as(
        "WITH done AS ( \
             UPDATE jobs j SET status = 'dead', finished_at = now(), last_error = f.error \
             FROM UNNEST($1::uuid[], $2::text[]) AS f(id, error) \
             WHERE j.id = f.id AND j.status = 'running' AND NOT (j.id = ANY($3)) RETURNING j.request_id), \
         counts AS (SELECT request_id, count(*) AS n FROM done GROUP BY request_id), \
         bumped AS (UPDATE requests r SET failed = r.failed + c.n FROM counts c \
                    WHERE r.id = c.request_id RETURNING r.id) \
         SELECT request_id, 0::bigint AS succeeded, n AS failed FROM counts",
    )
    .bind(&ids)
    .bind(&errors)
    .bind(&retried)
    .fetch_all(&mut *db)
    .await?;
    Ok((retried, dead))
}

/// Jobs to push: committed but never dispatched. Locked (skipping rows another api
/// replica holds) until the caller's transaction ends.
pub async fn lock_undispatched(
    db: &mut PgConnection,
    limit: i64,
) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, queue FROM jobs WHERE status = 'queued' AND dispatched_at IS NULL \
         ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Jobs Redis seems to have lost: pushed but not claimed before `before`, retries due
/// before `before`, and running jobs whose heartbeat stopped before `before`. Locked
/// like [`lock_undispatched`].
pub async fn lock_lost(
    db: &mut PgConnection,
    before: OffsetDateTime,
    limit: i64,
) -> Result<Vec<(Uuid, String, String)>, sqlx::Error> {
    // Three statements: PostgreSQL refuses FOR UPDATE on a UNION.
    let mut lost: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT id, queue, status FROM jobs WHERE status = 'queued' AND dispatched_at < $1 \
         ORDER BY dispatched_at LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(&mut *db)
    .await?;
    lost.extend(
        sqlx::query_as::<_, (Uuid, String, String)>(
            "SELECT id, queue, status FROM jobs WHERE status = 'retrying' AND run_after < $1 \
             AND (dispatched_at IS NULL OR dispatched_at < $1) \
             ORDER BY run_after LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&mut *db)
        .await?,
    );
    lost.extend(
        sqlx::query_as::<_, (Uuid, String, String)>(
            "SELECT id, queue, status FROM jobs WHERE status = 'running' AND heartbeat_at < $1 \
             AND (dispatched_at IS NULL OR dispatched_at < $1) \
             ORDER BY heartbeat_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&mut *db)
        .await?,
    );
    Ok(lost)
}

/// Cancels a request's jobs that have not started; returns how many.
pub async fn cancel_pending(db: &mut PgConnection, request_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "WITH done AS ( \
             UPDATE jobs SET status = 'cancelled', finished_at = now() \
             WHERE request_id = $1 AND status IN ('queued', 'retrying') RETURNING id), \
         n AS (SELECT count(*) AS n FROM done), \
         bumped AS (UPDATE requests SET cancelled = cancelled + (SELECT n FROM n) WHERE id = $1 RETURNING id) \
         SELECT n FROM n",
    )
    .bind(request_id)
    .fetch_one(db)
    .await
}

/// Per-job detail of a request: counts by status and the latest error.
#[derive(Debug, Clone, FromRow)]
pub struct JobSummary {
    pub queued: i64,
    pub running: i64,
    pub retrying: i64,
    pub succeeded: i64,
    pub dead: i64,
    pub cancelled: i64,
    pub attempts: i64,
    pub last_error: Option<String>,
}

pub async fn summary(db: impl PgExecutor<'_>, request_id: Uuid) -> Result<JobSummary, sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'queued') AS queued, \
                count(*) FILTER (WHERE status = 'running') AS running, \
                count(*) FILTER (WHERE status = 'retrying') AS retrying, \
                count(*) FILTER (WHERE status = 'succeeded') AS succeeded, \
                count(*) FILTER (WHERE status = 'dead') AS dead, \
                count(*) FILTER (WHERE status = 'cancelled') AS cancelled, \
                coalesce(sum(attempt), 0)::bigint AS attempts, \
                (SELECT last_error FROM jobs WHERE request_id = $1 AND last_error IS NOT NULL \
                 ORDER BY updated_at DESC LIMIT 1) AS last_error \
         FROM jobs WHERE request_id = $1",
    )
    .bind(request_id)
    .fetch_one(db)
    .await
}
