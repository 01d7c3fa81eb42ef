//! `webhook_secrets` and `webhook_deliveries`: each user's signing secret (sealed,
//! with the one a rotation retired during its grace period), and the completion
//! webhooks of finished requests. A delivery is made with its `webhooks` job (the
//! same id) by `requests::finish`; the job carries its attempts and outcome, the row
//! what the job does not (request, event, URL, the receiver's last answer).

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
#[tracing::instrument(name = "db", target = "conveyor_trace", skip_all, fields(otel.name = "SELECT webhook_secrets", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "webhook_secrets"))]
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
    /// Why the last attempt failed: the receiver's HTTP status, a timeout, a failed
    /// connection, or a refused address (`the callback address is not a public
    /// address`; what the name resolved to is for operators only).
    pub last_error: Option<String>,
    /// The receiver's last HTTP status, if it answered.
    pub last_status: Option<i32>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub delivered_at: Option<OffsetDateTime>,
}

/// The completion webhook of a request, if one was made: its delivery job's state.
pub async fn state_of(
    db: impl PgExecutor<'_>,
    request_id: Uuid,
) -> Result<Option<DeliveryState>, sqlx::Error> {
    sqlx::query_as(
        "SELECT CASE j.status WHEN 'succeeded' THEN 'delivered' \
                    WHEN 'dead' THEN 'dead' WHEN 'cancelled' THEN 'dead' \
                    ELSE 'pending' END AS status, \
                coalesce(j.attempt, 0) AS attempts, coalesce(d.refusal, j.last_error) \
                    AS last_error, d.last_status, \
                CASE WHEN j.status = 'succeeded' THEN j.finished_at END AS delivered_at \
         FROM webhook_deliveries d LEFT JOIN jobs j ON j.id = d.id \
         WHERE d.request_id = $1 ORDER BY d.created_at LIMIT 1",
    )
    .bind(request_id)
    .fetch_optional(db)
    .await
}

/// A delivery as operators see it: the row and its job's state (`None` fields once
/// the job is gone).
#[derive(Debug, Clone, FromRow)]
pub struct DeliveryRecord {
    pub id: Uuid,
    pub event: String,
    /// The whole callback URL: its query may hold the receiver's secret.
    pub url: String,
    pub last_status: Option<i32>,
    /// Why its address was refused, in words for the owner.
    pub refusal: Option<String>,
    pub created_at: OffsetDateTime,
    pub job_status: Option<crate::domain::JobStatus>,
    pub attempts: i32,
    pub max_attempts: Option<i32>,
    pub last_error: Option<String>,
    /// When its next attempt is due (a job waiting to retry).
    pub run_after: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
}

/// The completion webhook deliveries of a request, oldest first (at most `limit`);
/// `(request_id, event)`'s unique index finds them.
pub async fn deliveries_of(
    db: impl PgExecutor<'_>,
    request_id: Uuid,
    limit: i64,
) -> Result<Vec<DeliveryRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.id, d.event, d.url, d.last_status, d.refusal, d.created_at, \
                j.status AS job_status, coalesce(j.attempt, 0) AS attempts, j.max_attempts, \
                j.last_error, j.run_after, j.finished_at \
         FROM webhook_deliveries d LEFT JOIN jobs j ON j.id = d.id \
         WHERE d.request_id = $1 ORDER BY d.created_at, d.id LIMIT $2",
    )
    .bind(request_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Records deliveries `(id, request, url)` of `event`; returns the ids of those made
/// (a request's delivery of an event is made once: a second is skipped).
pub async fn insert_deliveries(
    db: impl PgExecutor<'_>,
    deliveries: &[(Uuid, Uuid, &str)],
    event: &str,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let ids: Vec<Uuid> = deliveries.iter().map(|d| d.0).collect();
    let requests: Vec<Uuid> = deliveries.iter().map(|d| d.1).collect();
    let urls: Vec<&str> = deliveries.iter().map(|d| d.2).collect();
    sqlx::query_scalar(
        "INSERT INTO webhook_deliveries (id, request_id, event, url) \
         SELECT id, request_id, $4, url FROM UNNEST($1::uuid[], $2::uuid[], $3::text[]) \
             AS t(id, request_id, url) \
         ON CONFLICT (request_id, event) DO NOTHING RETURNING id",
    )
    .bind(&ids)
    .bind(&requests)
    .bind(&urls)
    .bind(event)
    .fetch_all(db)
    .await
}

/// A delivery as its job needs it.
#[derive(Debug, Clone, FromRow)]
pub struct Delivery {
    pub id: Uuid,
    pub request_id: Uuid,
    pub event: String,
    pub url: String,
}

/// The delivery `id`; `None` once its request is gone (retention).
#[tracing::instrument(name = "db", target = "conveyor_trace", skip_all, fields(otel.name = "SELECT webhook_deliveries", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "webhook_deliveries"))]
pub async fn delivery(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Delivery>, sqlx::Error> {
    sqlx::query_as("SELECT id, request_id, event, url FROM webhook_deliveries WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// The receiver's HTTP status of the latest attempt, and why its address was refused
/// if it was, in words for the owner (not a state: the delivery's job holds that).
#[tracing::instrument(name = "db", target = "conveyor_trace", skip_all, fields(otel.name = "UPDATE webhook_deliveries", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "UPDATE", db.collection.name = "webhook_deliveries"))]
pub async fn record_answer(
    db: impl PgExecutor<'_>,
    id: Uuid,
    status: Option<u16>,
    refusal: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE webhook_deliveries SET last_status = $2, refusal = $3 WHERE id = $1")
        .bind(id)
        .bind(status.map(i32::from))
        .bind(refusal)
        .execute(db)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn job_statuses_map_onto_the_delivery_states_clients_read() {
        let source = include_str!("webhooks.rs");
        let sql = &source[..source.find("#[cfg(test)]").unwrap_or(source.len())];
        let mut checked = 0;
        for literal in sql
            .split("THEN '")
            .skip(1)
            .chain(sql.split("ELSE '").skip(1))
        {
            let value = literal.split('\'').next().unwrap_or_default();
            assert!(["pending", "delivered", "dead"].contains(&value), "{value}");
            checked += 1;
        }
        for literal in sql
            .split("WHEN '")
            .skip(1)
            .chain(sql.split("status = '").skip(1))
        {
            let value = literal.split('\'').next().unwrap_or_default();
            value
                .parse::<crate::domain::JobStatus>()
                .unwrap_or_else(|err| panic!("{err:?}"));
            checked += 1;
        }
        assert!(checked >= 6, "found only {checked} literals");
    }
}
