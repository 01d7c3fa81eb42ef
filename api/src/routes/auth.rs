//! `/api/v1/auth/*`: registration, login (with 2FA), refresh, logout, password change
//! and TOTP enrolment. The refresh token travels only in an HttpOnly cookie.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::extract::{ApiJson, ClientIp};
use crate::middleware::auth::AuthUser;
use crate::services::accounts::NewAccount;
use crate::services::auth::{self, LoginOutcome, Tokens, TotpSetup};
use crate::services::verification;
use crate::state::AppState;

/// `__Secure-` makes browsers refuse the cookie unless it is Secure and set over HTTPS.
pub const REFRESH_COOKIE: &str = "__Secure-conveyor_refresh";
const COOKIE_PATH: &str = "/api/v1/auth";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/register", post(register))
        .route(
            "/auth/verify-email",
            get(verify_email_page).post(verify_email),
        )
        .route("/auth/verify-email/resend", post(resend_verification))
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
    /// An email address (at most 254 characters; the domain must look deliverable).
    #[schema(format = "email", max_length = 254)]
    pub email: String,
    /// 12 to 256 characters, not the email, not guessable.
    #[schema(min_length = 12, max_length = 256)]
    pub password: String,
    /// At most 100 characters, no control characters.
    #[schema(max_length = 100)]
    pub display_name: Option<String>,
    /// E.164, e.g. +14155550123.
    #[schema(pattern = r"^\+[1-9][0-9]{6,14}$")]
    pub phone: Option<String>,
}

/// A verification link's token.
#[derive(Debug, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VerifyEmailRequest {
    /// The `token` of the link in the verification email (43 base64url characters).
    #[schema(min_length = 43, max_length = 43, pattern = "^[A-Za-z0-9_-]{43}$")]
    #[param(min_length = 43, max_length = 43, pattern = "^[A-Za-z0-9_-]{43}$")]
    pub token: String,
}

/// An email about the account is on its way (or, for a registration, the answer
/// that is the same whether the address was free or taken).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MailQueued {
    pub detail: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EmailVerified {
    /// Always `true`.
    pub email_verified: bool,
    /// `true` if the link had already confirmed the address before.
    pub already_verified: bool,
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

/// The 200 of `POST /auth/login`: the tokens, or with 2FA on a challenge to finish
/// at `POST /auth/login/mfa` (told apart by `mfa_required`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // the schema of the two bodies `login` sends
pub enum LoginResponse {
    SignedIn(TokenResponse),
    MfaRequired(MfaChallenge),
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

/// Registers an account with role `user` and emails the address a verification
/// link. The answer is the same whether or not the address is taken (its owner is
/// told by email instead), so registration does not reveal who has an account. The
/// account may sign in at once; emails, campaigns and uploads wait for the link.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses(
        (status = 202, body = MailQueued, description = "Registered, or the address was taken: either way a message is on its way to the address"),
        (status = 422, body = shared::problem::Problem, description = "`validation_failed` with `errors[]`; also for unknown fields"),
        (status = 429, body = shared::problem::Problem, description = "`rate_limited`, with Retry-After"),
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
    verification::register(&state, account).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(MailQueued {
            detail: "check your inbox: a message with the next step is on its way to this address",
        }),
    )
        .into_response())
}

/// The page a verification link opens: a Confirm button that posts the token. A
/// `GET` never confirms, so a mail scanner that follows links spends nothing. A link
/// without a well-formed token (never one the api sent) is 400.
#[utoipa::path(get, path = "/api/v1/auth/verify-email", tag = "auth", params(VerifyEmailRequest),
    responses(
        (status = 200, content_type = "text/html", body = String, description = "A page with a Confirm button"),
        (status = 400, body = shared::problem::Problem, description = "`validation_failed`: no well-formed `token`"),
    ))]
pub async fn verify_email_page(uri: axum::http::Uri) -> Result<Response, ApiError> {
    let token = uri
        .query()
        .into_iter()
        .flat_map(|q| form_urlencoded::parse(q.as_bytes()))
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned())
        .filter(|token| verification::is_token_shaped(token))
        .ok_or_else(|| {
            ApiError::validation(
                "the link has no valid token: copy the whole link from the message",
            )
        })?;
    // The token is base64url (checked above), so it needs no escaping.
    Ok(super::page(
        StatusCode::OK,
        "Confirm your email address",
        &format!(
            "<p>Press Confirm to finish setting up your Conveyor account.</p>\
             <form method=\"post\" action=\"verify-email\">\
             <input type=\"hidden\" name=\"token\" value=\"{token}\">\
             <button type=\"submit\">Confirm</button></form>"
        ),
    ))
}

