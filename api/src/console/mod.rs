//! The operators' console at `/console`: server-rendered pages for admins, served by
//! the api itself. Every asset is embedded in the binary and the pages run under a
//! strict same-origin Content-Security-Policy (no inline script or style, nothing
//! from elsewhere). An admin signs in with the password and the second factor through
//! the same services as `/api/v1/auth`; the tokens live in `HttpOnly`, `Secure`,
//! `SameSite=Strict` cookies, never in script-readable storage. Each page keeps live
//! through one event stream, bounded per admin.
//!
//! On by default outside production; `CONSOLE_ENABLED` switches it.

mod assets;
mod audit;
mod health;
mod jobs;
mod live;
mod operations;
mod pages;
mod payload;
mod requests;
mod schedules;
mod session;
mod suppressions;
mod uploads;
mod views;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::state::AppState;

/// Same origin only: no inline script or style, no frame, forms post here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// The console's routes (merged by `app::build` when `CONSOLE_ENABLED`).
pub fn routes(state: &AppState) -> Router<AppState> {
    let signed_in = Router::new()
        .route("/console", get(pages::overview))
        .route("/console/live/overview", get(live::overview))
        .route("/console/live/jobs/{id}", get(live::job))
        .route("/console/jobs", get(jobs::list))
        .route("/console/jobs/{id}", get(jobs::show))
        .route("/console/jobs/{id}/retry", post(jobs::retry))
        .route("/console/jobs/{id}/discard", post(jobs::discard))
        .route("/console/queues/{queue}/pause", post(pages::pause_queue))
        .route("/console/queues/{queue}/resume", post(pages::resume_queue))
        .route(
            "/console/queues/{queue}/retry-dead",
            post(operations::retry_dead),
        )
        .route("/console/operations/{id}", get(operations::show))
        .route("/console/live/operations/{id}", get(operations::live))
        .route("/console/schedules", get(schedules::list))
        .route("/console/schedules/{name}/pause", post(schedules::pause))
        .route("/console/schedules/{name}/resume", post(schedules::resume))
        .route("/console/suppressions", get(suppressions::list))
        .route(
            "/console/suppressions/{owner}/{id}/remove",
            post(suppressions::remove),
        )
        .route("/console/audit", get(audit::list))
        // Requests (requests.rs):
        .route("/console/requests", get(requests::list))
        .route("/console/requests/{id}", get(requests::show))
        .route("/console/live/requests/{id}", get(requests::live))
        // Uploads (uploads.rs):
        .route("/console/uploads", get(uploads::list))
        .route("/console/uploads/{id}", get(uploads::show))
        .route("/console/uploads/{id}/rescan", post(uploads::rescan))
        .route("/console/live/uploads/{id}", get(uploads::live))
        .route_layer(from_fn_with_state(state.clone(), session::require_admin));
    Router::new()
        .merge(signed_in)
        .route(
            "/console/login",
            get(session::login_form).post(session::login),
        )
        .route("/console/login/code", post(session::login_code))
        .route("/console/logout", post(session::logout))
        .route("/console/assets/{name}", get(assets::serve))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
}
