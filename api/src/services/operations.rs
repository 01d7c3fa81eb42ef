//! Operators' queue administration: queue counts, job listings, retry and discard of
//! failed jobs (one, or a whole queue in batches as a tracked operation), pausing
//! queues and canary requests. The admin routes and the `api` command line call these
//! same functions. Every action writes an `audit_log` row — in the action's own
//! transaction where it has one — and counts `conveyor_admin_actions_total{action}`.
//!
//! A bulk retry is a job of the `operations` queue, run by the workers in chunks of
//! [`BATCH`] jobs per transaction (`shared::jobs::operations`). If its worker dies, the
//! runtime gives the job to another, which resumes from the last committed chunk: it
//! only ever retries jobs that ended before the operation began, so a job that fails
//! again after its retry is not retried a second time.

use serde::{Deserialize, Serialize};
use shared::db::audit::{self, AuditRow, NewEntry};
use shared::db::jobs::{self, JobFilter, JobRow};
use shared::db::operations::{self, OperationRow, OperationState};
use shared::db::requests as request_rows;
use shared::domain::{JobStatus, RequestKind};
use shared::jobs::{CanaryJob, Enqueued, NewJob};
use shared::problem::FieldError;
use shared::queue::{Queue, QueueName, pause};
use shared::telemetry::metric;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::ApiError;
use crate::middleware::auth::AuthUser;
use crate::services::requests::{self, Accepted, Submission};
use crate::state::AppState;

/// Jobs sent back to their queue per transaction of a bulk retry.
pub const BATCH: i64 = shared::jobs::operations::CHUNK;
/// The most canary jobs one request may carry.
pub const MAX_CANARIES: u32 = 10_000;

/// Who acts, and the request (or command-line run) they act in: the audit's "who".
#[derive(Debug, Clone)]
pub struct Operator {
    actor: String,
    actor_id: Option<Uuid>,
    request_id: Option<String>,
}

impl Operator {
    /// An admin through the api; `request_id` is the request's `x-request-id`.
    pub fn admin(user: &AuthUser, request_id: Option<String>) -> Self {
        Operator {
            actor: format!("admin:{}", user.id),
            actor_id: Some(user.id),
            request_id,
        }
    }

    /// An operator on the command line, by name (`OPERATOR` or the Unix user).
    pub fn cli(name: &str, request_id: Option<String>) -> Self {
        Operator {
            actor: format!("cli:{name}"),
            actor_id: None,
            request_id,
        }
    }

    pub fn actor(&self) -> &str {
        &self.actor
    }
}

/// The audited actions: the `action` of audit rows and of the metric's label (all
/// registered at zero: `shared::telemetry::label::ADMIN_ACTIONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Retry,
    BulkRetry,
    Discard,
    Pause,
    Resume,
    Canary,
    RoleChange,
    RescanAll,
}

impl Action {
    pub const ALL: [Action; 8] = [
        Action::Retry,
        Action::BulkRetry,
        Action::Discard,
        Action::Pause,
        Action::Resume,
        Action::Canary,
        Action::RoleChange,
        Action::RescanAll,
    ];

    /// `Pause` or `Resume`: an operator's switch (of a queue, of a schedule).
    pub fn switch(paused: bool) -> Action {
        if paused {
            Action::Pause
        } else {
            Action::Resume
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::BulkRetry => "bulk_retry",
            Action::Discard => "discard",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Canary => "canary",
            Action::RoleChange => "role_change",
            Action::RescanAll => "rescan_all",
        }
    }
}

pub(crate) async fn record(
    db: impl sqlx::PgExecutor<'_>,
    operator: &Operator,
    action: Action,
    target: &str,
    details: serde_json::Value,
) -> Result<(), ApiError> {
    audit::insert(
        db,
        &NewEntry {
            actor: &operator.actor,
            actor_id: operator.actor_id,
            action: action.as_str(),
            target: Some(target),
            details,
            request_id: operator.request_id.as_deref(),
        },
    )
    .await?;
    Ok(())
}

/// After the action committed.
pub(crate) fn counted(action: Action) {
    metrics::counter!(metric::ADMIN_ACTIONS_TOTAL, "action" => action.as_str()).increment(1);
}

/// Audits an action another service carried out and committed in its own transaction
/// (a role change, a rescan of every upload).
pub async fn record_done(
    state: &AppState,
    operator: &Operator,
    action: Action,
    target: &str,
    details: serde_json::Value,
) -> Result<(), ApiError> {
    record(&state.pool, operator, action, target, details).await?;
    counted(action);
    Ok(())
}

// ---------------------------------------------------------------------------- queues

/// One queue as operators watch it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueView {
    pub queue: QueueName,
    pub queued: i64,
    pub running: i64,
    /// Failed attempts waiting for their retry (scheduled retries).
    pub retrying: i64,
    /// Dead jobs, not counting discarded ones.
    pub dead: i64,
    /// Dead jobs an operator discarded (kept for audit).
    pub discarded: i64,
    pub succeeded_last_hour: i64,
    /// Seconds since the oldest queued job became runnable: its creation, a scheduled
    /// send's `send_at`, or an operator's retry; 0 when every queued job is scheduled
    /// for later, null when nothing is queued. `queued` counts scheduled jobs too.
    pub oldest_queued_age_seconds: Option<i64>,
    /// Worker processes whose consumer of this queue has a live heartbeat; null when
    /// Redis did not answer.
    pub workers_alive: Option<u64>,
    /// Workers take no job of a paused queue (submissions are still accepted); null
    /// when Redis did not answer.
    pub paused: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueList {
    pub queues: Vec<QueueView>,
}

