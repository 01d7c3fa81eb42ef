//! `uploads`: one row per uploaded file. The one place an upload's status or location
//! changes: [`insert`] (pending_scan, staging), [`mark_stored`] (staging → stored, by
//! the `uploads` job), [`reject`] (a staged object that failed verification) and
//! [`record_verdict`] (a scan's verdict: clean in `stored`, infected in `quarantine`).
//! Status and location literals in the SQL are [`UploadStatus`] and
//! [`UploadLocation`] values (checked by a unit test).

use sqlx::{FromRow, PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{UploadLocation, UploadStatus};

#[derive(Debug, Clone, FromRow)]
pub struct UploadRow {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub request_id: Option<Uuid>,
    pub file_name: String,
    pub description: Option<String>,
    pub size_bytes: i64,
    pub sha256: Vec<u8>,
    /// The type its magic bytes showed (`png`, `pdf`, `text`, …).
    pub file_type: String,
    pub status: UploadStatus,
    pub location: UploadLocation,
    pub rules: Vec<String>,
    pub error: Option<String>,
    pub scans: i32,
    pub scanned_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

macro_rules! columns {
    () => {
        "id, owner_id, request_id, file_name, description, size_bytes, sha256, file_type, \
         status, location, rules, error, scans, scanned_at, created_at, updated_at"
    };
}

#[derive(Debug)]
pub struct NewUpload<'a> {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub request_id: Uuid,
    pub file_name: &'a str,
    pub description: Option<&'a str>,
    pub size_bytes: i64,
    pub sha256: &'a [u8],
    pub file_type: &'a str,
}

/// Inserts an upload (pending_scan, in staging). `None` when the owner already has
/// an upload with the same content (not rejected): the caller returns that one.
pub async fn insert(
    db: impl PgExecutor<'_>,
    new: &NewUpload<'_>,
) -> Result<Option<UploadRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "INSERT INTO uploads (id, owner_id, request_id, file_name, description, size_bytes, sha256, file_type) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (owner_id, sha256) WHERE status <> 'rejected' DO NOTHING RETURNING ",
        columns!()
    ))
    .bind(new.id)
    .bind(new.owner_id)
    .bind(new.request_id)
    .bind(new.file_name)
    .bind(new.description)
    .bind(new.size_bytes)
    .bind(new.sha256)
    .bind(new.file_type)
    .fetch_optional(db)
    .await
}

/// The owner's upload with this content, if any (not rejected).
pub async fn find_by_content(
    db: impl PgExecutor<'_>,
    owner: Uuid,
    sha256: &[u8],
) -> Result<Option<UploadRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM uploads WHERE owner_id = $1 AND sha256 = $2 AND status <> 'rejected'"
    ))
    .bind(owner)
    .bind(sha256)
    .fetch_optional(db)
    .await
}

/// An upload, if `owner` (when given) owns it: another user's upload is not found.
#[tracing::instrument(name = "db", target = "conveyor_trace", skip_all, fields(otel.name = "SELECT uploads", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "uploads"))]
pub async fn find(
    db: impl PgExecutor<'_>,
    id: Uuid,
    owner: Option<Uuid>,
) -> Result<Option<UploadRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM uploads WHERE id = $1 AND ($2::uuid IS NULL OR owner_id = $2)"
    ))
    .bind(id)
    .bind(owner)
    .fetch_optional(db)
    .await
}

/// `owner`'s uploads among `ids` (another's are left out: not found).
pub async fn owned(
    db: impl PgExecutor<'_>,
    owner: Uuid,
    ids: &[Uuid],
) -> Result<Vec<UploadRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM uploads WHERE id = ANY($1) AND owner_id = $2"
    ))
    .bind(ids)
    .bind(owner)
    .fetch_all(db)
    .await
}

