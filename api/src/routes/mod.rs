//! Thin handlers, one file per resource: extract, validate, call a service, answer.

pub mod admin;
pub mod auth;
pub mod cursor;
pub mod docs;
pub mod emails;
pub mod me;
pub mod meta;
pub mod requests;
pub mod sending_limits;
pub mod suppressions;
pub mod templates;
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
        .merge(suppressions::routes())
        .merge(templates::routes())
        .merge(sending_limits::routes())
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

/// Content-Security-Policy of the HTML pages (email verification, unsubscribe): no script, no style, no
/// frame, forms only to this origin.
const PAGE_CSP: &str =
    "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A small HTML page, kept out of caches and referrers (its URL holds a token).
pub(crate) fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head>\
         <body><main><h1>{title}</h1>{body}</main></body></html>"
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, PAGE_CSP),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}
