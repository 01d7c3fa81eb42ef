//! `webhook_secrets` and `webhook_deliveries`: each user's signing secret (sealed,
//! with the one a rotation retired during its grace period), and the completion
//! webhooks of finished requests. A delivery is inserted by the `requests` trigger
//! when a request with a `callback_url` finishes; workers [`claim`] due ones (a
//! lease: `next_attempt_at` pushed forward, one attempt counted) and record how each
//! attempt ended with a compare-and-set on that count, so a worker whose lease ran
//! out cannot overwrite a newer attempt's outcome.

use std::time::Duration;

use serde::Serialize;
use sqlx::{FromRow, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

/// When the current secret was made and until when the previous one still signs.
#[derive(Debug, Clone, FromRow)]
pub struct SecretStatus {
    pub created_at: OffsetDateTime,
    pub previous_until: Option<OffsetDateTime>,
}

/// Makes `owner`'s secret `sealed`; an existing one becomes the previous secret and
/// keeps signing for `grace`.
pub async fn rotate_secret(
    db: impl PgExecutor<'_>,
    owner: Uuid,
    sealed: &[u8],
    grace: Duration,
) -> Result<SecretStatus, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO webhook_secrets (owner_id, secret) VALUES ($1, $2) \
         ON CONFLICT (owner_id) DO UPDATE SET previous = webhook_secrets.secret, \
             previous_until = now() + make_interval(secs => $3), \
             secret = EXCLUDED.secret, created_at = now() \
         RETURNING created_at, previous_until",
    )
    .bind(owner)
    .bind(sealed)
    .bind(grace.as_secs_f64())
    .fetch_one(db)
    .await
}

/// `owner`'s secret, if any: when it was made, and until when the previous one
/// signs (absent once that has passed).
pub async fn secret_status(
    db: impl PgExecutor<'_>,
    owner: Uuid,
) -> Result<Option<SecretStatus>, sqlx::Error> {
    sqlx::query_as(
        "SELECT created_at, CASE WHEN previous_until > now() THEN previous_until END AS previous_until \
         FROM webhook_secrets WHERE owner_id = $1",
    )
    .bind(owner)
    .fetch_optional(db)
    .await
}

/// The sealed secrets that sign `owner`'s webhooks now: the current one, then the
/// previous one while its grace period lasts.
pub async fn signing_secrets(
    db: impl PgExecutor<'_>,
    owner: Uuid,
) -> Result<Vec<Vec<u8>>, sqlx::Error> {
    let row: Option<(Vec<u8>, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT secret, CASE WHEN previous_until > now() THEN previous END \
         FROM webhook_secrets WHERE owner_id = $1",
    )
    .bind(owner)
    .fetch_optional(db)
    .await?;
    Ok(row
        .map(|(current, previous)| std::iter::once(current).chain(previous).collect())
        .unwrap_or_default())
}

/// A delivery's state as a request's owner sees it.
#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct DeliveryState {
    /// `pending` (being delivered or waiting to retry), `delivered` or `dead`.
    pub status: String,
    /// Attempts so far.
    pub attempts: i32,
    /// Why the last attempt failed (an HTTP status, a timeout, a refused address).
    pub last_error: Option<String>,
    /// The receiver's last HTTP status, if it answered.
    pub last_status: Option<i32>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub delivered_at: Option<OffsetDateTime>,
}

/// The completion webhook of a request, if one was made.
pub async fn state_of(
    db: impl PgExecutor<'_>,
    request_id: Uuid,
) -> Result<Option<DeliveryState>, sqlx::Error> {
    sqlx::query_as(
        "SELECT status, attempts, last_error, last_status, delivered_at \
         FROM webhook_deliveries WHERE request_id = $1 ORDER BY created_at LIMIT 1",
    )
    .bind(request_id)
    .fetch_optional(db)
    .await
}

/// A claimed attempt: which delivery, and which attempt this is (1-based).
#[derive(Debug, Clone, FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub request_id: Uuid,
    pub event: String,
    pub url: String,
    pub attempts: i32,
}

/// Claims up to `limit` due deliveries: counts an attempt on each and leases it for
/// `lease` (it is due again then, should this worker vanish). Rows another worker
/// holds are skipped.
pub async fn claim(
    db: impl PgExecutor<'_>,
    limit: i64,
    lease: Duration,
) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as(
        "WITH due AS ( \
             SELECT id FROM webhook_deliveries \
             WHERE status = 'pending' AND next_attempt_at <= now() \
             ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
         UPDATE webhook_deliveries d SET attempts = d.attempts + 1, \
             next_attempt_at = now() + make_interval(secs => $2) \
         FROM due WHERE d.id = due.id \
         RETURNING d.id, d.request_id, d.event, d.url, d.attempts",
    )
    .bind(limit)
    .bind(lease.as_secs_f64())
    .fetch_all(db)
    .await
}

/// The attempt `attempt` of delivery `id` got a 2xx. False if the attempt was no
/// longer this worker's (its lease ran out and another took it).
pub async fn mark_delivered(
    db: impl PgExecutor<'_>,
    id: Uuid,
    attempt: i32,
    status: u16,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(), \
             last_status = $3, last_error = NULL \
         WHERE id = $1 AND attempts = $2 AND status = 'pending'",
    )
    .bind(id)
    .bind(attempt)
    .bind(i32::from(status))
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The attempt `attempt` of delivery `id` failed with `error` (and the receiver's
/// `status`, if it answered): due again at `retry_at`, or `dead` when `None`.
pub async fn mark_failed(
    db: impl PgExecutor<'_>,
    id: Uuid,
    attempt: i32,
    error: &str,
    status: Option<u16>,
    retry_at: Option<OffsetDateTime>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET last_error = $3, last_status = $4, \
             status = CASE WHEN $5::timestamptz IS NULL THEN 'dead' ELSE 'pending' END, \
             next_attempt_at = COALESCE($5, next_attempt_at) \
         WHERE id = $1 AND attempts = $2 AND status = 'pending'",
    )
    .bind(id)
    .bind(attempt)
    .bind(error)
    .bind(status.map(i32::from))
    .bind(retry_at)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives back attempts a stopping worker did not make: due now, not counted.
pub async fn release(db: impl PgExecutor<'_>, claimed: &[(Uuid, i32)]) -> Result<u64, sqlx::Error> {
    let (ids, attempts): (Vec<Uuid>, Vec<i32>) = claimed.iter().copied().unzip();
    let done = sqlx::query(
        "UPDATE webhook_deliveries d SET attempts = d.attempts - 1, next_attempt_at = now() \
         FROM UNNEST($1::uuid[], $2::int[]) AS c(id, attempts) \
         WHERE d.id = c.id AND d.attempts = c.attempts AND d.status = 'pending'",
    )
    .bind(&ids)
    .bind(&attempts)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_status_literal_is_one_the_table_allows() {
        let source = include_str!("webhooks.rs");
        let sql = &source[..source.find("#[cfg(test)]").unwrap_or(source.len())];
        for literal in sql
            .split("status = '")
            .skip(1)
            .chain(sql.split("THEN '").skip(1))
        {
            let value = literal.split('\'').next().unwrap_or_default();
            assert!(["pending", "delivered", "dead"].contains(&value), "{value}");
        }
    }
}
