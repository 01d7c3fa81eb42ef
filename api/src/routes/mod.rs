//! Thin handlers, one file per resource: extract, validate, call a service, answer.

pub mod docs;
pub mod meta;

use axum::Router;

use crate::state::AppState;

/// Everything under `/api/v1`.
pub fn api_v1() -> Router<AppState> {
    Router::new().merge(meta::routes())
}
