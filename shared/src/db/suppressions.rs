//! `suppressions` (each sending account's list, addresses sealed and found by blind
//! index) and `email_events` (what happened to a sent message afterwards: bounced,
//! complained, unsubscribed — once per kind, for campaign statistics). Adding is
//! idempotent everywhere: a redelivered job, a repeated one-click POST or a report
//! read twice changes nothing the second time.

use sqlx::{FromRow, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::suppression::Reason;

#[derive(Debug, Clone, FromRow)]
pub struct SuppressionRow {
    pub id: Uuid,
    pub owner_id: Uuid,
    /// Sealed: open with [`crate::suppression::AddressKeys::open`].
    pub address: Vec<u8>,
    pub reason: Reason,
    pub detail: Option<String>,
    pub job_id: Option<Uuid>,
    pub request_id: Option<Uuid>,
    pub created_at: OffsetDateTime,
}

macro_rules! columns {
    () => {
        "id, owner_id, address, reason, detail, job_id, request_id, created_at"
    };
}

/// One address to add.
#[derive(Debug, Clone)]
pub struct NewSuppression<'a> {
    pub index: &'a [u8],
    pub sealed: &'a [u8],
    pub reason: Reason,
    pub detail: Option<&'a str>,
    pub job_id: Option<Uuid>,
    pub request_id: Option<Uuid>,
}

/// Adds an address to `owner`'s list. Returns the entry and whether it is new (an
/// address already listed keeps its first reason).
pub async fn add(
    db: &mut sqlx::PgConnection,
    owner: Uuid,
    new: &NewSuppression<'_>,
) -> Result<(SuppressionRow, bool), sqlx::Error> {
    let inserted: Option<SuppressionRow> = sqlx::query_as(concat!(
        "INSERT INTO suppressions (id, owner_id, address_index, address, reason, detail, job_id, request_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (owner_id, address_index) DO NOTHING RETURNING ",
        columns!()
    ))
    .bind(Uuid::now_v7())
    .bind(owner)
    .bind(new.index)
    .bind(new.sealed)
    .bind(new.reason)
    .bind(new.detail)
    .bind(new.job_id)
    .bind(new.request_id)
    .fetch_optional(&mut *db)
    .await?;
    if let Some(row) = inserted {
        return Ok((row, true));
    }
    let existing = find_by_index(&mut *db, owner, new.index).await?;
    existing
        .map(|row| (row, false))
        .ok_or(sqlx::Error::RowNotFound)
}

/// Adds addresses to the list of the account that sent `request_id` (the worker's
/// bounces: it knows the request, not its owner). Returns how many were new.
pub async fn add_for_request(
    db: impl PgExecutor<'_>,
    request_id: Uuid,
    entries: &[NewSuppression<'_>],
) -> Result<u64, sqlx::Error> {
    if entries.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = entries.iter().map(|_| Uuid::now_v7()).collect();
    let indexes: Vec<&[u8]> = entries.iter().map(|e| e.index).collect();
    let sealed: Vec<&[u8]> = entries.iter().map(|e| e.sealed).collect();
    let reasons: Vec<Reason> = entries.iter().map(|e| e.reason).collect();
    let details: Vec<Option<&str>> = entries.iter().map(|e| e.detail).collect();
    let jobs: Vec<Option<Uuid>> = entries.iter().map(|e| e.job_id).collect();
    let done = sqlx::query(
        "INSERT INTO suppressions (id, owner_id, address_index, address, reason, detail, job_id, request_id) \
         SELECT e.id, r.owner_id, e.address_index, e.address, e.reason, e.detail, e.job_id, r.id \
         FROM requests r, \
              UNNEST($2::uuid[], $3::bytea[], $4::bytea[], $5::text[], $6::text[], $7::uuid[]) \
                  AS e(id, address_index, address, reason, detail, job_id) \
         WHERE r.id = $1 \
         ON CONFLICT (owner_id, address_index) DO NOTHING",
    )
    .bind(request_id)
    .bind(&ids)
    .bind(&indexes)
    .bind(&sealed)
    .bind(&reasons)
    .bind(&details)
    .bind(&jobs)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Which of `indexes` are on the list of the account that sent `request_id`: one
/// indexed lookup per message, before it is sent.
#[tracing::instrument(name = "db", target = "conveyor_trace", skip_all, fields(otel.name = "SELECT suppressions", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "suppressions"))]
pub async fn suppressed_among(
    db: impl PgExecutor<'_>,
    request_id: Uuid,
    indexes: &[Vec<u8>],
) -> Result<Vec<Vec<u8>>, sqlx::Error> {
    if indexes.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar(
        "SELECT s.address_index FROM requests r \
         JOIN suppressions s ON s.owner_id = r.owner_id AND s.address_index = ANY($2) \
         WHERE r.id = $1",
    )
    .bind(request_id)
    .bind(indexes)
    .fetch_all(db)
    .await
}

pub async fn find_by_index(
    db: impl PgExecutor<'_>,
    owner: Uuid,
    index: &[u8],
) -> Result<Option<SuppressionRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM suppressions WHERE owner_id = $1 AND address_index = $2"
    ))
    .bind(owner)
    .bind(index)
    .fetch_optional(db)
    .await
}

