//! The sending account's suppression list (`/suppressions`), one-click unsubscribe
//! (`/unsubscribe/{token}`, RFC 8058) and campaign statistics
//! (`/campaigns/{id}/stats`).

use axum::extract::State;

use crate::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use uuid::Uuid;

use super::cursor::{self, Page};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::middleware::auth::{Authorized, perm};
use crate::services::suppressions::{self as service, CampaignStats, ReportOutcome, Suppression};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/suppressions", get(list).post(add))
        .route("/suppressions/{id}", delete(remove))
        .route(
            "/unsubscribe/{token}",
            get(unsubscribe_page).post(unsubscribe),
        )
        .route("/campaigns/{id}/stats", get(campaign_stats))
        .route("/inbound/reports", post(inbound_report))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SuppressionQuery {
    /// Another account's list (admins with a 2FA login); default: the caller's.
    pub owner: Option<Uuid>,
    /// Only the entry of this address (found by its blind index), if listed.
    #[param(example = "ada@example.org")]
    pub address: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page, as it was given.
    #[param(pattern = "^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
}

/// The caller's suppression list (addresses it no longer sends to), newest first:
/// hard bounces, complaints, unsubscribes and entries added by hand. An admin with a
/// 2FA login may name another account's (`owner`): every account that sends has a
/// list, users' single emails included.
#[utoipa::path(get, path = "/api/v1/suppressions", tag = "suppressions", params(SuppressionQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<Suppression>), (status = 400, body = shared::problem::Problem),
              (status = 403, body = shared::problem::Problem, description = "role `user`")))]
pub async fn list(
    State(state): State<AppState>,
    Authorized(user, ..): Authorized<perm::ManageSuppressions>,
    ApiQuery(query): ApiQuery<SuppressionQuery>,
) -> Result<Json<Page<Suppression>>, ApiError> {
    let owner = service::list_owner(&user, query.owner)?;
    let limit = cursor::page_size(query.limit)?;
    if let Some(address) = query.address.as_deref() {
        let found = service::find(&state, owner, address).await?;
        return Ok(Json(Page::only(found.into_iter().collect())));
    }
    let after = query.cursor.as_deref().map(cursor::decode).transpose()?;
    let (items, more) = service::list(&state, owner, after, limit).await?;
    Ok(Json(Page::keyset(
        items,
        more,
        |s| (s.created_at, s.id),
        |s| s,
    )))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OwnerQuery {
    /// Another account's list (admins with a 2FA login); default: the caller's.
    pub owner: Option<Uuid>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSuppression {
    /// A plain address, as an email's `to` (no display name).
    #[schema(examples("ada@example.org"))]
    pub address: String,
}

/// Adds an address to the caller's list: nothing is sent to it from now on (a
/// message to it ends `suppressed`). 201 when added, 200 when it was already listed
/// (the entry keeps its first reason).
#[utoipa::path(post, path = "/api/v1/suppressions", tag = "suppressions", params(OwnerQuery), request_body = NewSuppression, security(("bearer" = [])),
    responses((status = 201, body = Suppression), (status = 200, body = Suppression, description = "already listed"),
              (status = 403, body = shared::problem::Problem, description = "role `user`, or another account's list without an admin 2FA login"),
              (status = 404, body = shared::problem::Problem, description = "`owner` names no account"),
              (status = 422, body = shared::problem::Problem, description = "`validation_failed`: not an address")))]
pub async fn add(
    State(state): State<AppState>,
    Authorized(user, ..): Authorized<perm::ManageSuppressions>,
    ApiQuery(query): ApiQuery<OwnerQuery>,
    ApiJson(body): ApiJson<NewSuppression>,
) -> Result<Response, ApiError> {
    let owner = service::list_owner(&user, query.owner)?;
    let (entry, created) = service::add(&state, owner, &body.address).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(entry)).into_response())
}

/// Removes an entry: the caller may send to the address again.
#[utoipa::path(delete, path = "/api/v1/suppressions/{id}", tag = "suppressions", params(("id" = Uuid, Path), OwnerQuery), security(("bearer" = [])),
    responses((status = 204, description = "removed"), (status = 404, body = shared::problem::Problem)))]