/// Every queue: counts from PostgreSQL in one statement, workers and pauses from Redis.
pub async fn queues(state: &AppState) -> Result<QueueList, ApiError> {
    let counts = jobs::queue_counts(&state.pool).await?;
    let paused = match pause::paused(&state.redis).await {
        Ok(set) => Some(set),
        Err(err) => {
            tracing::warn!(error = %err, "cannot read paused queues");
            None
        }
    };
    let mut queues = Vec::with_capacity(QueueName::ALL.len());
    for &queue in QueueName::ALL {
        let row = counts.iter().find(|c| c.queue == queue);
        let workers_alive = match Queue::new(state.redis.clone(), queue).workers_alive().await {
            Ok(n) => Some(n),
            Err(err) => {
                tracing::warn!(error = %err, queue = %queue, "cannot count live workers");
                None
            }
        };
        queues.push(QueueView {
            queue,
            queued: row.map_or(0, |r| r.queued),
            running: row.map_or(0, |r| r.running),
            retrying: row.map_or(0, |r| r.retrying),
            dead: row.map_or(0, |r| r.dead),
            discarded: row.map_or(0, |r| r.discarded),
            succeeded_last_hour: row.map_or(0, |r| r.succeeded_last_hour),
            oldest_queued_age_seconds: row.and_then(|r| {
                r.oldest_queued_at
                    .map(|at| (r.counted_at - at).whole_seconds().max(0))
            }),
            workers_alive,
            paused: paused.as_ref().map(|set| set.contains(&queue)),
        });
    }
    Ok(QueueList { queues })
}

/// The state of a queue's pause switch after an operator flipped it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueSwitch {
    pub queue: QueueName,
    pub paused: bool,
    /// False when the queue already was in that state.
    pub changed: bool,
}

/// Pauses (`pause = true`) or resumes a queue. The switch lives in Redis; the audit
/// row commits after Redis took the change (a failed Redis call leaves no row).
pub async fn switch_queue(
    state: &AppState,
    operator: &Operator,
    queue: QueueName,
    paused: bool,
) -> Result<QueueSwitch, ApiError> {
    let mut tx = state.pool.begin().await?;
    let flipped = if paused {
        pause::pause(&state.redis, queue).await
    } else {
        pause::resume(&state.redis, queue).await
    };
    let changed = flipped.map_err(|err| {
        tracing::warn!(error = %err, queue = %queue, "cannot switch the queue in Redis");
        ApiError::DependencyUnavailable("Redis")
    })?;
    let action = Action::switch(paused);
    record(
        &mut *tx,
        operator,
        action,
        &format!("queue:{queue}"),
        serde_json::json!({ "changed": changed }),
    )
    .await?;
    tx.commit().await?;
    counted(action);
    tracing::info!(actor = operator.actor(), queue = %queue, paused, changed, "queue switched");
    Ok(QueueSwitch {
        queue,
        paused,
        changed,
    })
}

// ------------------------------------------------------------------------------ jobs

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

// ------------------------------------------------------------------------ bulk retry

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

// ---------------------------------------------------------------------------- canary

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

// ----------------------------------------------------------------------------- audit

/// One audit row.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: Uuid,
    /// `admin:<user id>` (api) or `cli:<operator>` (command line).
    pub actor: String,
    pub actor_id: Option<Uuid>,
    /// retry, bulk_retry, discard, pause, resume, canary, role_change, rescan_all.
    pub action: String,
    /// `job:<id>`, `queue:<name>`, `user:<id>` or `request:<id>`.
    pub target: Option<String>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// The `x-request-id` of the request (or command-line run) that acted.
    pub request_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

impl From<AuditRow> for AuditEntry {
    fn from(row: AuditRow) -> Self {
        AuditEntry {
            id: row.id,
            actor: row.actor,
            actor_id: row.actor_id,
            action: row.action,
            target: row.target,
            details: row.details,
            request_id: row.request_id,
            created_at: row.created_at,
        }
    }
}

/// One page of the audit log, newest first (one row more asked for, as in
/// [`list_jobs`]).
pub async fn audit_page(
    state: &AppState,
    after: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> Result<(Vec<AuditEntry>, bool), ApiError> {
    let mut rows = audit::list(&state.pool, after, limit + 1).await?;
    let limit = usize::try_from(limit).unwrap_or(0);
    let more = rows.len() > limit;
    rows.truncate(limit);
    Ok((rows.into_iter().map(AuditEntry::from).collect(), more))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_is_a_metric_label_registered_at_zero() {
        let actions: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(actions, shared::telemetry::label::ADMIN_ACTIONS);
    }
}