/// Every account's entry for the address of blind index `index` (an operator's
/// lookup), newest first.
pub async fn find_everywhere(
    db: impl PgExecutor<'_>,
    index: &[u8],
    limit: i64,
) -> Result<Vec<SuppressionRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM suppressions WHERE address_index = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
    ))
    .bind(index)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A page of `owner`'s list, newest first, after the `(created_at, id)` cursor.
pub async fn list(
    db: impl PgExecutor<'_>,
    owner: Uuid,
    after: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> Result<Vec<SuppressionRow>, sqlx::Error> {
    let (at, id) = after.unzip();
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM suppressions WHERE owner_id = $1 \
          AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3)) \
          ORDER BY created_at DESC, id DESC LIMIT $4"
    ))
    .bind(owner)
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Removes an entry of `owner`'s list; false if it has no such entry.
pub async fn remove(db: impl PgExecutor<'_>, owner: Uuid, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM suppressions WHERE owner_id = $1 AND id = $2")
        .bind(owner)
        .bind(id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes an entry of `owner`'s list, returning its reason; `None` if it has no
/// such entry.
pub async fn remove_returning_reason(
    db: impl PgExecutor<'_>,
    owner: Uuid,
    id: Uuid,
) -> Result<Option<Reason>, sqlx::Error> {
    sqlx::query_scalar("DELETE FROM suppressions WHERE owner_id = $1 AND id = $2 RETURNING reason")
        .bind(owner)
        .bind(id)
        .fetch_optional(db)
        .await
}

crate::domain::status::text_enum!(
    /// What happened to a message after the relay accepted (or refused) it.
    EventKind {
        Bounced => "bounced",
        Complained => "complained",
        Unsubscribed => "unsubscribed",
    }
);

/// Records that `kind` happened to message `job_id` of `request_id`, once. Returns
/// whether it is new.
pub async fn record_event(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    request_id: Uuid,
    kind: EventKind,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO email_events (job_id, request_id, kind) \
         SELECT $1, id, $3 FROM requests WHERE id = $2 \
         ON CONFLICT (job_id, kind) DO NOTHING",
    )
    .bind(job_id)
    .bind(request_id)
    .bind(kind)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A request's messages by what happened to them.
#[derive(Debug, Clone, Copy, Default, FromRow, PartialEq, Eq)]
pub struct EventCounts {
    pub bounced: i64,
    pub complained: i64,
    pub unsubscribed: i64,
}

pub async fn event_counts(
    db: impl PgExecutor<'_>,
    request_id: Uuid,
) -> Result<EventCounts, sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE kind = 'bounced') AS bounced, \
                count(*) FILTER (WHERE kind = 'complained') AS complained, \
                count(*) FILTER (WHERE kind = 'unsubscribed') AS unsubscribed \
         FROM email_events WHERE request_id = $1",
    )
    .bind(request_id)
    .fetch_one(db)
    .await
}

/// Complaint rates of recent campaigns (running, or finished within `window`), for
/// the per-campaign gauge: `(campaign id, delivered, complained)`, newest first.
pub async fn recent_campaign_complaints(
    db: impl PgExecutor<'_>,
    window: std::time::Duration,
    limit: i64,
) -> Result<Vec<(Uuid, i64, i64)>, sqlx::Error> {
    let since = OffsetDateTime::now_utc() - window;
    sqlx::query_as(
        "SELECT r.id, r.succeeded::bigint, \
                (SELECT count(*) FROM email_events e WHERE e.request_id = r.id AND e.kind = 'complained') \
         FROM requests r \
         WHERE r.kind = 'campaign' AND (r.finished_at IS NULL OR r.finished_at > $1) \
         ORDER BY r.created_at DESC LIMIT $2",
    )
    .bind(since)
    .bind(limit)
    .fetch_all(db)
    .await
}
