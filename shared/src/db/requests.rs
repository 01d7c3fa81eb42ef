//! `requests`: what clients submitted, with per-job counts. A request's status
//! changes in three named places: `db::jobs::claim` (queued → running when its first
//! job starts, in the claim's statement), [`finish`] (→ succeeded | failed |
//! partially_failed | cancelled | suppressed once every job has ended) and [`reopen`]
//! (an operator's retry); it is created by `jobs::enqueue_with_request`. The counts
//! move with the job transitions in `db::jobs`. Status literals in the SQL are
//! [`RequestStatus`] values (checked by a unit test).

use serde::Serialize;
use sqlx::{FromRow, PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::QueuesConfig;
use crate::domain::{JobStatus, RequestKind, RequestStatus};
use crate::jobs::{EnqueueError, Enqueued};

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct RequestRow {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub kind: RequestKind,
    pub status: RequestStatus,
    pub name: Option<String>,
    pub correlation_id: Option<String>,
    pub total: i32,
    pub succeeded: i32,
    pub failed: i32,
    pub cancelled: i32,
    /// Messages not sent because every recipient was on the suppression list.
    pub suppressed: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// When its jobs may start (a scheduled send); `None`: at once.
    #[serde(with = "time::serde::rfc3339::option")]
    pub send_at: Option<OffsetDateTime>,
    /// Where the completion webhook goes, if the client asked for one.
    pub callback_url: Option<String>,
    /// One more with every change of the row, in commit order.
    pub version: i64,
}

impl RequestRow {
    /// Jobs not yet at an end.
    pub fn pending(&self) -> i32 {
        (self.total - self.succeeded - self.failed - self.cancelled - self.suppressed).max(0)
    }
}

macro_rules! columns {
    () => {
        "id, owner_id, kind, status, name, correlation_id, total, succeeded, failed, cancelled, suppressed, \
         created_at, updated_at, finished_at, send_at, callback_url, version"
    };
}
pub(crate) use columns;

#[derive(Debug)]
pub struct NewRequest<'a> {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub kind: RequestKind,
    pub name: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
    pub content: Option<serde_json::Value>,
    pub total: i32,
    /// A scheduled send: its jobs are inserted with this `run_after`.
    pub send_at: Option<OffsetDateTime>,
    pub callback_url: Option<&'a str>,
}

/// A request, if `owner` (when given) owns it: another user's id is not found.
#[tracing::instrument(name = "db", target = "conveyor_trace", skip_all, fields(otel.name = "SELECT requests", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "requests"))]
pub async fn find(
    db: impl PgExecutor<'_>,
    id: Uuid,
    owner: Option<Uuid>,
) -> Result<Option<RequestRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM requests WHERE id = $1 AND ($2::uuid IS NULL OR owner_id = $2)"
    ))
    .bind(id)
    .bind(owner)
    .fetch_optional(db)
    .await
}

/// A request's owner and shared content (a campaign's subject and bodies); `None`
/// when there is no such request.
#[tracing::instrument(name = "db", target = "conveyor_trace", skip_all, fields(otel.name = "SELECT requests", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "requests"))]
/// The template version request `id`'s messages were rendered from, if they were
/// (`content.template`: see `jobs::email::{EmailRecord, CampaignContent}`).
pub async fn template_of(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<crate::jobs::email::TemplateRef>, sqlx::Error> {
    let value: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT content -> 'template' FROM requests WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?
            .flatten();
    Ok(value.and_then(|v| serde_json::from_value(v).ok()))
}

pub async fn owner_and_content(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<(Uuid, Option<serde_json::Value>)>, sqlx::Error> {
    sqlx::query_as("SELECT owner_id, content FROM requests WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Filters and the keyset position of a listing (newest first).
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub owner: Option<Uuid>,
    pub status: Option<RequestStatus>,
    pub kind: Option<RequestKind>,
    /// The `(created_at, id)` of the last row of the previous page.
    pub after: Option<(OffsetDateTime, Uuid)>,
    pub limit: i64,
}

/// One page. Keyset pagination on `(created_at, id)` descending: rows inserted while a
/// client pages are either before its first page or after its position, so it sees
/// no duplicate and no gap.
pub async fn list(
    db: impl PgExecutor<'_>,
    filter: &ListFilter,
) -> Result<Vec<RequestRow>, sqlx::Error> {
    let (after_time, after_id) = filter
        .after
        .map_or((None, None), |(t, id)| (Some(t), Some(id)));
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM requests \
         WHERE ($1::uuid IS NULL OR owner_id = $1) \
           AND ($2::text IS NULL OR status = $2) \
           AND ($3::text IS NULL OR kind = $3) \
           AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5)) \
         ORDER BY created_at DESC, id DESC LIMIT $6"
    ))
    .bind(filter.owner)
    .bind(filter.status)
    .bind(filter.kind)
    .bind(after_time)
    .bind(after_id)
    .bind(filter.limit)
    .fetch_all(db)
    .await
}

