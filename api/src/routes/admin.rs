//! `/api/v1/admin/*`: operator actions. Every one needs an admin whose login passed 2FA.

use axum::extract::{Path, State};
use axum::routing::patch;
use axum::{Json, Router};
use serde::Deserialize;
use shared::domain::Role;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::middleware::auth::{Authorized, perm};
use crate::services::accounts::{self, AdminUserView};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/users/{id}", patch(update_user))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    pub role: Role,
}

/// Changes a user's role. Their current access tokens stop working at once.
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
