//! `/api/v1/auth/*`: registration, login (with 2FA), refresh, logout, password change
//! and TOTP enrolment. The refresh token travels only in an HttpOnly cookie.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::extract::{ApiJson, ClientIp};
use crate::middleware::auth::AuthUser;
use crate::services::accounts::{self, NewAccount, UserView};
use crate::services::auth::{self, LoginOutcome, Tokens, TotpSetup};
use crate::state::AppState;

/// `__Secure-` makes browsers refuse the cookie unless it is Secure and set over HTTPS.
pub const REFRESH_COOKIE: &str = "__Secure-conveyor_refresh";
const COOKIE_PATH: &str = "/api/v1/auth";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/register", post(register))
        .route("/auth/login", post(login))
        .route("/auth/login/mfa", post(login_mfa))
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
        .route("/auth/password", post(change_password))
        .route("/auth/2fa/setup", post(setup_2fa))
        .route("/auth/2fa/enable", post(enable_2fa))
        .route("/auth/2fa/disable", post(disable_2fa))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub email: String,
    /// 12 to 256 characters, not the email, not guessable.
    pub password: String,
    pub display_name: Option<String>,
    /// E.164, e.g. +14155550123.
    pub phone: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaLoginRequest {
    pub mfa_token: String,
    /// A 6-digit TOTP code or a recovery code.
    pub code: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    pub code: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    pub new_password: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MfaChallenge {
    pub mfa_required: bool,
    /// Short-lived (5 min), single-use; send it with a code to /auth/login/mfa.
    pub mfa_token: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecoveryCodes {
    /// One-time codes that replace a TOTP code once each; shown only now.
    pub recovery_codes: Vec<String>,
}

fn refresh_cookie(value: &str, max_age_secs: u64) -> HeaderValue {
    let cookie = format!(
        "{REFRESH_COOKIE}={value}; Path={COOKIE_PATH}; Max-Age={max_age_secs}; HttpOnly; Secure; SameSite=Strict"
    );
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn signed_in(state: &AppState, tokens: Tokens) -> Response {
    let cookie = refresh_cookie(
        &tokens.refresh_token,
        state.auth.refresh_token_ttl.as_secs(),
    );
    let body = TokenResponse {
        access_token: tokens.access_token,
        token_type: "Bearer",
        expires_in: tokens.expires_in,
    };
    ([(header::SET_COOKIE, cookie)], Json(body)).into_response()
}

/// The refresh token from the cookie header.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == REFRESH_COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|value| !value.is_empty() && value.len() <= 128)
}

/// Cookie-authenticated, state-changing endpoints also need a header no cross-site
/// form can send (a CSRF defence on top of SameSite=Strict).
fn require_csrf_header(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get("x-requested-with") {
        Some(value) if !value.is_empty() => Ok(()),
        _ => Err(ApiError::Forbidden(
            "the X-Requested-With header is required".into(),
        )),
    }
}

/// Creates an account with role `user`.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses(
        (status = 201, body = UserView),
        (status = 409, body = shared::problem::Problem, description = "`conflict`: the email is taken"),
        (status = 422, body = shared::problem::Problem, description = "`validation_failed` with `errors[]`; also for unknown fields"),
    ))]
pub async fn register(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<Response, ApiError> {
    let account = NewAccount::parse(
        &body.email,
        &body.password,
        body.display_name.as_deref(),
        body.phone.as_deref(),
    )?;
    let row = accounts::create(
        &state.pool,
        &state.security,
        account,
        shared::domain::Role::User,
    )
    .await?;
    let view = accounts::owner_view(&state.security, &row)?;
    tracing::info!(user_id = %view.id, "account registered");
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Password login. With 2FA on, answers an MFA challenge instead of tokens.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, body = TokenResponse, description = "Signed in; the refresh token is in the `__Secure-conveyor_refresh` cookie. With 2FA on, the body is an `MfaChallenge` instead."),
        (status = 401, body = shared::problem::Problem, description = "`invalid_credentials`"),
        (status = 429, body = shared::problem::Problem, description = "`rate_limited`, with Retry-After"),
    ))]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    match auth::login(&state, ip, &body.email, body.password).await? {
        LoginOutcome::SignedIn(tokens) => Ok(signed_in(&state, tokens)),
        LoginOutcome::MfaRequired { mfa_token } => Ok(Json(MfaChallenge {
            mfa_required: true,
            mfa_token,
        })
        .into_response()),
    }
}

