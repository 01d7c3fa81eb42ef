//! The console's pages (signed in: `session::require_admin` ran first).

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::views;
use crate::services::operations as ops;
use crate::state::AppState;

/// `GET /console`: the overview.
pub async fn overview(State(state): State<AppState>) -> Response {
    match ops::queues(&state).await {
        Ok(list) => views::overview(&list.queues).into_response(),
        Err(err) => {
            let (status, detail) = err.for_page();
            views::refusal(status, &detail)
        }
    }
}
