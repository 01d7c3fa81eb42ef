//! Thin handlers, one file per resource: extract, validate, call a service, answer.

pub mod admin;
pub mod auth;
pub mod cursor;
pub mod docs;
pub mod emails;
pub mod me;
pub mod meta;
pub mod requests;
pub mod uploads;
pub mod webhooks;
pub mod wellknown;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use shared::Config;

use crate::middleware::request_id;
use crate::services::requests::Accepted;
use crate::state::AppState;

/// Everything under `/api/v1`.
pub fn api_v1(config: &Config) -> Router<AppState> {
    Router::new()
        .merge(meta::routes())
        .merge(emails::routes(config.http.campaign_body_limit_bytes))
        .merge(requests::routes())
        .merge(uploads::routes(uploads::body_limit(
            config.uploads.max_bytes,
        )))
        .merge(auth::routes())
        .merge(me::routes())
        .merge(webhooks::routes())
        .merge(admin::routes())
}

/// 202 with `Location` naming the request to follow.
pub(crate) fn accepted(body: Accepted) -> Response {
    let location = HeaderValue::from_str(&body.location)
        .unwrap_or_else(|_| HeaderValue::from_static("/api/v1/requests"));
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response()
}

/// The request id, recorded on the request so job logs join the request's.
pub(crate) fn correlation(headers: &HeaderMap) -> Option<String> {
    headers
        .get(&request_id::HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
