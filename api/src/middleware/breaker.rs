//! PostgreSQL's circuit breaker in the api: once a request finds PostgreSQL unreachable
//! (a response marked [`DependencyDown`]`("postgres")`), every `/api/v1` request is
//! answered 503 `dependency_unavailable` with `Retry-After: 1` at once — instead of each
//! waiting out the pool's timeout — while one probe (`SELECT 1`, every 250 ms) waits for
//! it to answer again. Health, metrics and the docs are not behind it.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, DependencyDown};
use crate::state::AppState;

/// How long the probe waits for an answer.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let guarded = path.starts_with("/api/v1/") && path != "/api/v1/openapi.json";
    if guarded && state.db_breaker.is_open() {
        return ApiError::DependencyUnavailable("postgres").into_response();
    }
    let response = next.run(request).await;
    if response.extensions().get::<DependencyDown>() == Some(&DependencyDown("postgres")) {
        let pool = state.pool.clone();
        state.db_breaker.trip(move || {
            let pool = pool.clone();
            async move {
                let query = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&pool);
                matches!(tokio::time::timeout(PROBE_TIMEOUT, query).await, Ok(Ok(1)))
            }
        });
    }
    response
}
