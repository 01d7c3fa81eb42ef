//! `/api/v1/requests`: follow submitted work — list (keyset pages), one request with
//! per-job counts, cancel what has not started, and a live Server-Sent Events stream.
//! Users see their own requests; admins with a 2FA login see all. Another user's
//! request is 404, not 403: its existence is not revealed.

use std::convert::Infallible;

use axum::extract::State;

use crate::extract::Path;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};
use shared::db::jobs::JobSummary;
use shared::db::requests::RequestRow;
use shared::db::webhooks::DeliveryState;
use shared::domain::{RequestKind, RequestStatus};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::middleware::auth::{Authorized, perm};
use crate::routes::cursor::{self, Page};
use crate::services::requests as service;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/requests", get(list))
        .route("/requests/{id}", get(show))
        .route("/requests/{id}/cancel", post(cancel))
        .route("/requests/{id}/events", get(stream_events))
}

/// A request as clients see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RequestView {
    pub id: Uuid,
    pub kind: RequestKind,
    pub status: RequestStatus,
    pub name: Option<String>,
    pub total: i32,
    pub succeeded: i32,
    pub failed: i32,
    pub cancelled: i32,
    /// Messages not sent: every recipient was on the sender's suppression list.
    pub suppressed: i32,
    pub pending: i32,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<OffsetDateTime>,
    /// When its jobs may start (a scheduled send); null: at once.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub send_at: Option<OffsetDateTime>,
    /// Where its completion webhook goes, if it has one.
    pub callback_url: Option<String>,
}

impl From<&RequestRow> for RequestView {
    fn from(row: &RequestRow) -> Self {
        RequestView {
            id: row.id,
            kind: row.kind,
            status: row.status,
            name: row.name.clone(),
            total: row.total,
            succeeded: row.succeeded,
            failed: row.failed,
            cancelled: row.cancelled,
            suppressed: row.suppressed,
            pending: row.pending(),
            created_at: row.created_at,
            updated_at: row.updated_at,
            finished_at: row.finished_at,
            send_at: row.send_at,
            callback_url: row.callback_url.clone(),
        }
    }
}

/// Jobs of a request by status, attempts so far and the latest error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobCounts {
    /// Not started: waiting for other jobs to end (an email for its attachments'
    /// scans).
    pub waiting: i64,
    pub queued: i64,
    pub running: i64,
    pub retrying: i64,
    pub succeeded: i64,
    pub dead: i64,
    pub cancelled: i64,
    pub suppressed: i64,
    pub attempts: i64,
    pub last_error: Option<String>,
    /// When the soonest retry of a failed attempt is due (a job `retrying`); null when
    /// none waits.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<time::OffsetDateTime>,
}

impl From<JobSummary> for JobCounts {
    fn from(s: JobSummary) -> Self {
        JobCounts {
            waiting: s.waiting,
            queued: s.queued,
            running: s.running,
            retrying: s.retrying,
            succeeded: s.succeeded,
            dead: s.dead,
            cancelled: s.cancelled,
            suppressed: s.suppressed,
            attempts: s.attempts,
            last_error: s.last_error,
            next_attempt_at: s.next_attempt_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RequestDetail {
    #[serde(flatten)]
    pub request: RequestView,
    pub jobs: JobCounts,
    /// The completion webhook, once the request has finished with a `callback_url`.
    pub webhook: Option<DeliveryState>,
    /// The template version its messages were rendered from (an email or campaign
    /// sent with `template`); null otherwise.
    pub template: Option<shared::jobs::email::TemplateRef>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only requests in this status.
    #[param(value_type = Option<RequestStatus>)]
    pub status: Option<String>,
    /// Only requests of this kind.
    #[param(value_type = Option<RequestKind>)]
    pub kind: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page, as it was given: only a cursor this api
    /// issued is accepted (another is 400).
    #[param(pattern = "^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
}

/// A query value of a text enum, or a 400 naming the allowed values.
fn parse_filter<T: std::str::FromStr<Err = String>>(
    name: &str,
    value: Option<&str>,
) -> Result<Option<T>, ApiError> {
    value
        .map(|v| {
            v.parse::<T>()
                .map_err(|err| ApiError::validation(format!("{name}: {err}")))
        })
        .transpose()
}

/// Lists requests, newest first, a keyset page at a time.
#[utoipa::path(get, path = "/api/v1/requests", tag = "requests", params(ListQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<RequestView>), (status = 400, body = shared::problem::Problem)))]
pub async fn list(
    State(state): State<AppState>,
    Authorized(user, ..): Authorized<perm::ReadOwnRequests>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<RequestView>>, ApiError> {
    let limit = cursor::page_size(query.limit)?;
    let status = parse_filter::<RequestStatus>("status", query.status.as_deref())?;
    let kind = parse_filter::<RequestKind>("kind", query.kind.as_deref())?;
    let after = query.cursor.as_deref().map(cursor::decode).transpose()?;
    let (rows, more) = service::list(&state, &user, status, kind, after, limit).await?;
    Ok(Json(Page::keyset(
        rows,
        more,
        |row| (row.created_at, row.id),
        |row| RequestView::from(&row),
    )))
}

/// One request with its per-job counts and latest error.
#[utoipa::path(get, path = "/api/v1/requests/{id}", tag = "requests", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = RequestDetail), (status = 404, body = shared::problem::Problem)))]
pub async fn show(
    State(state): State<AppState>,
    Authorized(user, ..): Authorized<perm::ReadOwnRequests>,
    Path(id): Path<Uuid>,
) -> Result<Json<RequestDetail>, ApiError> {
    let detail = service::detail(&state, &user, id).await?;
    Ok(Json(RequestDetail {
        request: RequestView::from(&detail.row),
        jobs: detail.summary.into(),
        webhook: detail.webhook,
        template: detail.template,
    }))
}

/// Cancels the jobs that have not started; running ones finish. A scheduled send
/// cancelled before its time sends nothing.
#[utoipa::path(post, path = "/api/v1/requests/{id}/cancel", tag = "requests", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = RequestView), (status = 404, body = shared::problem::Problem),
              (status = 409, body = shared::problem::Problem, description = "already finished")))]
pub async fn cancel(
    State(state): State<AppState>,
    Authorized(user, ..): Authorized<perm::ReadOwnRequests>,
    Path(id): Path<Uuid>,
) -> Result<Json<RequestView>, ApiError> {
    let row = service::cancel(&state, &user, id).await?;
    Ok(Json(RequestView::from(&row)))
}

/// Streams the request's progress as Server-Sent Events (`event: progress`, data a
/// JSON `Progress`): the current state first, then every change, ending after the
/// final state. A comment every 15 s keeps proxies from closing the stream.
#[utoipa::path(get, path = "/api/v1/requests/{id}/events", tag = "requests", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream", body = shared::events::Progress, description = "Server-Sent Events: the request's state at once, then one per change. Each event is `event: progress` with `data:` one JSON `Progress` (the schema here is each event's data); progress never goes backwards (`version` rises). A `: keep-alive` comment every 15 s; the stream ends after the event with `finished: true`."), (status = 404, body = shared::problem::Problem)))]
pub async fn stream_events(
    State(state): State<AppState>,
    Authorized(user, ..): Authorized<perm::ReadOwnRequests>,
    Path(id): Path<Uuid>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let progress = service::follow(&state, &user, id).await?;
    let stream = progress.map(|progress| {
        Ok(Event::default()
            .event("progress")
            .json_data(&progress)
            .unwrap_or_else(|_| Event::default().comment("unencodable event")))
    });
    Ok(Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(service::KEEP_ALIVE)
            .text("keep-alive"),
    ))
}