/// Confirms the account's email address with the token of a verification link.
/// JSON for clients; a form post (from the link's page) gets an HTML page back.
#[utoipa::path(post, path = "/api/v1/auth/verify-email", tag = "auth",
    request_body(content(
        (VerifyEmailRequest = "application/json"),
        (VerifyEmailRequest = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "Confirmed (JSON for a JSON body; an HTML page for a form post)", content(
            (EmailVerified = "application/json"),
            (String = "text/html"),
        )),
        (status = 422, description = "`validation_failed`: the token is unknown, used, or expired (problem+json for a JSON body; an HTML page for a form post)", content(
            (shared::problem::Problem = "application/problem+json"),
            (String = "text/html"),
        )),
    ))]
pub async fn verify_email(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    use axum::extract::FromRequest as _;
    let is_form = crate::extract::media_type(request.headers()).as_deref()
        == Some("application/x-www-form-urlencoded");
    if !is_form {
        let ApiJson(body) = ApiJson::<VerifyEmailRequest>::from_request(request, &state).await?;
        let already_verified = !verification::verify(&state, &body.token).await?;
        return Ok(Json(EmailVerified {
            email_verified: true,
            already_verified,
        })
        .into_response());
    }
    let body = axum::body::Bytes::from_request(request, &state)
        .await
        .map_err(|_| ApiError::validation("the body could not be read"))?;
    let token = form_urlencoded::parse(&body)
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    Ok(match verification::verify(&state, &token).await {
        Ok(_) => super::page(
            StatusCode::OK,
            "Email address confirmed",
            "<p>Your account can now send email and store files. You may close this page.</p>",
        ),
        Err(ApiError::Unprocessable { .. }) => super::page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "This link is not valid",
            "<p>It may have expired or been replaced by a newer one. Sign in and ask for a new link.</p>",
        ),
        Err(err) => return Err(err),
    })
}

/// Emails the signed-in account a new verification link (at most one account email
/// per `ACCOUNT_MAIL_INTERVAL_SECS`).
#[utoipa::path(post, path = "/api/v1/auth/verify-email/resend", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 202, body = MailQueued),
        (status = 409, body = shared::problem::Problem, description = "`conflict`: the address is already confirmed"),
        (status = 429, body = shared::problem::Problem, description = "`rate_limited`: a link was sent lately; Retry-After says when another may be"),
    ))]
pub async fn resend_verification(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Response, ApiError> {
    verification::resend(&state, &user).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(MailQueued {
            detail: "a new verification link is on its way",
        }),
    )
        .into_response())
}

/// Password login. With 2FA on, answers an MFA challenge instead of tokens.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, body = LoginResponse, description = "Signed in (`TokenResponse`; the refresh token is in the `__Secure-conveyor_refresh` cookie), or with 2FA on an `MfaChallenge` to finish at `/auth/login/mfa` (no cookie yet)",
            headers(("Set-Cookie" = String, description = "The refresh token: `__Secure-conveyor_refresh`, HttpOnly, Secure, SameSite=Strict, Path=/api/v1/auth (when signed in)"))),
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
        (status = 200, body = TokenResponse, description = "Signed in",
            headers(("Set-Cookie" = String, description = "The refresh token: `__Secure-conveyor_refresh`, HttpOnly, Secure, SameSite=Strict, Path=/api/v1/auth"))),
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
    params(
        ("X-Requested-With" = String, Header, description = "Any non-empty value (a header no cross-site form can send), e.g. `XMLHttpRequest`"),
        ("__Secure-conveyor_refresh" = String, Cookie, description = "The refresh token the last sign-in or refresh set; a browser sends it by itself"),
    ),
    responses(
        (status = 200, body = TokenResponse, description = "A new access token; the refresh cookie is rotated (the old one is spent: using it again ends the session)",
            headers(("Set-Cookie" = String, description = "The new refresh token: `__Secure-conveyor_refresh`, HttpOnly, Secure, SameSite=Strict, Path=/api/v1/auth"))),
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
    params(
        ("X-Requested-With" = String, Header, description = "Any non-empty value (a header no cross-site form can send), e.g. `XMLHttpRequest`"),
        ("__Secure-conveyor_refresh" = Option<String>, Cookie, description = "The refresh token of the session to end; a browser sends it by itself"),
    ),
    responses((status = 204, description = "Signed out (also when there was no session); the cookie is cleared",
                headers(("Set-Cookie" = String, description = "Clears `__Secure-conveyor_refresh` (Max-Age=0)"))),
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