/// Completes a 2FA login with a TOTP code or a recovery code.
#[utoipa::path(post, path = "/api/v1/auth/login/mfa", tag = "auth", request_body = MfaLoginRequest,
    responses(
        (status = 200, body = TokenResponse),
        (status = 401, body = shared::problem::Problem, description = "`invalid_credentials` (wrong code) or `unauthenticated` (bad or spent MFA token)"),
    ))]
pub async fn login_mfa(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<MfaLoginRequest>,
) -> Result<Response, ApiError> {
    let tokens = auth::login_mfa(&state, &body.mfa_token, &body.code).await?;
    Ok(signed_in(&state, tokens))
}

/// Rotates the refresh cookie and returns a new access token. Needs `X-Requested-With`.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth",
    responses(
        (status = 200, body = TokenResponse),
        (status = 401, body = shared::problem::Problem, description = "missing, expired or reused refresh token (reuse revokes the session)"),
        (status = 403, body = shared::problem::Problem, description = "`forbidden`: no X-Requested-With header"),
    ))]
pub async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_csrf_header(&headers)?;
    let token = cookie_token(&headers)
        .ok_or_else(|| ApiError::Unauthenticated("no refresh cookie".into()))?;
    let tokens = auth::refresh(&state, &token).await?;
    Ok(signed_in(&state, tokens))
}

/// Ends the session of the refresh cookie and clears it. Needs `X-Requested-With`.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    responses((status = 204, description = "Signed out (also when there was no session)"),
              (status = 403, body = shared::problem::Problem, description = "`forbidden`: no X-Requested-With header")))]
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_csrf_header(&headers)?;
    if let Some(token) = cookie_token(&headers) {
        auth::logout(&state, &token).await?;
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, refresh_cookie("", 0))],
    )
        .into_response())
}

/// Changes the password; every session of the account ends.
#[utoipa::path(post, path = "/api/v1/auth/password", tag = "auth", request_body = ChangePasswordRequest,
    security(("bearer" = [])),
    responses((status = 204), (status = 401, body = shared::problem::Problem), (status = 422, body = shared::problem::Problem)))]
pub async fn change_password(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<ChangePasswordRequest>,
) -> Result<StatusCode, ApiError> {
    auth::change_password(&state, &user, body.current_password, &body.new_password).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Starts TOTP enrolment: a new secret, pending until enabled with a code.
#[utoipa::path(post, path = "/api/v1/auth/2fa/setup", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = TotpSetup), (status = 409, body = shared::problem::Problem)))]
pub async fn setup_2fa(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<TotpSetup>, ApiError> {
    Ok(Json(auth::setup_totp(&state, &user).await?))
}

/// Enables 2FA with a code from the new secret; returns the recovery codes once.
#[utoipa::path(post, path = "/api/v1/auth/2fa/enable", tag = "auth", request_body = CodeRequest, security(("bearer" = [])),
    responses((status = 200, body = RecoveryCodes), (status = 409, body = shared::problem::Problem, description = "2FA is already on, or was never set up"),
              (status = 422, body = shared::problem::Problem)))]
pub async fn enable_2fa(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<CodeRequest>,
) -> Result<Json<RecoveryCodes>, ApiError> {
    let recovery_codes = auth::enable_totp(&state, &user, &body.code).await?;
    Ok(Json(RecoveryCodes { recovery_codes }))
}

/// Disables 2FA with a current TOTP code or a recovery code.
#[utoipa::path(post, path = "/api/v1/auth/2fa/disable", tag = "auth", request_body = CodeRequest, security(("bearer" = [])),
    responses((status = 204), (status = 409, body = shared::problem::Problem, description = "2FA is not on"),
              (status = 422, body = shared::problem::Problem)))]
pub async fn disable_2fa(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<CodeRequest>,
) -> Result<StatusCode, ApiError> {
    auth::disable_totp(&state, &user, &body.code).await?;
    Ok(StatusCode::NO_CONTENT)
}
