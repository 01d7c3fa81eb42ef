//! The console's pages (signed in: `session::require_admin` ran first).

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use shared::domain::Permission;
use shared::queue::QueueName;

use super::session::{ConsoleAdmin, cross_site, same_origin};
use super::views;
use crate::services::operations as ops;
use crate::state::AppState;

/// `GET /console`: the overview.
pub async fn overview(State(state): State<AppState>) -> Response {
    match ops::queues(&state).await {
        Ok(list) => {
            let health = super::health::read(&state).await;
            views::overview(&list.queues, health.as_deref()).into_response()
        }
        Err(err) => views::error_page(err),
    }
}

/// `POST /console/queues/{queue}/pause`.
pub async fn pause_queue(
    State(state): State<AppState>,
    Extension(admin): Extension<ConsoleAdmin>,
    Path(queue): Path<String>,
    headers: HeaderMap,
) -> Response {
    switch(&state, admin, &queue, &headers, true).await
}

/// `POST /console/queues/{queue}/resume`.
pub async fn resume_queue(
    State(state): State<AppState>,
    Extension(admin): Extension<ConsoleAdmin>,
    Path(queue): Path<String>,
    headers: HeaderMap,
) -> Response {
    switch(&state, admin, &queue, &headers, false).await
}

/// Pauses or resumes a queue through the admin API's service (its permission, its
/// audit row), then back to the overview.
async fn switch(
    state: &AppState,
    admin: ConsoleAdmin,
    queue: &str,
    headers: &HeaderMap,
    pause: bool,
) -> Response {
    if !same_origin(headers) {
        return cross_site();
    }
    let Some(&queue) = QueueName::ALL.iter().find(|q| q.as_str() == queue) else {
        return views::not_found();
    };
    let operator = match super::session::operator(&admin, headers, Permission::ManageQueues) {
        Ok(operator) => operator,
        Err(refusal) => return refusal,
    };
    match ops::switch_queue(state, &operator, queue, pause).await {
        Ok(_) => Redirect::to("/console").into_response(),
        Err(err) => views::error_page(err),
    }
}