/// An operator's page of every account's requests (the console), newest first, keyset
/// on `(created_at, id)` like [`list`]. The statement holds only the filters given, so
/// each combination is planned for itself (`requests_created_idx`,
/// `requests_owner_created_idx`, `requests_status_created_idx`) rather than one generic
/// plan for all, which could not use the owner's or the state's index.
pub async fn list_for_operators(
    db: impl PgExecutor<'_>,
    filter: &ListFilter,
) -> Result<Vec<RequestRow>, sqlx::Error> {
    let mut query = sqlx::QueryBuilder::<sqlx::Postgres>::new(concat!(
        "SELECT ",
        columns!(),
        " FROM requests WHERE true"
    ));
    if let Some(owner) = filter.owner {
        query.push(" AND owner_id = ").push_bind(owner);
    }
    if let Some(status) = filter.status {
        query.push(" AND status = ").push_bind(status);
    }
    if let Some(kind) = filter.kind {
        query.push(" AND kind = ").push_bind(kind);
    }
    super::newest_first(&mut query, filter.after, filter.limit);
    query.build_query_as().fetch_all(db).await
}

/// The W3C `traceparent` a request's work carries: its first job's, else the
/// submission's own (both in the same trace); `None` when tracing was off, or there is
/// no such request.
pub async fn trace_context(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    let found: Option<Option<String>> = sqlx::query_scalar(
        "SELECT coalesce((SELECT j.trace_context FROM jobs j WHERE j.request_id = r.id \
                          ORDER BY j.id LIMIT 1), r.trace_context) \
         FROM requests r WHERE r.id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(found.flatten())
}

/// What [`finish`] did: the requests it closed, and their completion webhooks'
/// delivery jobs, to dispatch after the commit.
#[derive(Debug, Default)]
pub struct Finished {
    pub requests: Vec<RequestRow>,
    pub webhooks: Enqueued,
}

/// running | queued → succeeded | failed | partially_failed | cancelled | suppressed:
/// closes the requests of `ids` whose every job has ended, with their final status,
/// and — in the same transaction — enqueues the completion webhook of each that named
/// a `callback_url`. The one place a request finishes (the worker's completer; the
/// api's cancel and an upload batch with nothing left to run).
pub async fn finish(
    conn: &mut PgConnection,
    queues: &QueuesConfig,
    ids: &[Uuid],
) -> Result<Finished, EnqueueError> {
    let requests = close_completed(&mut *conn, ids).await?;
    let webhooks = crate::jobs::webhooks::enqueue_deliveries(conn, queues, &requests).await?;
    Ok(Finished { requests, webhooks })
}

/// Closes requests whose every job has ended, with their final status. Returns them.
async fn close_completed(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
) -> Result<Vec<RequestRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE requests SET finished_at = now(), status = CASE \
             WHEN succeeded + suppressed = total AND succeeded > 0 THEN 'succeeded' \
             WHEN suppressed = total THEN 'suppressed' \
             WHEN cancelled = total THEN 'cancelled' \
             WHEN succeeded = 0 AND cancelled = 0 THEN 'failed' \
             WHEN succeeded = 0 THEN 'cancelled' \
             ELSE 'partially_failed' END \
         WHERE id = ANY($1) AND finished_at IS NULL AND succeeded + failed + cancelled + suppressed >= total \
         RETURNING ",
        columns!()
    ))
    .bind(ids)
    .fetch_all(db)
    .await
}

