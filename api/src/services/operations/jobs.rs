//! Jobs as operators see them (never their payloads): listings, one job, and the
//! retry or discard of a failed one, each audited in its own transaction.

use serde::{Deserialize, Serialize};
use shared::db::jobs::{self, JobFilter, JobRow};
use shared::db::requests as request_rows;
use shared::domain::JobStatus;
use shared::jobs::Enqueued;
use shared::queue::QueueName;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Action, Operator, counted, record};
use crate::error::ApiError;
use crate::state::AppState;

/// A job as operators see it. Never its payload: that holds sealed PII.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: Uuid,
    /// The request it carries out; null for work of its own (a webhook delivery).
    pub request_id: Option<Uuid>,
    pub queue: QueueName,
    pub status: JobStatus,
    /// Attempts so far (0 before the first, and after an operator's retry).
    pub attempt: i32,
    pub max_attempts: i32,
    pub last_error: Option<String>,
    /// When a scheduled retry is due; for a job an operator sent back to its queue,
    /// when that happened (its queue latency counts from there). Cleared at its start.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub run_after: Option<OffsetDateTime>,
    /// When it was last pushed to Redis (null: not yet).
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub dispatched_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<OffsetDateTime>,
    /// Set when an operator discarded the dead job.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub discarded_at: Option<OffsetDateTime>,
    /// Who discarded it (`admin:<user id>` or `cli:<operator>`).
    pub discarded_by: Option<String>,
}

impl From<JobRow> for JobView {
    fn from(row: JobRow) -> Self {
        JobView {
            id: row.id,
            request_id: row.request_id,
            queue: row.queue,
            status: row.status,
            attempt: row.attempt,
            max_attempts: row.max_attempts,
            last_error: row.last_error,
            run_after: row.run_after,
            dispatched_at: row.dispatched_at,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            discarded_at: row.discarded_at,
            discarded_by: row.discarded_by,
        }
    }
}

/// One page of jobs, newest first; asks for one row more than `filter.limit` to know
/// whether another page follows.
pub async fn list_jobs(
    state: &AppState,
    mut filter: JobFilter,
) -> Result<(Vec<JobView>, bool), ApiError> {
    let limit = usize::try_from(filter.limit).unwrap_or(0);
    filter.limit += 1;
    let mut rows = jobs::list(&state.pool, &filter).await?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    Ok((rows.into_iter().map(JobView::from).collect(), more))
}

pub async fn job(state: &AppState, id: Uuid) -> Result<JobView, ApiError> {
    jobs::find(&state.pool, id)
        .await?
        .map(JobView::from)
        .ok_or_else(|| ApiError::NotFound("no such job".into()))
}

/// Why a job cannot take an action: 404, or 409 naming its state and `rule`.
async fn refusal(state: &AppState, id: Uuid, rule: &str) -> ApiError {
    match jobs::find(&state.pool, id).await {
        Ok(None) => ApiError::NotFound("no such job".into()),
        Ok(Some(job)) if job.discarded_at.is_some() => {
            ApiError::Conflict("the job was discarded; it stays dead".into())
        }
        Ok(Some(job)) => ApiError::Conflict(format!("the job is {}; {rule}", job.status)),
        Err(err) => err.into(),
    }
}

/// A dead (not discarded) or cancelled job back to its queue through the normal
/// dispatch path, attempts reset; its request's counts and status are corrected in the
/// same transaction. Any other state is a 409.
pub async fn retry_job(
    state: &AppState,
    operator: &Operator,
    id: Uuid,
) -> Result<JobView, ApiError> {
    let mut tx = state.pool.begin().await?;
    let Some(requeued) = jobs::requeue(&mut tx, id).await? else {
        drop(tx);
        return Err(refusal(
            state,
            id,
            "only dead or cancelled jobs go back to their queue",
        )
        .await);
    };
    let reopened = request_rows::reopen(&mut *tx, &Vec::from_iter(requeued.request_id)).await?;
    record(
        &mut *tx,
        operator,
        Action::Retry,
        &format!("job:{id}"),
        serde_json::json!({
            "queue": requeued.queue,
            "was": requeued.was,
            "request_id": requeued.request_id,
        }),
    )
    .await?;
    tx.commit().await?;
    counted(Action::Retry);
    tracing::info!(actor = operator.actor(), job = %id, was = %requeued.was, "job retried");
    Enqueued::requeued(std::slice::from_ref(&requeued))
        .dispatch(&state.pool, &state.redis)
        .await;
    shared::events::publish(&state.redis, &reopened).await;
    job(state, id).await
}

/// A dead job discarded: kept (for audit) but left out of retries and of the `dead`
/// count. Any other state, or discarded already, is a 409.
pub async fn discard_job(
    state: &AppState,
    operator: &Operator,
    id: Uuid,
) -> Result<JobView, ApiError> {
    let mut tx = state.pool.begin().await?;
    let Some(row) = jobs::discard(&mut *tx, id, operator.actor()).await? else {
        drop(tx);
        return Err(refusal(state, id, "only dead jobs can be discarded").await);
    };
    record(
        &mut *tx,
        operator,
        Action::Discard,
        &format!("job:{id}"),
        serde_json::json!({
            "queue": row.queue,
            "request_id": row.request_id,
            "last_error": row.last_error,
        }),
    )
    .await?;
    tx.commit().await?;
    counted(Action::Discard);
    tracing::info!(actor = operator.actor(), job = %id, "job discarded");
    Ok(JobView::from(row))
}
