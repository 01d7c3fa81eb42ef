//! `job_failures`: every failed attempt of a job, inserted only by
//! [`super::jobs::schedule_retry`] and [`super::jobs::bury`] in the completer's
//! transaction (so a redelivered outcome, which changes no job, adds no row), removed
//! with its job. Read by the operators' console: a job's attempts, the last hour's
//! failures by minute, the jobs that went dead lately.

use sqlx::{FromRow, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::queue::QueueName;

#[derive(Debug, Clone, FromRow)]
pub struct FailureRow {
    pub attempt: i32,
    pub error: String,
    pub started_at: Option<OffsetDateTime>,
    pub failed_at: OffsetDateTime,
    /// The job's last attempt: it ended dead.
    pub dead: bool,
}

/// A job's failed attempts, oldest first (at most `limit`, the latest kept when
/// there are more).
pub async fn of_job(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    limit: i64,
) -> Result<Vec<FailureRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT attempt, error, started_at, failed_at, dead FROM ( \
             SELECT id, attempt, error, started_at, failed_at, dead FROM job_failures \
             WHERE job_id = $1 ORDER BY id DESC LIMIT $2) latest \
         ORDER BY id",
    )
    .bind(job_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// One queue's finished work in one minute.
#[derive(Debug, Clone, FromRow)]
pub struct Minute {
    pub queue: QueueName,
    /// Minutes before now's minute: 0 is the current (partial) minute, 59 the oldest.
    pub minutes_ago: i32,
    pub succeeded: i64,
    /// Failed attempts (retried or dead).
    pub failed: i64,
}

/// The last hour by minute and queue: jobs that succeeded (from `jobs`, by the
/// partial index of successes) and failed attempts (from here). Minutes with neither
/// are absent.
pub async fn last_hour(db: impl PgExecutor<'_>) -> Result<Vec<Minute>, sqlx::Error> {
    sqlx::query_as(
        "WITH now AS (SELECT date_trunc('minute', now()) AS minute), \
         done AS ( \
             SELECT queue, date_trunc('minute', finished_at) AS minute, count(*) AS n FROM jobs \
             WHERE status = 'succeeded' AND finished_at > (SELECT minute FROM now) - interval '59 minutes' \
             GROUP BY 1, 2), \
         failed AS ( \
             SELECT queue, date_trunc('minute', failed_at) AS minute, count(*) AS n FROM job_failures \
             WHERE failed_at > (SELECT minute FROM now) - interval '59 minutes' \
             GROUP BY 1, 2) \
         SELECT coalesce(d.queue, f.queue) AS queue, \
                (extract(epoch FROM (SELECT minute FROM now) - coalesce(d.minute, f.minute)) / 60)::int AS minutes_ago, \
                coalesce(d.n, 0) AS succeeded, coalesce(f.n, 0) AS failed \
         FROM done d FULL JOIN failed f ON d.queue = f.queue AND d.minute = f.minute",
    )
    .fetch_all(db)
    .await
}

/// Jobs that went dead since `since`, by queue.
pub async fn dead_since(
    db: impl PgExecutor<'_>,
    since: OffsetDateTime,
) -> Result<Vec<(QueueName, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT queue, count(*) FROM job_failures WHERE failed_at > $1 AND dead GROUP BY queue",
    )
    .bind(since)
    .fetch_all(db)
    .await
}

/// The dispatcher's backlog: jobs committed but not yet pushed to Redis, and since
/// when the oldest has waited.
pub async fn dispatcher_backlog(
    db: impl PgExecutor<'_>,
) -> Result<(i64, Option<OffsetDateTime>), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), min(created_at) FROM jobs WHERE status = 'queued' AND dispatched_at IS NULL",
    )
    .fetch_one(db)
    .await
}
