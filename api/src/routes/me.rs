//! `GET /api/v1/me`: the caller's own account, PII decrypted for its owner only.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::error::ApiError;
use crate::middleware::auth::AuthUser;
use crate::services::accounts::{self, UserView};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/me", get(me))
}

#[utoipa::path(get, path = "/api/v1/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = UserView), (status = 401, body = shared::problem::Problem)))]
pub async fn me(State(state): State<AppState>, user: AuthUser) -> Result<Json<UserView>, ApiError> {
    let row = crate::services::auth::current_user(&state, &user).await?;
    Ok(Json(accounts::owner_view(&state.security, &row)?))
}
