//! `idempotency_keys`: one request per (owner, `Idempotency-Key`) while the key is
//! remembered, with the response to replay.

use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

/// Takes the key for a new request: forgets an expired record of it first, then
/// inserts. `false` if the key is held: a concurrent transaction holding it makes
/// this wait for its outcome.
pub async fn take(
    tx: &mut PgConnection,
    owner: Uuid,
    key: &str,
    fingerprint: &[u8],
    expired_before: OffsetDateTime,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE owner_id = $1 AND key = $2 AND created_at < $3",
    )
    .bind(owner)
    .bind(key)
    .bind(expired_before)
    .execute(&mut *tx)
    .await?;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (owner_id, key, fingerprint) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(owner)
    .bind(key)
    .bind(fingerprint)
    .execute(&mut *tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// A held key: the fingerprint of its request and the response, once recorded.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Held {
    pub fingerprint: Vec<u8>,
    pub response_body: Option<serde_json::Value>,
}

#[tracing::instrument(name = "db", target = "conveyor_trace", skip_all, fields(otel.name = "SELECT idempotency_keys", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "idempotency_keys"))]
pub async fn find(
    db: impl PgExecutor<'_>,
    owner: Uuid,
    key: &str,
) -> Result<Option<Held>, sqlx::Error> {
    sqlx::query_as(
        "SELECT fingerprint, response_body FROM idempotency_keys WHERE owner_id = $1 AND key = $2",
    )
    .bind(owner)
    .bind(key)
    .fetch_optional(db)
    .await
}

/// Stores the response a repeat of the key replays.
pub async fn record_response(
    db: impl PgExecutor<'_>,
    owner: Uuid,
    key: &str,
    request_id: Uuid,
    status: u16,
    body: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE idempotency_keys SET request_id = $3, response_status = $4, response_body = $5 \
         WHERE owner_id = $1 AND key = $2",
    )
    .bind(owner)
    .bind(key)
    .bind(request_id)
    .bind(i32::from(status))
    .bind(body)
    .execute(db)
    .await?;
    Ok(())
}

/// Forgets keys older than `before`; returns how many.
pub async fn purge_expired(
    db: impl PgExecutor<'_>,
    before: OffsetDateTime,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
        .bind(before)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}
