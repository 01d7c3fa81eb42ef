//! `/api/v1/admin/*`: operator actions. Every one needs an admin whose login passed 2FA,
//! and every action is written to the audit log (`services::operations`, which the
//! `api` command line calls too).

use axum::extract::State;

use crate::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use shared::db::jobs::JobFilter;
use shared::domain::{JobStatus, Role};
use shared::queue::QueueName;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::middleware::auth::{Authorized, perm};
use crate::routes::cursor::{self, Page};
use crate::services::accounts::{self, AdminUserView};
use crate::services::operations::{
    self as ops, Action, AuditEntry, CanaryQueue, JobView, OperationView, Operator, QueueList,
    QueueSwitch, RetryableStatus,
};
use crate::services::requests::Accepted;
use crate::services::schedules::{self, ScheduleList};
use crate::services::uploads;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/users/{id}", patch(update_user))
        .route("/admin/scans/rescan-all", post(rescan_all))
        .route("/admin/queues", get(list_queues))
        .route("/admin/queues/{queue}/pause", post(pause_queue))
        .route("/admin/queues/{queue}/resume", post(resume_queue))
        .route("/admin/jobs", get(list_jobs))
        .route("/admin/jobs/retry", post(bulk_retry))
        .route("/admin/jobs/{id}", get(show_job))
        .route("/admin/jobs/{id}/retry", post(retry_job))
        .route("/admin/jobs/{id}/discard", post(discard_job))
        .route("/admin/operations/{id}", get(show_operation))
        .route("/admin/schedules", get(list_schedules))
        .route("/admin/schedules/{name}/pause", post(pause_schedule))
        .route("/admin/schedules/{name}/resume", post(resume_schedule))
        .route("/admin/canary", post(canary))
        .route("/admin/audit", get(audit))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    /// The new role. Demoting the last admin is 409.
    pub role: Role,
}

/// Changes a user's role. Every session of theirs ends at once: their access and
/// refresh tokens never work again (even after a change back); they sign in anew.
#[utoipa::path(patch, path = "/api/v1/admin/users/{id}", tag = "admin", request_body = UpdateUserRequest,
    params(("id" = Uuid, Path, description = "user id")), security(("bearer" = [])),
    responses(
        (status = 200, body = AdminUserView),
        (status = 403, body = shared::problem::Problem, description = "`forbidden` (not admin) or `mfa_required`"),
        (status = 404, body = shared::problem::Problem),
        (status = 409, body = shared::problem::Problem, description = "would demote the last admin"),
    ))]
pub async fn update_user(
    State(state): State<AppState>,
    Authorized(admin, ..): Authorized<perm::ManageUsers>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateUserRequest>,
) -> Result<Json<AdminUserView>, ApiError> {
    let row = accounts::change_role(&state.pool, &state.redis, id, body.role).await?;
    tracing::info!(admin_id = %admin.id, user_id = %id, role = %body.role, "role changed");
    // The role change commits in its own transaction (services::accounts); its audit
    // row follows it.
    let operator = Operator::admin(&admin, super::correlation(&headers));
    let details = serde_json::json!({ "role": body.role });
    ops::record_done(
        &state,
        &operator,
        Action::RoleChange,
        &format!("user:{id}"),
        details,
    )
    .await?;
    Ok(Json(accounts::admin_view(&row)?))
}

/// Rescans every stored upload with the current rules (after a rule was added): one
/// request with a `scans` job per upload; follow its progress like a campaign's.
#[utoipa::path(post, path = "/api/v1/admin/scans/rescan-all", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 202, body = Accepted, description = "Queued; `total` is the number of uploads; `Location` names the request"),
        (status = 403, body = shared::problem::Problem, description = "`forbidden` (not admin) or `mfa_required`"),
    ))]
pub async fn rescan_all(
    State(state): State<AppState>,
    Authorized(admin, ..): Authorized<perm::ManageQueues>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let accepted = uploads::rescan_all(&state, &admin, super::correlation(&headers)).await?;
    tracing::info!(admin_id = %admin.id, request_id = %accepted.id, total = accepted.total, "rescan of every upload queued");
    // Committed by services::uploads in its own transaction; audited after it.
    let operator = Operator::admin(&admin, super::correlation(&headers));
    let details = serde_json::json!({ "total": accepted.total });
    let target = format!("request:{}", accepted.id);
    ops::record_done(&state, &operator, Action::RescanAll, &target, details).await?;
    Ok(super::accepted(accepted))
}

const FORBIDDEN: &str = "`forbidden` (not admin) or `mfa_required`";

fn operator(admin: &crate::middleware::auth::AuthUser, headers: &HeaderMap) -> Operator {
    Operator::admin(admin, super::correlation(headers))
}

