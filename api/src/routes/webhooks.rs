//! `/api/v1/me/webhook-secret`: the caller's completion-webhook signing secret — made
//! or rotated (shown once, 201), and its state (never the secret). Any role.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::error::ApiError;
use crate::middleware::auth::AuthUser;
use crate::services::webhooks::{self as service, NewSecret, SecretState};
use crate::state::AppState;

const PATH: &str = "/api/v1/me/webhook-secret";

pub fn routes() -> Router<AppState> {
    Router::new().route("/me/webhook-secret", get(show).post(rotate))
}

/// Makes the caller's signing secret, or rotates it: the previous secret keeps
/// signing, next to the new one, for 24 hours. The answer is the only time the
/// secret is shown.
#[utoipa::path(post, path = "/api/v1/me/webhook-secret", tag = "webhooks", security(("bearer" = [])),
    responses((status = 201, body = NewSecret, description = "The new secret; `Location` names its state")))]
pub async fn rotate(State(state): State<AppState>, user: AuthUser) -> Result<Response, ApiError> {
    let created = service::rotate(&state, &user).await?;
    Ok((
        StatusCode::CREATED,
        [
            (header::LOCATION, HeaderValue::from_static(PATH)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        Json(created),
    )
        .into_response())
}

/// Whether the caller has a signing secret, since when, and until when a rotated-out
/// one still signs. Never the secret.
#[utoipa::path(get, path = "/api/v1/me/webhook-secret", tag = "webhooks", security(("bearer" = [])),
    responses((status = 200, body = SecretState)))]
pub async fn show(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<SecretState>, ApiError> {
    Ok(Json(service::secret_state(&state, &user).await?))
}
