//! `admin_operations`: bulk operator actions, each run as a job of the `operations`
//! queue (the same id) in chunks, with their progress, so any api replica can report
//! on one and any worker resume it.
//!
//! | transition | from | to |
//! | --- | --- | --- |
//! | [`insert_bulk_retry`], [`insert_rescan_all`] | — | running |
//! | [`resume`] | running | running (its job's attempt after the first: a worker resumes it) |
//! | [`finish`] | running | done |
//! | [`fail`] | running | failed |

use sqlx::{FromRow, PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::JobStatus;
use crate::queue::QueueName;

crate::domain::status::text_enum!(
    /// Where a bulk operation stands. `running` ends in `done` or `failed`.
    OperationState {
        Running => "running",
        Done => "done",
        Failed => "failed",
    }
);

#[derive(Debug, Clone, FromRow)]
pub struct OperationRow {
    pub id: Uuid,
    pub kind: String,
    pub actor: String,
    pub queue: QueueName,
    /// The status of the jobs it retries (a bulk retry; `None` for a rescan).
    pub job_status: Option<JobStatus>,
    pub state: OperationState,
    pub total: i64,
    pub done: i64,
    pub error: Option<String>,
    pub runner: String,
    pub heartbeat_at: OffsetDateTime,
    pub resumed: i32,
    pub request_id: Option<String>,
    /// The request a rescan-all carries out.
    pub work_request_id: Option<Uuid>,
    /// Where a rescan-all is: the last upload id it enqueued a scan for.
    pub cursor: Option<Uuid>,
    /// Also the cutoff: only jobs that ended at or before it are in scope.
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
}

macro_rules! columns {
    () => {
        "id, kind, actor, queue, job_status, state, total, done, error, runner, heartbeat_at, \
         resumed, request_id, work_request_id, cursor, created_at, updated_at, finished_at"
    };
}

/// A bulk retry of `queue`'s jobs in `job_status`; `total` counts the jobs in scope
/// now (those not discarded that ended before this transaction began).
pub async fn insert_bulk_retry(
    db: impl PgExecutor<'_>,
    actor: &str,
    queue: QueueName,
    job_status: JobStatus,
    request_id: Option<&str>,
) -> Result<OperationRow, sqlx::Error> {
    sqlx::query_as(concat!(
        "INSERT INTO admin_operations (id, kind, actor, queue, job_status, total, runner, request_id) \
         SELECT $1, 'bulk_retry', $2, $3, $4, count(*), 'operations queue', $5 FROM jobs \
         WHERE queue = $3 AND status = $4 AND discarded_at IS NULL AND finished_at <= now() \
         RETURNING ",
        columns!()
    ))
    .bind(Uuid::now_v7())
    .bind(actor)
    .bind(queue)
    .bind(job_status)
    .bind(request_id)
    .fetch_one(db)
    .await
}

/// A rescan of every upload stored before it began (ids below its own: UUIDv7), for
/// `work_request`; `total` counts them now.
pub async fn insert_rescan_all(
    db: impl PgExecutor<'_>,
    actor: &str,
    work_request: Uuid,
    request_id: Option<&str>,
) -> Result<OperationRow, sqlx::Error> {
    let id = Uuid::now_v7();
    sqlx::query_as(concat!(
        "INSERT INTO admin_operations (id, kind, actor, queue, total, runner, request_id, work_request_id) \
         SELECT $1, 'rescan_all', $2, 'scans', count(*), 'operations queue', $3, $4 FROM uploads \
         WHERE location <> 'staging' AND id < $1 \
         RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(actor)
    .bind(request_id)
    .bind(work_request)
    .fetch_one(db)
    .await
}

pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<OperationRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM admin_operations WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Starts a chunk: refreshes the heartbeat (the last chunk's time) of a running
/// operation and locks its row until the chunk commits. `None`: it has ended.
pub async fn begin_chunk(
    db: &mut PgConnection,
    id: Uuid,
) -> Result<Option<OperationRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE admin_operations SET heartbeat_at = now() \
         WHERE id = $1 AND state = 'running' RETURNING ",
        columns!()
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// A running operation's job started its attempt `attempt`: after the first, a worker
/// resumes it (its previous attempt's worker died, or the attempt failed).
pub async fn resume(
    db: impl PgExecutor<'_>,
    id: Uuid,
    attempt: i32,
) -> Result<Option<OperationRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE admin_operations SET resumed = greatest(resumed, $2 - 1), heartbeat_at = now() \
         WHERE id = $1 AND state = 'running' RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(attempt)
    .fetch_optional(db)
    .await
}

/// Counts `n` more jobs done, in the chunk's transaction, and moves the cursor when
/// given; returns the operation.
pub async fn advance(
    db: &mut PgConnection,
    id: Uuid,
    n: i64,
    cursor: Option<Uuid>,
) -> Result<OperationRow, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE admin_operations SET done = done + $2, cursor = coalesce($3, cursor) \
         WHERE id = $1 RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(n)
    .bind(cursor)
    .fetch_one(db)
    .await
}

/// running → done. `total` is raised to `done` if jobs that ended just before the
/// operation began committed only after it counted them.
pub async fn finish(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<OperationRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE admin_operations SET state = 'done', finished_at = now(), total = greatest(total, done) \
         WHERE id = $1 AND state = 'running' RETURNING ",
        columns!()
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// running → failed, with what operators may read of the cause.
pub async fn fail(
    db: impl PgExecutor<'_>,
    id: Uuid,
    error: &str,
) -> Result<Option<OperationRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE admin_operations SET state = 'failed', finished_at = now(), error = $2 \
         WHERE id = $1 AND state = 'running' RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(error)
    .fetch_optional(db)
    .await
}

/// The account that owns requests made from the command line (a canary needs an
/// owner) unless the operator names one: the earliest admin.
pub async fn earliest_admin(db: impl PgExecutor<'_>) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM users WHERE role = 'admin' ORDER BY created_at, id LIMIT 1")
        .fetch_optional(db)
        .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_state_literal_in_the_sql_is_an_operation_state() {
        let source = include_str!("operations.rs");
        let sql = &source[..source.find("#[cfg(test)]").unwrap_or(source.len())];
        let checked = crate::db::jobs::tests::literals_parse::<super::OperationState>(sql, "state");
        assert!(checked >= 5, "found only {checked} literals");
    }
}
