//! The console's queue operations: retry every dead job of a queue as an operation
//! (the admin API's bulk retry: one audited operation the workers carry out in
//! chunks), and the operation's page, whose progress is live.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use shared::db::operations::OperationState;
use shared::domain::Permission;
use shared::queue::QueueName;
use uuid::Uuid;

use super::live;
use super::session::{ConsoleAdmin, cross_site, same_origin};
use super::views::{self, maybe_moment, moment, page, respond};
use crate::error::ApiError;
use crate::services::operations as ops;
use crate::services::operations::{OperationView, RetryableStatus};
use crate::state::AppState;

/// `POST /console/queues/{queue}/retry-dead`: starts the operation, then its page.
pub async fn retry_dead(
    State(state): State<AppState>,
    Extension(admin): Extension<ConsoleAdmin>,
    Path(queue): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let Some(&queue) = QueueName::ALL.iter().find(|q| q.as_str() == queue) else {
        return views::not_found();
    };
    let operator = match super::session::operator(&admin, &headers, Permission::ManageQueues) {
        Ok(operator) => operator,
        Err(refusal) => return refusal,
    };
    match ops::start_bulk_retry(&state, &operator, queue, RetryableStatus::Dead).await {
        Ok(operation) => {
            Redirect::to(&format!("/console/operations/{}", operation.id)).into_response()
        }
        Err(err) => views::error_page(err),
    }
}

/// `GET /console/operations/{id}`.
pub async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Ok(id) = Uuid::parse_str(&id) else {
        return views::not_found();
    };
    match ops::operation(&state, id).await {
        Ok(operation) => respond(
            StatusCode::OK,
            page(
                "Operation",
                true,
                html! {
                    h1 { "Operation " code { (operation.id) } }
                    div.live data-live={ "/console/live/operations/" (operation.id) } aria-live="polite" {
                        (progress(&operation))
                    }
                    p { a href="/console" { "Back to the overview" } }
                },
            ),
        ),
        Err(ApiError::NotFound(_)) => views::not_found(),
        Err(err) => views::error_page(err),
    }
}

/// `GET /console/live/operations/{id}`: its progress, again whenever it moves.
pub async fn live(
    State(state): State<AppState>,
    Extension(admin): Extension<ConsoleAdmin>,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = Uuid::parse_str(&id) else {
        return views::not_found();
    };
    live::stream(
        state,
        admin,
        Box::new(move |state| {
            Box::pin(async move {
                let operation = ops::operation(&state, id).await.ok()?;
                Some(progress(&operation).into_string())
            })
        }),
    )
}

/// An operation's facts and progress bar.
pub fn progress(operation: &OperationView) -> Markup {
    let what = match (operation.kind.as_str(), operation.status) {
        ("bulk_retry", Some(status)) => {
            format!("Retry every {status} job of {}", operation.queue)
        }
        ("rescan_all", _) => "Scan every stored upload again".to_owned(),
        (kind, _) => kind.to_owned(),
    };
    let state = match operation.state {
        OperationState::Running => "running",
        OperationState::Done => "done",
        OperationState::Failed => "failed",
    };
    html! {
        dl.facts {
            dt { "What" } dd { (what) }
            dt { "State" } dd { span.status.(state) #operation-state { (state) } }
            dt { "Progress" }
            dd {
                // `max` is at least 1: an empty operation reads as complete.
                progress #operation-progress value=(operation.done) max=(operation.total.max(1))
                    aria-label="Jobs sent back to the queue" {}
                " "
                span #operation-count { (operation.done) " of " (operation.total) }
                @if operation.state == OperationState::Done && operation.done < operation.total {
                    " (the rest were retried, discarded or pruned meanwhile)"
                }
            }
            dt { "By" } dd { (operation.actor) }
            dt { "Started" } dd { (moment(operation.created_at)) }
            dt { "Last progress" } dd { (moment(operation.heartbeat_at)) }
            dt { "Finished" } dd { (maybe_moment(operation.finished_at)) }
            @if operation.resumed > 0 {
                dt { "Resumed" } dd { (operation.resumed) " times (a worker stopped or a chunk failed)" }
            }
            @if let Some(error) = &operation.error {
                dt { "Error" } dd { pre.error-text { (error) } }
            }
        }
        @if let Some(status) = operation.status {
            p {
                a href={ "/console/jobs?queue=" (operation.queue.as_str()) "&status=" (status.as_str()) } {
                    "The " (status.as_str()) " jobs of " (operation.queue.as_str()) " now"
                }
            }
        }
    }
}