pub async fn remove(
    State(state): State<AppState>,
    Authorized(user, ..): Authorized<perm::ManageSuppressions>,
    Path(id): Path<Uuid>,
    ApiQuery(query): ApiQuery<OwnerQuery>,
) -> Result<StatusCode, ApiError> {
    let owner = service::list_owner(&user, query.owner)?;
    service::remove(&state, owner, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The page an unsubscribe link opens in a browser: a button that posts to the same
/// address. A `GET` never unsubscribes (mail scanners follow links).
#[utoipa::path(get, path = "/api/v1/unsubscribe/{token}", tag = "suppressions", params(("token" = String, Path, description = "From the message's `List-Unsubscribe` header")),
    responses((status = 200, content_type = "text/html", body = String, description = "A page with an Unsubscribe button"),
              (status = 404, body = shared::problem::Problem, description = "not a valid link")))]
pub async fn unsubscribe_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    if !service::is_unsubscribe_token(&state, &token) {
        return Err(ApiError::NotFound(
            "this unsubscribe link is not valid: copy the whole link from the message".into(),
        ));
    }
    // A valid token is base64url: it needs no escaping.
    Ok(super::page(
        StatusCode::OK,
        "Unsubscribe",
        &format!(
            "<p>Press Unsubscribe and this sender will not email this address again.</p>\
             <form method=\"post\" action=\"{token}\">\
             <button type=\"submit\">Unsubscribe</button></form>"
        ),
    ))
}

/// The body RFC 8058 has mailbox providers send (not required).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct OneClick {
    #[schema(rename = "List-Unsubscribe", examples("One-Click"))]
    pub list_unsubscribe: Option<String>,
}

/// One-click unsubscribe (RFC 8058): mailbox providers `POST`
/// `List-Unsubscribe=One-Click` here; so does the page's button. No login, no
/// cookies; the signed token names the sender and recipient. The address is
/// suppressed at once; repeating it changes nothing.
#[utoipa::path(post, path = "/api/v1/unsubscribe/{token}", tag = "suppressions", params(("token" = String, Path)),
    request_body(content = OneClick, content_type = "application/x-www-form-urlencoded", description = "`List-Unsubscribe=One-Click` (any body, or none, is accepted)"),
    responses((status = 200, content_type = "text/html", body = String, description = "unsubscribed"),
              (status = 404, body = shared::problem::Problem, description = "not a valid link")))]
pub async fn unsubscribe(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    service::unsubscribe(&state, &token).await?;
    Ok(super::page(
        StatusCode::OK,
        "Unsubscribed",
        "<p>Done: this sender will not email this address again.</p>",
    ))
}

/// What happened to a campaign's messages: delivered, bounced, complained,
/// unsubscribed, suppressed, and its complaint rate.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}/stats", tag = "emails", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = CampaignStats), (status = 404, body = shared::problem::Problem)))]
pub async fn campaign_stats(
    State(state): State<AppState>,
    Authorized(user, ..): Authorized<perm::ReadOwnRequests>,
    Path(id): Path<Uuid>,
) -> Result<Json<CampaignStats>, ApiError> {
    Ok(Json(service::campaign_stats(&state, &user, id).await?))
}

/// Where bounces (DSN, RFC 3464) and complaints (ARF, RFC 5965) are delivered: the
/// raw message as the body (pipe it from the bounce mailbox's MTA, or have the
/// provider's webhook forward it), authorized by `INBOUND_REPORTS_TOKEN`. The message
/// is found by its Message-ID (`<job id@conveyor>`); each of its recipients the report
/// names as a hard bounce or a complaint is suppressed on its sender's list. 404 while
/// no token is configured.
#[utoipa::path(post, path = "/api/v1/inbound/reports", tag = "suppressions",
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The report message as received (a `multipart/report`), with any content type (`message/rfc822` is usual)"),
    security(("inbound_token" = [])),
    responses((status = 200, body = ReportOutcome),
              (status = 401, body = shared::problem::Problem, description = "no or a wrong token"),
              (status = 404, body = shared::problem::Problem, description = "inbound reports are not enabled"),
              (status = 422, body = shared::problem::Problem, description = "not a DSN or ARF report")))]
pub async fn inbound_report(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<ReportOutcome>, ApiError> {
    use secrecy::ExposeSecret as _;
    use subtle::ConstantTimeEq as _;
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if given.is_empty() {
        return Err(ApiError::Unauthenticated(
            "the inbound reports token is required".into(),
        ));
    }
    let Some(expected) = state.config.mail.inbound_token.as_ref() else {
        return Err(ApiError::NotFound("inbound reports are not enabled".into()));
    };
    let expected = expected.expose_secret().as_bytes();
    if given.len() != expected.len() || !bool::from(given.as_bytes().ct_eq(expected)) {
        return Err(ApiError::Unauthenticated(
            "a valid inbound reports token is required".into(),
        ));
    }
    Ok(Json(service::inbound_report(&state, &body).await?))
}