/// Every queue: jobs queued, running, waiting to retry, dead (and discarded),
/// succeeded in the last hour, the oldest queued job's age, live workers and whether
/// it is paused.
#[utoipa::path(get, path = "/api/v1/admin/queues", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, body = QueueList, description = "One entry per queue; `workers_alive` and `paused` are null while Redis does not answer"),
        (status = 403, body = shared::problem::Problem, description = FORBIDDEN),
    ))]
pub async fn list_queues(
    State(state): State<AppState>,
    Authorized(..): Authorized<perm::ManageQueues>,
) -> Result<Json<QueueList>, ApiError> {
    Ok(Json(ops::queues(&state).await?))
}

/// Pauses a queue: every worker process stops taking its jobs within a few seconds.
/// Submissions are still accepted; their jobs wait. Pausing a paused queue changes
/// nothing (`changed: false`).
#[utoipa::path(post, path = "/api/v1/admin/queues/{queue}/pause", tag = "admin", security(("bearer" = [])),
    params(("queue" = QueueName, Path, description = "the queue")),
    responses(
        (status = 200, body = QueueSwitch),
        (status = 403, body = shared::problem::Problem, description = FORBIDDEN),
        (status = 503, body = shared::problem::Problem, description = "`dependency_unavailable`: Redis (which holds the switch) or PostgreSQL did not answer"),
    ))]
pub async fn pause_queue(
    State(state): State<AppState>,
    Authorized(admin, ..): Authorized<perm::ManageQueues>,
    Path(queue): Path<QueueName>,
    headers: HeaderMap,
) -> Result<Json<QueueSwitch>, ApiError> {
    let switch = ops::switch_queue(&state, &operator(&admin, &headers), queue, true).await?;
    Ok(Json(switch))
}

/// Resumes a paused queue: workers take its jobs again within a few seconds.
#[utoipa::path(post, path = "/api/v1/admin/queues/{queue}/resume", tag = "admin", security(("bearer" = [])),
    params(("queue" = QueueName, Path, description = "the queue")),
    responses(
        (status = 200, body = QueueSwitch),
        (status = 403, body = shared::problem::Problem, description = FORBIDDEN),
        (status = 503, body = shared::problem::Problem, description = "`dependency_unavailable`: Redis (which holds the switch) or PostgreSQL did not answer"),
    ))]
pub async fn resume_queue(
    State(state): State<AppState>,
    Authorized(admin, ..): Authorized<perm::ManageQueues>,
    Path(queue): Path<QueueName>,
    headers: HeaderMap,
) -> Result<Json<QueueSwitch>, ApiError> {
    let switch = ops::switch_queue(&state, &operator(&admin, &headers), queue, false).await?;
    Ok(Json(switch))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    /// Only jobs of this queue.
    pub queue: Option<QueueName>,
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this request.
    pub request_id: Option<Uuid>,
    /// `true`: only discarded (dead) jobs; `false`: none of them.
    pub discarded: Option<bool>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
}

/// Lists jobs of every owner, newest first, a keyset page at a time, with their
/// attempts and last error. Payloads are never shown (they hold sealed personal data).
#[utoipa::path(get, path = "/api/v1/admin/jobs", tag = "admin", params(JobsQuery), security(("bearer" = [])),
    responses(
        (status = 200, body = Page<JobView>),
        (status = 400, body = shared::problem::Problem),
        (status = 403, body = shared::problem::Problem, description = FORBIDDEN),
    ))]
pub async fn list_jobs(
    State(state): State<AppState>,
    Authorized(..): Authorized<perm::ManageQueues>,
    ApiQuery(query): ApiQuery<JobsQuery>,
) -> Result<Json<Page<JobView>>, ApiError> {
    let filter = JobFilter {
        queue: query.queue,
        status: query.status,
        request_id: query.request_id,
        discarded: query.discarded,
        after: query.cursor.as_deref().map(cursor::decode).transpose()?,
        created_from: None,
        created_before: None,
        limit: cursor::page_size(query.limit)?,
    };
    let (items, more) = ops::list_jobs(&state, filter).await?;
    Ok(Json(Page::keyset(
        items,
        more,
        |job| (job.created_at, job.id),
        |job| job,
    )))
}

/// One job (never its payload).
#[utoipa::path(get, path = "/api/v1/admin/jobs/{id}", tag = "admin", params(("id" = Uuid, Path, description = "job id")), security(("bearer" = [])),
    responses(
        (status = 200, body = JobView),
        (status = 403, body = shared::problem::Problem, description = FORBIDDEN),
        (status = 404, body = shared::problem::Problem),
    ))]
