//! Thin handlers, one file per resource: extract, validate, call a service, answer.

pub mod admin;
pub mod auth;
pub mod docs;
pub mod emails;
pub mod me;
pub mod meta;
pub mod requests;
pub mod wellknown;

use axum::Router;

use crate::state::AppState;

/// Everything under `/api/v1`.
pub fn api_v1(campaign_body_limit: usize) -> Router<AppState> {
    Router::new()
        .merge(meta::routes())
        .merge(emails::routes(campaign_body_limit))
        .merge(requests::routes())
        .merge(auth::routes())
        .merge(me::routes())
        .merge(admin::routes())
}