pub async fn find_many(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
) -> Result<Vec<RequestRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM requests WHERE id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(db)
    .await
}

/// Adds `count` jobs to a running request (an upload's scan joins its request).
pub async fn add_jobs(db: impl PgExecutor<'_>, id: Uuid, count: i32) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE requests SET total = total + $2 WHERE id = $1")
        .bind(id)
        .bind(count)
        .execute(db)
        .await?;
    Ok(())
}

/// Sets a request's total (a rescan-all's: the uploads in scope when it began, and at
/// its end exactly the scans it added).
pub async fn set_total(db: impl PgExecutor<'_>, id: Uuid, total: i32) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE requests SET total = $2 WHERE id = $1")
        .bind(id)
        .bind(total)
        .execute(db)
        .await?;
    Ok(())
}

/// Raises a request's total to at least `total` (a rescan-all that found more uploads
/// than it counted at its start).
pub async fn raise_total(db: impl PgExecutor<'_>, id: Uuid, total: i32) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE requests SET total = greatest(total, $2) WHERE id = $1")
        .bind(id)
        .bind(total)
        .execute(db)
        .await?;
    Ok(())
}

/// Deletes up to `limit` requests that finished before `before`, with their jobs
/// (`ON DELETE CASCADE`) and idempotency records. Returns how many.
pub async fn delete_finished_before(
    db: impl PgExecutor<'_>,
    before: OffsetDateTime,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM requests WHERE id IN ( \
             SELECT id FROM requests WHERE finished_at < $1 ORDER BY finished_at LIMIT $2 \
             FOR UPDATE SKIP LOCKED)",
    )
    .bind(before)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Reopens requests an operator sent jobs of back to their queue (after
/// `jobs::requeue` counted them down), clearing `finished_at` so the completer closes
/// them anew: `queued` again when none of its jobs has ended or is under way, else an
/// unfinished request keeps its status and a finished one is `running`. Returns them.
pub async fn reopen(db: impl PgExecutor<'_>, ids: &[Uuid]) -> Result<Vec<RequestRow>, sqlx::Error> {
    // The job states "under way" are bound as typed values (`jobs_request_id_idx`
    // finds them without reading the request's other jobs).
    let under_way = [JobStatus::Running, JobStatus::Retrying];
    sqlx::query_as(concat!(
        "UPDATE requests r SET finished_at = NULL, status = CASE \
             WHEN r.succeeded + r.failed + r.cancelled + r.suppressed = 0 AND NOT EXISTS ( \
                 SELECT 1 FROM jobs j WHERE j.request_id = r.id AND j.status = ANY($2)) \
                 THEN 'queued' \
             WHEN r.finished_at IS NULL THEN r.status \
             ELSE 'running' END \
         WHERE r.id = ANY($1) RETURNING ",
        columns!()
    ))
    .bind(ids)
    .bind(&under_way[..])
    .fetch_all(db)
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_status_literal_in_the_sql_is_a_request_status() {
        let source = include_str!("requests.rs");
        let sql = &source[..source.find("#[cfg(test)]").unwrap_or(source.len())];
        // `THEN`/`ELSE` arms of the final-status CASE, and the WHERE clauses.
        let mut checked =
            crate::db::jobs::tests::literals_parse::<crate::domain::RequestStatus>(sql, "status");
        let arms = sql
            .split("THEN '")
            .skip(1)
            .chain(sql.split("ELSE '").skip(1));
        for arm in arms {
            let literal = arm.split('\'').next().unwrap_or_default();
            literal
                .parse::<crate::domain::RequestStatus>()
                .unwrap_or_else(|err| panic!("{err}"));
            checked += 1;
        }
        assert!(checked >= 7, "found only {checked} literals");
    }
}