pub async fn show_job(
    State(state): State<AppState>,
    Authorized(..): Authorized<perm::ManageQueues>,
    Path(id): Path<Uuid>,
) -> Result<Json<JobView>, ApiError> {
    Ok(Json(ops::job(&state, id).await?))
}

/// Sends a dead or cancelled job back to its queue: status `queued`, attempts reset,
/// error cleared, pushed to the workers as a new job is; its request reopens (its
/// failed or cancelled count goes down). A discarded job stays dead.
#[utoipa::path(post, path = "/api/v1/admin/jobs/{id}/retry", tag = "admin", params(("id" = Uuid, Path, description = "job id")), security(("bearer" = [])),
    responses(
        (status = 200, body = JobView, description = "Back in its queue"),
        (status = 403, body = shared::problem::Problem, description = FORBIDDEN),
        (status = 404, body = shared::problem::Problem),
        (status = 409, body = shared::problem::Problem, description = "the job is not dead or cancelled, or it was discarded"),
    ))]
pub async fn retry_job(
    State(state): State<AppState>,
    Authorized(admin, ..): Authorized<perm::ManageQueues>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Json<JobView>, ApiError> {
    Ok(Json(
        ops::retry_job(&state, &operator(&admin, &headers), id).await?,
    ))
}

/// Discards a dead job: it stays dead (kept for audit, with who discarded it and
/// when), is never retried, and counts as `discarded` instead of `dead`.
#[utoipa::path(post, path = "/api/v1/admin/jobs/{id}/discard", tag = "admin", params(("id" = Uuid, Path, description = "job id")), security(("bearer" = [])),
    responses(
        (status = 200, body = JobView, description = "Discarded"),
        (status = 403, body = shared::problem::Problem, description = FORBIDDEN),
        (status = 404, body = shared::problem::Problem),
        (status = 409, body = shared::problem::Problem, description = "the job is not dead, or already discarded"),
    ))]
pub async fn discard_job(
    State(state): State<AppState>,
    Authorized(admin, ..): Authorized<perm::ManageQueues>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Json<JobView>, ApiError> {
    Ok(Json(
        ops::discard_job(&state, &operator(&admin, &headers), id).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRetryRequest {
    pub queue: QueueName,
    /// Which failed jobs go back to the queue.
    pub status: RetryableStatus,
}

/// 202 with `Location` naming the operation to follow.
fn operation_accepted(view: OperationView) -> Response {
    let location = HeaderValue::from_str(&view.location)
        .unwrap_or_else(|_| HeaderValue::from_static("/api/v1/admin/operations"));
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(view),
    )
        .into_response()
}

/// Sends every dead (or cancelled) job of a queue back to it, as one operation run in
/// batches of 1,000 jobs per transaction; follow `done` of `total` at `Location`. Only
/// jobs that ended before the operation began are in scope (discarded ones never), so
/// a job that fails again is not retried twice. It runs as a job of the `operations`
/// queue: if its worker dies, another resumes it from its progress.
#[utoipa::path(post, path = "/api/v1/admin/jobs/retry", tag = "admin", request_body = BulkRetryRequest, security(("bearer" = [])),
    responses(
        (status = 202, body = OperationView, description = "Started; `Location` names the operation"),
        (status = 403, body = shared::problem::Problem, description = FORBIDDEN),
    ))]
pub async fn bulk_retry(
    State(state): State<AppState>,
    Authorized(admin, ..): Authorized<perm::ManageQueues>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<BulkRetryRequest>,
) -> Result<Response, ApiError> {
    let view =
        ops::start_bulk_retry(&state, &operator(&admin, &headers), body.queue, body.status).await?;
    Ok(operation_accepted(view))
}

/// The periodic jobs the workers enqueue (retention, cleanup of unconfirmed
/// accounts): each with its interval or cron expression and time zone, its last tick
/// and job, its next tick, the ticks it missed (a schedule whose ticks passed while no
/// worker ran runs once, not once per tick) and whether it is paused.
#[utoipa::path(get, path = "/api/v1/admin/schedules", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, body = ScheduleList),
        (status = 403, body = shared::problem::Problem, description = FORBIDDEN),
    ))]
pub async fn list_schedules(
    State(state): State<AppState>,
    Authorized(..): Authorized<perm::ManageQueues>,
) -> Result<Json<ScheduleList>, ApiError> {
    Ok(Json(schedules::list(&state).await?))
}

/// Pauses a schedule: no worker enqueues its ticks until it is resumed (audited).
#[utoipa::path(post, path = "/api/v1/admin/schedules/{name}/pause", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "the schedule, e.g. `prune_retention`")),
    responses(
        (status = 200, body = shared::db::schedules::ScheduleRow),
        (status = 403, body = shared::problem::Problem, description = FORBIDDEN),
        (status = 404, body = shared::problem::Problem, description = "no such schedule"),
    ))]
