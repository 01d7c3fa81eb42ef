//! `audit_log`: one row per admin action (api or command line), written in the
//! action's own transaction where it has one. Append-only: a trigger refuses updates
//! and deletes.

use sqlx::{FromRow, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

macro_rules! columns {
    () => {
        "id, actor, actor_id, action, target, details, request_id, created_at"
    };
}

#[derive(Debug, Clone, FromRow)]
pub struct AuditRow {
    pub id: Uuid,
    /// `admin:<user id>` or `cli:<operator>`.
    pub actor: String,
    pub actor_id: Option<Uuid>,
    pub action: String,
    pub target: Option<String>,
    pub details: serde_json::Value,
    pub request_id: Option<String>,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    pub actor: &'a str,
    pub actor_id: Option<Uuid>,
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub details: serde_json::Value,
    pub request_id: Option<&'a str>,
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    entry: &NewEntry<'_>,
) -> Result<AuditRow, sqlx::Error> {
    sqlx::query_as(concat!(
        "INSERT INTO audit_log (id, actor, actor_id, action, target, details, request_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         RETURNING ",
        columns!()
    ))
    .bind(Uuid::now_v7())
    .bind(entry.actor)
    .bind(entry.actor_id)
    .bind(entry.action)
    .bind(entry.target)
    .bind(&entry.details)
    .bind(entry.request_id)
    .fetch_one(db)
    .await
}

/// One page, newest first, after the `(created_at, id)` of the previous page's last row.
pub async fn list(
    db: impl PgExecutor<'_>,
    after: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    // Two statements rather than `$1 IS NULL OR …`, so each page is an index range scan.
    match after {
        None => {
            sqlx::query_as(concat!(
                "SELECT ",
                columns!(),
                " FROM audit_log ORDER BY created_at DESC, id DESC LIMIT $1"
            ))
            .bind(limit)
            .fetch_all(db)
            .await
        }
        Some((at, id)) => {
            sqlx::query_as(concat!(
                "SELECT ",
                columns!(),
                " FROM audit_log WHERE (created_at, id) < ($1, $2) \
             ORDER BY created_at DESC, id DESC LIMIT $3"
            ))
            .bind(at)
            .bind(id)
            .bind(limit)
            .fetch_all(db)
            .await
        }
    }
}
