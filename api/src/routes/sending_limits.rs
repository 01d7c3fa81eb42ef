//! `/api/v1/me/sending-limits`: the caller's own daily cap and warm-up.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use shared::mail::window::WarmupFields;

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::middleware::auth::{Authorized, perm};
use crate::services::sending_limits::{self as service, Asked, LimitsView};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/me/sending-limits", get(show).put(set).delete(remove))
}

/// The limits to set: a daily cap, a warm-up, or both.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsRequest {
    /// The IANA zone the days are counted in; default `UTC`.
    #[schema(examples("Europe/Berlin"))]
    pub time_zone: Option<String>,
    /// The most messages the account sends per local day, 1 to 10,000,000.
    #[schema(minimum = 1, maximum = 10000000)]
    pub daily_cap: Option<i64>,
    /// A cap that grows day by day (for a new sending domain): `first_day` messages on
    /// `starts_on`, then each day `growth_percent` more (rounded up), until `max`.
    pub warmup: Option<WarmupFields>,
}

/// Sets the caller's sending limits (replacing any before: one left out is no
/// limit). The worker holds every email and campaign message of the account to them:
/// over the day's cap a message waits, spending no attempt, until the next local day.
#[utoipa::path(put, path = "/api/v1/me/sending-limits", tag = "emails", request_body = LimitsRequest, security(("bearer" = [])),
    responses((status = 200, body = LimitsView),
              (status = 422, body = shared::problem::Problem, description = "`validation_failed`: an unknown time zone, a cap out of range, a warm-up that does not grow, or neither a cap nor a warm-up")))]
pub async fn set(
    State(state): State<AppState>,
    Authorized(user, ..): Authorized<perm::SubmitEmail>,
    ApiJson(body): ApiJson<LimitsRequest>,
) -> Result<Json<LimitsView>, ApiError> {
    let asked = Asked {
        time_zone: body.time_zone,
        daily_cap: body.daily_cap,
        warmup: body.warmup,
    };
    Ok(Json(service::put(&state, &user, asked).await?))
}

/// The caller's sending limits and where today stands (its cap and what was sent).
#[utoipa::path(get, path = "/api/v1/me/sending-limits", tag = "emails", security(("bearer" = [])),
    responses((status = 200, body = LimitsView), (status = 404, body = shared::problem::Problem, description = "no limits are set")))]
pub async fn show(
    State(state): State<AppState>,
    Authorized(user, ..): Authorized<perm::SubmitEmail>,
) -> Result<Json<LimitsView>, ApiError> {
    Ok(Json(service::find(&state, &user).await?))
}

/// Removes the caller's sending limits.
#[utoipa::path(delete, path = "/api/v1/me/sending-limits", tag = "emails", security(("bearer" = [])),
    responses((status = 204, description = "removed"), (status = 404, body = shared::problem::Problem, description = "no limits were set")))]
pub async fn remove(
    State(state): State<AppState>,
    Authorized(user, ..): Authorized<perm::SubmitEmail>,
) -> Result<StatusCode, ApiError> {
    service::delete(&state, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}
