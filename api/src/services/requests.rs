//! Submitting work and following it. A submission is one PostgreSQL transaction —
//! the request, its jobs (the outbox) and the idempotency record — then a push of
//! the job ids to Redis. If the push fails (Redis down) the client still gets 202:
//! the dispatcher pushes the jobs when Redis is back.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use shared::db::jobs;
use shared::db::requests::{self, NewRequest, RequestRow};
use shared::queue::{Queue, QueueName};
use shared::telemetry::metric;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// How long an Idempotency-Key is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

/// What to create.
#[derive(Debug)]
pub struct Submission {
    pub owner: Uuid,
    pub kind: &'static str,
    pub name: Option<String>,
    pub correlation_id: Option<String>,
    pub content: Option<serde_json::Value>,
    pub queue: QueueName,
    pub max_attempts: u32,
    pub payloads: Vec<serde_json::Value>,
}

/// An `Idempotency-Key` and the fingerprint of the request it came with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: Vec<u8>,
}

/// The body of a 202.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Accepted {
    pub id: Uuid,
    pub kind: String,
    pub status: String,
    /// Jobs (messages) in the request.
    pub total: i32,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// Where to follow it.
    pub location: String,
}

impl From<&RequestRow> for Accepted {
    fn from(row: &RequestRow) -> Self {
        Accepted {
            id: row.id,
            kind: row.kind.clone(),
            status: row.status.clone(),
            total: row.total,
            created_at: row.created_at,
            location: format!("/api/v1/requests/{}", row.id),
        }
    }
}

/// Creates the request and its jobs, then dispatches them. With an idempotency key,
/// a repeat returns the first response; the same key with another body is refused;
/// a concurrent duplicate waits on the key's row and then replays.
pub async fn submit(
    state: &AppState,
    submission: Submission,
    idempotency: Option<Idempotency>,
) -> Result<Accepted, ApiError> {
    let mut tx = state.pool.begin().await?;
    if let Some(idem) = &idempotency
        && let Some(replay) = claim_key(&mut tx, submission.owner, idem).await?
    {
        return Ok(replay);
    }
    let total = i32::try_from(submission.payloads.len())
        .map_err(|_| ApiError::validation("too many jobs"))?;
    let row = requests::insert(
        &mut *tx,
        &NewRequest {
            id: Uuid::now_v7(),
            owner_id: submission.owner,
            kind: submission.kind,
            name: submission.name.as_deref(),
            correlation_id: submission.correlation_id.as_deref(),
            content: submission.content,
            total,
        },
    )
    .await?;
    let max_attempts = i32::try_from(submission.max_attempts).unwrap_or(i32::MAX);
    let ids = jobs::insert_many(
        &mut tx,
        row.id,
        submission.queue.as_str(),
        submission.payloads,
        max_attempts,
    )
    .await?;
    let accepted = Accepted::from(&row);
    if let Some(idem) = &idempotency {
        let body = serde_json::to_value(&accepted).map_err(|e| ApiError::Internal(e.into()))?;
        sqlx::query(
            "UPDATE idempotency_keys SET request_id = $3, response_status = 202, response_body = $4 \
             WHERE owner_id = $1 AND key = $2",
        )
        .bind(submission.owner)
        .bind(&idem.key)
        .bind(row.id)
        .bind(body)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    metrics::counter!(metric::JOBS_ENQUEUED_TOTAL, "queue" => submission.queue.as_str())
        .increment(ids.len() as u64);
    dispatch(state, submission.queue, &ids, "request").await;
    Ok(accepted)
}

/// Takes the key for this request, or returns the response to replay.
async fn claim_key(
    tx: &mut sqlx::PgConnection,
    owner: Uuid,
    idem: &Idempotency,
) -> Result<Option<Accepted>, ApiError> {
    let expired_before = OffsetDateTime::now_utc() - IDEMPOTENCY_TTL;
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE owner_id = $1 AND key = $2 AND created_at < $3",
    )
    .bind(owner)
    .bind(&idem.key)
    .bind(expired_before)
    .execute(&mut *tx)
    .await?;
    // Blocks while a concurrent transaction holds the same key, then sees its outcome.
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (owner_id, key, fingerprint) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(owner)
    .bind(&idem.key)
    .bind(&idem.fingerprint)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(None);
    }
    let existing: Option<(Vec<u8>, Option<serde_json::Value>)> = sqlx::query_as(
        "SELECT fingerprint, response_body FROM idempotency_keys WHERE owner_id = $1 AND key = $2",
    )
    .bind(owner)
    .bind(&idem.key)
    .fetch_optional(&mut *tx)
    .await?;
    match existing {
        Some((fingerprint, _)) if fingerprint != idem.fingerprint => {
            Err(ApiError::IdempotencyKeyReused)
        }
        Some((_, Some(body))) => serde_json::from_value(body)
            .map(Some)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored idempotent response: {e}"))),
        _ => Err(ApiError::Conflict(
            "a request with this Idempotency-Key is being processed".into(),
        )),
    }
}

