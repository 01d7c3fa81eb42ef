//! Thin handlers, one file per resource: extract, validate, call a service, answer.

pub mod admin;
pub mod auth;
pub mod docs;
pub mod me;
pub mod meta;
pub mod wellknown;

use axum::Router;

use crate::state::AppState;

/// Everything under `/api/v1`.
pub fn api_v1() -> Router<AppState> {
    Router::new()
        .merge(meta::routes())
        .merge(auth::routes())
        .merge(me::routes())
        .merge(admin::routes())
}
