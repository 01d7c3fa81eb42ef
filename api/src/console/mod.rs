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
mod jobs;
mod live;
mod pages;
mod session;
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