/// Pushes job ids and marks them dispatched. Failure is logged, never returned: the
/// dispatcher retries.
pub async fn dispatch(state: &AppState, queue: QueueName, ids: &[Uuid], source: &'static str) {
    if ids.is_empty() {
        return;
    }
    let strings: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    if let Err(err) = Queue::new(state.redis.clone(), queue).push(&strings).await {
        tracing::warn!(error = %err, jobs = ids.len(), "cannot push jobs to Redis; the dispatcher will");
        return;
    }
    metrics::counter!(metric::JOBS_DISPATCHED_TOTAL, "queue" => queue.as_str(), "source" => source)
        .increment(ids.len() as u64);
    if let Err(err) = jobs::mark_dispatched(&state.pool, ids).await {
        // Pushed but not marked: the dispatcher pushes again, the claim makes it a no-op.
        tracing::warn!(error = %err, "cannot mark jobs dispatched");
    }
}

/// Rows per dispatcher transaction.
const DISPATCH_BATCH: i64 = 5000;

/// The dispatcher: pushes committed-but-undispatched jobs, and re-pushes jobs Redis
/// lost (not claimed within REDELIVERY_TIMEOUT_SECS). Safe in every api replica:
/// rows are taken with `FOR UPDATE SKIP LOCKED`.
pub async fn run_dispatcher(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(state.config.dispatch_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticker.tick() => {}
        }
        if let Err(err) = dispatch_round(&state).await {
            tracing::warn!(error = %err, "dispatcher round failed");
        }
    }
}

/// One round; returns how many jobs were pushed.
pub async fn dispatch_round(state: &AppState) -> Result<usize, anyhow::Error> {
    let mut pushed = 0;
    loop {
        let mut tx = state.pool.begin().await?;
        let batch = jobs::lock_undispatched(&mut tx, DISPATCH_BATCH).await?;
        let n = batch.len();
        pushed += push_locked(state, &mut tx, batch, "dispatcher").await?;
        tx.commit().await?;
        if n < usize::try_from(DISPATCH_BATCH).unwrap_or(usize::MAX) {
            break;
        }
    }
    let before = OffsetDateTime::now_utc() - state.config.redelivery_timeout;
    let mut tx = state.pool.begin().await?;
    let lost = jobs::lock_lost(&mut tx, before, DISPATCH_BATCH).await?;
    let lost = skip_still_queued(state, lost).await;
    pushed += push_locked(state, &mut tx, lost, "reconciler").await?;
    tx.commit().await?;
    let backlog: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE status = 'queued' AND dispatched_at IS NULL",
    )
    .fetch_one(&state.pool)
    .await?;
    metrics::gauge!(metric::DISPATCHER_BACKLOG).set(backlog as f64);
    sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
        .bind(OffsetDateTime::now_utc() - IDEMPOTENCY_TTL)
        .execute(&state.pool)
        .await?;
    Ok(pushed)
}

/// A queued job that is not claimed may simply wait behind a long backlog: re-push
/// queued jobs of a queue only when its ready list is empty (then Redis lost them).
async fn skip_still_queued(
    state: &AppState,
    lost: Vec<(Uuid, String, String)>,
) -> Vec<(Uuid, String)> {
    let mut ready_len: HashMap<String, u64> = HashMap::new();
    let mut kept = Vec::with_capacity(lost.len());
    for (id, queue, status) in lost {
        if status == "queued" {
            let len = match ready_len.get(&queue) {
                Some(len) => *len,
                None => {
                    let len = match queue.parse::<QueueName>() {
                        Ok(name) => Queue::new(state.redis.clone(), name)
                            .depth()
                            .await
                            .map(|(r, _)| r)
                            .unwrap_or(0),
                        Err(_) => 0,
                    };
                    ready_len.insert(queue.clone(), len);
                    len
                }
            };
            if len > 0 {
                continue;
            }
        }
        kept.push((id, queue));
    }
    kept
}

async fn push_locked(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    rows: Vec<(Uuid, String)>,
    source: &'static str,
) -> Result<usize, anyhow::Error> {
    let mut by_queue: HashMap<QueueName, Vec<Uuid>> = HashMap::new();
    for (id, queue) in rows {
        match queue.parse::<QueueName>() {
            Ok(name) => by_queue.entry(name).or_default().push(id),
            Err(err) => tracing::error!(job_id = %id, error = %err, "job on an unknown queue"),
        }
    }
    let mut pushed = 0;
    for (queue, ids) in by_queue {
        let strings: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        Queue::new(state.redis.clone(), queue)
            .push(&strings)
            .await?;
        jobs::mark_dispatched(&mut *tx, &ids).await?;
        metrics::counter!(metric::JOBS_DISPATCHED_TOTAL, "queue" => queue.as_str(), "source" => source)
            .increment(ids.len() as u64);
        if source == "reconciler" {
            tracing::warn!(queue = %queue, jobs = ids.len(), "re-pushed jobs Redis seems to have lost");
        }
        pushed += ids.len();
    }
    Ok(pushed)
}
