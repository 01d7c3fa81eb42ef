//! `requests`: what clients submitted, with per-job counts. Status moves
//! `queued → running → succeeded | failed | partially_failed | cancelled`.

use serde::Serialize;
use sqlx::{FromRow, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct RequestRow {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub kind: String,
    pub status: String,
    pub name: Option<String>,
    pub correlation_id: Option<String>,
    pub total: i32,
    pub succeeded: i32,
    pub failed: i32,
    pub cancelled: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
}

macro_rules! columns {
    () => {
        "id, owner_id, kind, status, name, correlation_id, total, succeeded, failed, cancelled, \
         created_at, updated_at, finished_at"
    };
}

#[derive(Debug)]
pub struct NewRequest<'a> {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub kind: &'a str,
    pub name: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
    pub content: Option<serde_json::Value>,
    pub total: i32,
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    new: &NewRequest<'_>,
) -> Result<RequestRow, sqlx::Error> {
    sqlx::query_as(concat!(
        "INSERT INTO requests (id, owner_id, kind, name, correlation_id, content, total) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
        columns!()
    ))
    .bind(new.id)
    .bind(new.owner_id)
    .bind(new.kind)
    .bind(new.name)
    .bind(new.correlation_id)
    .bind(&new.content)
    .bind(new.total)
    .fetch_one(db)
    .await
}

/// A request, if `owner` (when given) owns it: another user's id is not found.
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

pub async fn content(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<serde_json::Value>, sqlx::Error> {
    sqlx::query_scalar("SELECT content FROM requests WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
        .map(Option::flatten)
}

/// Filters and the keyset position of a listing (newest first).
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub owner: Option<Uuid>,
    pub status: Option<String>,
    pub kind: Option<String>,
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
    .bind(&filter.status)
    .bind(&filter.kind)
    .bind(after_time)
    .bind(after_id)
    .bind(filter.limit)
    .fetch_all(db)
    .await
}

/// Closes requests whose every job has ended, with their final status. Returns them.
pub async fn finish_completed(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
) -> Result<Vec<RequestRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE requests SET finished_at = now(), status = CASE \
             WHEN succeeded = total THEN 'succeeded' \
             WHEN cancelled = total THEN 'cancelled' \
             WHEN succeeded = 0 AND cancelled = 0 THEN 'failed' \
             WHEN succeeded = 0 THEN 'cancelled' \
             ELSE 'partially_failed' END \
         WHERE id = ANY($1) AND finished_at IS NULL AND succeeded + failed + cancelled >= total \
         RETURNING ",
        columns!()
    ))
    .bind(ids)
    .fetch_all(db)
    .await
}

/// Marks requests running when their first job starts. Returns those that changed.
pub async fn mark_running(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
) -> Result<Vec<RequestRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE requests SET status = 'running' WHERE id = ANY($1) AND status = 'queued' RETURNING ",
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
