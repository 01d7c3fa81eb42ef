//! Bulk operations: a bulk retry of a queue's dead or cancelled jobs recorded with its
//! job on the `operations` queue (the workers run it in chunks of [`BATCH`]), and the
//! view of any operation's progress.

use serde::{Deserialize, Serialize};
use shared::db::operations::{self, OperationRow, OperationState};
use shared::domain::JobStatus;
use shared::queue::QueueName;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Action, Operator, counted, record};
use crate::error::ApiError;
use crate::state::AppState;

/// Jobs sent back to their queue per transaction of a bulk retry.
pub const BATCH: i64 = shared::jobs::operations::CHUNK;

/// The states a bulk retry takes jobs from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetryableStatus {
    Dead,
    Cancelled,
}

impl From<RetryableStatus> for JobStatus {
    fn from(status: RetryableStatus) -> Self {
        match status {
            RetryableStatus::Dead => JobStatus::Dead,
            RetryableStatus::Cancelled => JobStatus::Cancelled,
        }
    }
}

impl std::str::FromStr for RetryableStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dead" => Ok(RetryableStatus::Dead),
            "cancelled" => Ok(RetryableStatus::Cancelled),
            other => Err(format!("`{other}` is not one of dead, cancelled")),
        }
    }
}

/// A bulk operation and its progress.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OperationView {
    pub id: Uuid,
    /// `bulk_retry`, or `rescan_all` (whose request is the one to follow).
    pub kind: String,
    pub queue: QueueName,
    /// The status of the jobs it sends back to the queue (a bulk retry; null for a
    /// rescan).
    pub status: Option<JobStatus>,
    pub state: OperationState,
    /// Jobs in scope when it began: not discarded, ended before it was created.
    pub total: i64,
    /// Jobs back in the queue so far. At `done` it may be below `total` when some were
    /// retried, discarded or pruned meanwhile.
    pub done: i64,
    /// Why it failed (`failed` only); the cause is in the logs under its id.
    pub error: Option<String>,
    pub actor: String,
    /// Times a worker resumed it (its job's worker died, or a chunk failed and was
    /// retried).
    pub resumed: i32,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// When its last chunk began (or a worker resumed it).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub heartbeat_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<OffsetDateTime>,
    /// Where to follow it.
    pub location: String,
}

impl From<OperationRow> for OperationView {
    fn from(row: OperationRow) -> Self {
        OperationView {
            location: format!("/api/v1/admin/operations/{}", row.id),
            id: row.id,
            kind: row.kind,
            queue: row.queue,
            status: row.job_status,
            state: row.state,
            total: row.total,
            done: row.done,
            error: row.error,
            actor: row.actor,
            resumed: row.resumed,
            created_at: row.created_at,
            heartbeat_at: row.heartbeat_at,
            finished_at: row.finished_at,
        }
    }
}

pub async fn operation(state: &AppState, id: Uuid) -> Result<OperationView, ApiError> {
    operations::find(&state.pool, id)
        .await?
        .map(OperationView::from)
        .ok_or_else(|| ApiError::NotFound("no such operation".into()))
}

/// Records a bulk retry of `queue`'s jobs in `status` with its job on the
/// `operations` queue (audited with it, in one transaction); the workers run it.
pub async fn start_bulk_retry(
    state: &AppState,
    operator: &Operator,
    queue: QueueName,
    status: RetryableStatus,
) -> Result<OperationView, ApiError> {
    let mut tx = state.pool.begin().await?;
    let (row, enqueued) = shared::jobs::operations::start_bulk_retry(
        &mut tx,
        &state.config.queues,
        operator.actor(),
        queue,
        status.into(),
        operator.request_id.as_deref(),
    )
    .await?;
    record(
        &mut *tx,
        operator,
        Action::BulkRetry,
        &format!("queue:{queue}"),
        serde_json::json!({
            "status": JobStatus::from(status),
            "operation_id": row.id,
            "total": row.total,
        }),
    )
    .await?;
    tx.commit().await?;
    enqueued.dispatch(&state.pool, &state.redis).await;
    counted(Action::BulkRetry);
    tracing::info!(actor = operator.actor(), operation = %row.id, queue = %queue, status = ?status, total = row.total, "bulk retry started");
    Ok(OperationView::from(row))
}
