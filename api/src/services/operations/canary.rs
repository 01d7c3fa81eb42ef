//! Canary requests: no-op jobs through the whole pipeline, owned by an admin.

use serde::{Deserialize, Serialize};
use shared::db::operations::{self};
use shared::domain::RequestKind;
use shared::jobs::{CanaryJob, NewJob};
use shared::problem::FieldError;
use shared::queue::QueueName;
use uuid::Uuid;

use super::{Action, Operator, counted, record};
use crate::error::ApiError;
use crate::services::requests::{self, Accepted, Submission};
use crate::state::AppState;

/// The most canary jobs one request may carry.
pub const MAX_CANARIES: u32 = 10_000;

/// The queues a canary request may use: only `canary`. Its jobs do nothing; a canary
/// on another queue would run that queue's handler (send mail, scan files), and no
/// payload of theirs is a safe no-op.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CanaryQueue {
    #[default]
    Canary,
}

impl From<CanaryQueue> for QueueName {
    fn from(queue: CanaryQueue) -> Self {
        match queue {
            CanaryQueue::Canary => QueueName::Canary,
        }
    }
}

/// `count` canary jobs through the whole pipeline (outbox, dispatch, workers,
/// completion, events), as one request owned by `owner`, submitted and audited in one
/// transaction. Follow it at the returned location.
pub async fn canary(
    state: &AppState,
    operator: &Operator,
    owner: Uuid,
    queue: CanaryQueue,
    count: u32,
) -> Result<Accepted, ApiError> {
    if !(1..=MAX_CANARIES).contains(&count) {
        let message = format!("must be between 1 and {MAX_CANARIES}");
        return Err(ApiError::Unprocessable {
            detail: format!("`count`: {message}"),
            errors: vec![FieldError::new("count", message)],
        });
    }
    let queue = QueueName::from(queue);
    let submission = Submission {
        owner,
        kind: RequestKind::Canary,
        name: Some("canary".to_owned()),
        correlation_id: operator.request_id.clone(),
        content: None,
        send_at: None,
        jobs: (0..count)
            .map(|_| NewJob::of(&CanaryJob {}))
            .collect::<Result<_, _>>()?,
        quota: None,
        callback_url: None,
        wait_for: Vec::new(),
    };
    let mut tx = state.pool.begin().await?;
    let (row, enqueued) = requests::enqueue(&mut tx, state, submission).await?;
    record(
        &mut *tx,
        operator,
        Action::Canary,
        &format!("request:{}", row.id),
        serde_json::json!({ "queue": queue, "count": count }),
    )
    .await?;
    tx.commit().await?;
    counted(Action::Canary);
    tracing::info!(actor = operator.actor(), request = %row.id, count, "canary submitted");
    enqueued.dispatch(&state.pool, &state.redis).await;
    Ok(Accepted::from(&row))
}

/// The account a command-line canary belongs to when the operator names none.
pub async fn default_owner(state: &AppState) -> Result<Uuid, ApiError> {
    operations::earliest_admin(&state.pool)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(
                "no admin account owns the canary; create one with `api create-admin`".into(),
            )
        })
}
