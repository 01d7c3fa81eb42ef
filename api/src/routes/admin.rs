//! `/api/v1/admin/*`: operator actions. Every one needs an admin whose login passed 2FA.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use shared::domain::Role;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::middleware::auth::{Authorized, perm};
use crate::services::accounts::{self, AdminUserView};
use crate::services::requests::Accepted;
use crate::services::uploads;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/users/{id}", patch(update_user))
        .route("/admin/scans/rescan-all", post(rescan_all))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    pub role: Role,
}

/// Changes a user's role. Every session of theirs ends at once: their access and
/// refresh tokens never work again (even after a change back); they sign in anew.
#[utoipa::path(patch, path = "/api/v1/admin/users/{id}", tag = "admin", request_body = UpdateUserRequest,
    params(("id" = Uuid, Path, description = "user id")), security(("bearer" = [])),
    responses(
        (status = 200, body = AdminUserView),
        (status = 403, body = shared::problem::Problem, description = "`forbidden` (not admin) or `mfa_required`"),
        (status = 404, body = shared::problem::Problem),
        (status = 409, body = shared::problem::Problem, description = "would demote the last admin"),
    ))]
pub async fn update_user(
    State(state): State<AppState>,
    Authorized(admin, ..): Authorized<perm::ManageUsers>,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<UpdateUserRequest>,
) -> Result<Json<AdminUserView>, ApiError> {
    let row = accounts::change_role(&state.pool, id, body.role).await?;
    tracing::info!(admin_id = %admin.id, user_id = %id, role = %body.role, "role changed");
    Ok(Json(accounts::admin_view(&row)?))
}

/// Rescans every stored upload with the current rules (after a rule was added): one
/// request with a `scans` job per upload; follow its progress like a campaign's.
#[utoipa::path(post, path = "/api/v1/admin/scans/rescan-all", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 202, body = Accepted, description = "Queued; `total` is the number of uploads; `Location` names the request"),
        (status = 403, body = shared::problem::Problem, description = "`forbidden` (not admin) or `mfa_required`"),
    ))]
pub async fn rescan_all(
    State(state): State<AppState>,
    Authorized(admin, ..): Authorized<perm::ManageQueues>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let accepted = uploads::rescan_all(&state, &admin, super::correlation(&headers)).await?;
    tracing::info!(admin_id = %admin.id, request_id = %accepted.id, total = accepted.total, "rescan of every upload queued");
    Ok(super::accepted(accepted))
}