/// The upload, locked until the transaction ends (verdicts and moves of one upload
/// never interleave).
#[tracing::instrument(name = "db", target = "conveyor_trace", skip_all, fields(otel.name = "SELECT uploads", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "uploads"))]
pub async fn lock(db: &mut PgConnection, id: Uuid) -> Result<Option<UploadRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM uploads WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// One page of an owner's uploads, newest first, after the `(created_at, id)` of the
/// previous page's last row.
pub async fn list(
    db: impl PgExecutor<'_>,
    owner: Uuid,
    after: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> Result<Vec<UploadRow>, sqlx::Error> {
    let (after_time, after_id) = after.map_or((None, None), |(t, id)| (Some(t), Some(id)));
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM uploads WHERE owner_id = $1 \
           AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3)) \
         ORDER BY created_at DESC, id DESC LIMIT $4"
    ))
    .bind(owner)
    .bind(after_time)
    .bind(after_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// What an operator lists across every account.
#[derive(Debug, Clone, Default)]
pub struct UploadFilter {
    pub status: Option<UploadStatus>,
    pub owner: Option<Uuid>,
    /// The `(created_at, id)` of the last row of the previous page.
    pub after: Option<(OffsetDateTime, Uuid)>,
    pub limit: i64,
}

/// One page of every account's uploads (an operator's view), newest first. The
/// statement holds only the filters given, so each combination gets its own plan:
/// `uploads_created_idx` serves the whole table, `uploads_status_created_idx` a
/// status, `uploads_owner_created_idx` an owner (with a status too, the owner's
/// indexes bound the rows read to that owner's).
pub async fn list_all(
    db: impl PgExecutor<'_>,
    filter: &UploadFilter,
) -> Result<Vec<UploadRow>, sqlx::Error> {
    let mut query = sqlx::QueryBuilder::<sqlx::Postgres>::new(concat!(
        "SELECT ",
        columns!(),
        " FROM uploads WHERE true"
    ));
    if let Some(status) = filter.status {
        query.push(" AND status = ").push_bind(status);
    }
    if let Some(owner) = filter.owner {
        query.push(" AND owner_id = ").push_bind(owner);
    }
    super::newest_first(&mut query, filter.after, filter.limit);
    query.build_query_as().fetch_all(db).await
}

/// What an owner holds: bytes of every upload that is not rejected, and how many
/// uploads were created since `since`.
#[derive(Debug, Clone, Copy, FromRow)]
pub struct Usage {
    pub bytes: i64,
    pub recent: i64,
}

pub async fn usage(
    db: impl PgExecutor<'_>,
    owner: Uuid,
    since: OffsetDateTime,
) -> Result<Usage, sqlx::Error> {
    sqlx::query_as(
        "SELECT COALESCE(SUM(size_bytes) FILTER (WHERE status <> 'rejected'), 0)::bigint AS bytes, \
                COUNT(*) FILTER (WHERE created_at >= $2) AS recent \
         FROM uploads WHERE owner_id = $1",
    )
    .bind(owner)
    .bind(since)
    .fetch_one(db)
    .await
}

/// Serializes the quota check and insert of one owner's uploads until the
/// transaction ends (parallel uploads cannot both pass a nearly full quota).
pub async fn lock_owner(db: &mut PgConnection, owner: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('uploads:' || $1::text, 0))")
        .bind(owner)
        .execute(db)
        .await?;
    Ok(())
}

/// staging → stored (its object was verified and moved). False if it had already
/// moved (a redelivered job).
#[tracing::instrument(name = "db", target = "conveyor_trace", skip_all, fields(otel.name = "UPDATE uploads", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "UPDATE", db.collection.name = "uploads"))]
pub async fn mark_stored(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE uploads SET location = 'stored' \
         WHERE id = $1 AND location = 'staging' AND status = 'pending_scan'",
    )
    .bind(id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// pending_scan → rejected: the staged object is not what the api received.
#[tracing::instrument(name = "db", target = "conveyor_trace", skip_all, fields(otel.name = "UPDATE uploads", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "UPDATE", db.collection.name = "uploads"))]
pub async fn reject(db: impl PgExecutor<'_>, id: Uuid, error: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE uploads SET status = 'rejected', error = $2 \
         WHERE id = $1 AND location = 'staging' AND status = 'pending_scan'",
    )
    .bind(id)
    .bind(error)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A scan's verdict: `clean` (kept in `stored`) or `infected` (in `quarantine`).
#[tracing::instrument(name = "db", target = "conveyor_trace", skip_all, fields(otel.name = "UPDATE uploads", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "UPDATE", db.collection.name = "uploads"))]
pub async fn record_verdict(
    db: impl PgExecutor<'_>,
    id: Uuid,
    status: UploadStatus,
    location: UploadLocation,
    rules: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE uploads SET status = $2, location = $3, rules = $4, scans = scans + 1, \
                scanned_at = now() \
         WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(location)
    .bind(rules)
    .execute(db)
    .await?;
    Ok(())
}

/// Ids of uploads that have a stored or quarantined object, in id order after
/// `after` and below `before` (rescan-all walks them in pages, up to its own id).
pub async fn scannable_ids(
    db: impl PgExecutor<'_>,
    after: Option<Uuid>,
    before: Uuid,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM uploads WHERE location <> 'staging' AND ($1::uuid IS NULL OR id > $1) \
         AND id < $2 ORDER BY id LIMIT $3",
    )
    .bind(after)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

#[cfg(test)]
mod tests {
    use crate::domain::{UploadLocation, UploadStatus};

    #[test]
    fn every_status_and_location_literal_in_the_sql_is_one() {
        let source = include_str!("uploads.rs");
        let sql = &source[..source.find("#[cfg(test)]").unwrap_or(source.len())];
        let statuses = crate::db::jobs::tests::literals_parse::<UploadStatus>(sql, "status");
        let locations = crate::db::jobs::tests::literals_parse::<UploadLocation>(sql, "location");
        assert!(statuses >= 6, "found only {statuses} status literals");
        assert!(locations >= 4, "found only {locations} location literals");
    }
}