pub async fn pause_schedule(
    State(state): State<AppState>,
    Authorized(admin, ..): Authorized<perm::ManageQueues>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<shared::db::schedules::ScheduleRow>, ApiError> {
    let row = schedules::set_paused(&state, &operator(&admin, &headers), &name, true).await?;
    Ok(Json(row))
}

/// Resumes a paused schedule; ticks that passed meanwhile run once, at once (audited).
#[utoipa::path(post, path = "/api/v1/admin/schedules/{name}/resume", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "the schedule, e.g. `prune_retention`")),
    responses(
        (status = 200, body = shared::db::schedules::ScheduleRow),
        (status = 403, body = shared::problem::Problem, description = FORBIDDEN),
        (status = 404, body = shared::problem::Problem, description = "no such schedule"),
    ))]
pub async fn resume_schedule(
    State(state): State<AppState>,
    Authorized(admin, ..): Authorized<perm::ManageQueues>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<shared::db::schedules::ScheduleRow>, ApiError> {
    let row = schedules::set_paused(&state, &operator(&admin, &headers), &name, false).await?;
    Ok(Json(row))
}

/// A bulk operation's progress: `done` of `total`, and its `state`.
#[utoipa::path(get, path = "/api/v1/admin/operations/{id}", tag = "admin", params(("id" = Uuid, Path, description = "operation id")), security(("bearer" = [])),
    responses(
        (status = 200, body = OperationView),
        (status = 403, body = shared::problem::Problem, description = FORBIDDEN),
        (status = 404, body = shared::problem::Problem),
    ))]
pub async fn show_operation(
    State(state): State<AppState>,
    Authorized(..): Authorized<perm::ManageQueues>,
    Path(id): Path<Uuid>,
) -> Result<Json<OperationView>, ApiError> {
    Ok(Json(ops::operation(&state, id).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryRequest {
    /// Only `canary` (the default): other queues' handlers have real effects.
    #[serde(default)]
    pub queue: CanaryQueue,
    /// Canary jobs in the request.
    #[schema(minimum = 1, maximum = 10000)]
    #[serde(deserialize_with = "whole_number")]
    pub count: u32,
}

/// A JSON integer, written `12` or `12.0` (JSON Schema counts both as integers).
fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    use serde::de::Error as _;
    let number = serde_json::Number::deserialize(deserializer)?;
    let whole = match (number.as_u64(), number.as_f64()) {
        (Some(n), _) => u32::try_from(n).ok(),
        (None, Some(f)) if f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f) => {
            Some(f as u32)
        }
        _ => None,
    };
    whole.ok_or_else(|| {
        D::Error::custom(format!(
            "expected a whole number from 0 to {}, got {number}",
            u32::MAX
        ))
    })
}

/// Sends `count` no-op canary jobs through the whole pipeline (outbox, dispatch,
/// workers, completion, events) as one request the calling admin owns, so an
/// operator can prove the system end to end; follow it at `Location`.
#[utoipa::path(post, path = "/api/v1/admin/canary", tag = "admin", request_body = CanaryRequest, security(("bearer" = [])),
    responses(
        (status = 202, body = Accepted, description = "Queued; `Location` names the request"),
        (status = 403, body = shared::problem::Problem, description = FORBIDDEN),
        (status = 422, body = shared::problem::Problem, description = "`count` outside 1..=10000, or a queue other than `canary`"),
    ))]
pub async fn canary(
    State(state): State<AppState>,
    Authorized(admin, ..): Authorized<perm::ManageQueues>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CanaryRequest>,
) -> Result<Response, ApiError> {
    let operator = operator(&admin, &headers);
    let accepted = ops::canary(&state, &operator, admin.id, body.queue, body.count).await?;
    Ok(super::accepted(accepted))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
}

/// The audit log, newest first: every admin action through the api or the command
/// line — who, what, on what, when, and the request id.
#[utoipa::path(get, path = "/api/v1/admin/audit", tag = "admin", params(AuditQuery), security(("bearer" = [])),
    responses(
        (status = 200, body = Page<AuditEntry>),
        (status = 400, body = shared::problem::Problem),
        (status = 403, body = shared::problem::Problem, description = FORBIDDEN),
    ))]
pub async fn audit(
    State(state): State<AppState>,
    Authorized(..): Authorized<perm::ManageQueues>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<Page<AuditEntry>>, ApiError> {
    let limit = cursor::page_size(query.limit)?;
    let after = query.cursor.as_deref().map(cursor::decode).transpose()?;
    let (items, more) = ops::audit_page(&state, after, limit).await?;
    Ok(Json(Page::keyset(
        items,
        more,
        |e| (e.created_at, e.id),
        |e| e,
    )))
}
