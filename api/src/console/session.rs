//! Signing in to the console and keeping the session: the admin's access and refresh
//! tokens in `__Host-` cookies (`HttpOnly`, `Secure`, `SameSite=Strict`, no script can
//! read them), renewed through the refresh token's rotation when the access token
//! expires. Every form post must come from the console's own origin (`Sec-Fetch-Site`
//! or `Origin`), on top of `SameSite=Strict`.

use axum::Form;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{AppendHeaders, IntoResponse, Redirect, Response};
use serde::Deserialize;
use shared::domain::{Principal, Role};

use super::views;
use crate::error::ApiError;
use crate::extract::ClientIp;
use crate::services::auth::{self, LoginOutcome, Tokens};
use crate::services::tokens::AccessClaims;
use crate::state::AppState;

/// The access token of the console's session.
const ACCESS: &str = "__Host-conveyor_console";
/// Its refresh token (rotated on every renewal).
const REFRESH: &str = "__Host-conveyor_console_refresh";
/// Between the password and the second factor: the short-lived MFA token.
const MFA: &str = "__Host-conveyor_console_mfa";
/// How long the second step may wait (the MFA token's own lifetime).
const MFA_SECS: u64 = 300;

/// The signed-in admin, for the pages and the actions they take.
#[derive(Debug, Clone, Copy)]
pub struct ConsoleAdmin(pub Principal);

fn cookie(name: &str, value: &str, max_age_secs: u64) -> HeaderValue {
    let cookie = format!(
        "{name}={value}; Path=/; Max-Age={max_age_secs}; HttpOnly; Secure; SameSite=Strict"
    );
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

fn cleared(name: &str) -> HeaderValue {
    cookie(name, "", 0)
}

/// A cookie's value from the request (tokens are base64url or JWTs: no quoting).
fn read_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
        .filter(|value| !value.is_empty() && value.len() <= 4096)
}

/// The session's two cookies (appended: `Set-Cookie` is the header that repeats).
fn session_cookies(
    state: &AppState,
    tokens: &Tokens,
) -> AppendHeaders<[(header::HeaderName, HeaderValue); 2]> {
    AppendHeaders([
        (
            header::SET_COOKIE,
            cookie(ACCESS, &tokens.access_token, tokens.expires_in),
        ),
        (
            header::SET_COOKIE,
            cookie(
                REFRESH,
                &tokens.refresh_token,
                state.auth.refresh_token_ttl.as_secs(),
            ),
        ),
    ])
}

fn signed_out() -> AppendHeaders<[(header::HeaderName, HeaderValue); 3]> {
    AppendHeaders([
        (header::SET_COOKIE, cleared(ACCESS)),
        (header::SET_COOKIE, cleared(REFRESH)),
        (header::SET_COOKIE, cleared(MFA)),
    ])
}

/// Whether a form post comes from the console's own pages: a browser says so in
/// `Sec-Fetch-Site`, or (an older one) in `Origin`; a client that sends neither is
/// not a browser another site could drive.
pub(super) fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// The admin as the operator of an action that needs `permission` (the admin API's
/// rule), or the refusal page.
// The refusal is the handler's own answer, returned at once: boxing it buys nothing.
#[allow(clippy::result_large_err)]
pub(super) fn operator(
    admin: &ConsoleAdmin,
    headers: &HeaderMap,
    permission: shared::domain::Permission,
) -> Result<crate::services::operations::Operator, Response> {
    admin.0.check(permission).map_err(|err| {
        super::views::refusal(axum::http::StatusCode::FORBIDDEN, &err.to_string())
    })?;
    Ok(crate::services::operations::Operator::admin(
        &admin.0,
        crate::routes::correlation(headers),
    ))
}

pub(super) fn cross_site() -> Response {
    views::refusal(
        StatusCode::FORBIDDEN,
        "This form can only be sent from the console's own pages.",
    )
}

/// Why a request gets no console page.
enum Refusal {
    /// No session, or it ended: sign in.
    SignIn,
    /// Signed in, but not an admin who passed the second factor.
    NotAdmin(Role),
    Failed(ApiError),
}

/// The admin a verified access token names, if its session is still active and the
/// account is still what the token says.
async fn admin_of(state: &AppState, claims: AccessClaims) -> Result<Principal, Refusal> {
    let current = auth::current_role(state, claims.sid, claims.sub)
        .await
        .map_err(Refusal::Failed)?;
    let Some((role, email_verified)) = current.filter(|(role, _)| *role == claims.role) else {
        return Err(Refusal::SignIn);
    };
    if role != Role::Admin || !claims.mfa {
        return Err(Refusal::NotAdmin(role));
    }
    Ok(Principal {
        id: claims.sub,
        role,
        session_id: claims.sid,
        mfa: claims.mfa,
        email_verified,
    })
}

/// The admin of the request's cookies; `Some(tokens)` when the session had to be
/// renewed (the response sets them).
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(Principal, Option<Tokens>), Refusal> {
    if let Some(access) = read_cookie(headers, ACCESS)
        && let Ok(claims) = state.security.tokens.verify_access(&access)
    {
        return Ok((admin_of(state, claims).await?, None));
    }
    // Expired (or missing): renew through the refresh token, once.
    let refresh = read_cookie(headers, REFRESH).ok_or(Refusal::SignIn)?;
    let tokens = match auth::refresh(state, &refresh).await {
        Ok(tokens) => tokens,
        Err(ApiError::Unauthenticated(_) | ApiError::TokenExpired) => {
            return Err(Refusal::SignIn);
        }
        Err(err) => return Err(Refusal::Failed(err)),
    };
    let claims = state
        .security
        .tokens
        .verify_access(&tokens.access_token)
        .map_err(|_| Refusal::SignIn)?;
    Ok((admin_of(state, claims).await?, Some(tokens)))
}

/// Middleware of every signed-in page and stream: the admin goes into the request's
/// extensions; anyone else is sent to sign in (a stream gets 401) or refused.
pub async fn require_admin(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let stream = request
        .headers()
        .get(header::ACCEPT)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    match authenticate(&state, request.headers()).await {
        Ok((admin, renewed)) => {
            request.extensions_mut().insert(ConsoleAdmin(admin));
            let response = next.run(request).await;
            match renewed {
                Some(tokens) => (session_cookies(&state, &tokens), response).into_response(),
                None => response,
            }
        }
        Err(Refusal::SignIn) if stream => (StatusCode::UNAUTHORIZED, signed_out()).into_response(),
        Err(Refusal::SignIn) => (signed_out(), Redirect::to("/console/login")).into_response(),
        Err(Refusal::NotAdmin(role)) => not_for(role),
        Err(Refusal::Failed(err)) => {
            let (status, detail) = err.for_page();
            views::refusal(status, &detail)
        }
    }
}

fn not_for(role: Role) -> Response {
    let detail = match role {
        Role::Admin => {
            "This session did not pass the second factor: sign out and sign in with your code."
        }
        _ => "The console is for admins. Your account cannot open it.",
    };
    views::refusal(StatusCode::FORBIDDEN, detail)
}

/// `GET /console/login`.
pub async fn login_form() -> Response {
    views::login(StatusCode::OK, None).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Credentials {
    email: String,
    password: String,
}

/// `POST /console/login`: the password step. An admin with a second factor gets the
/// code step; an account without one is told to turn it on first (the session the
/// password opened is ended at once).
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<Credentials>,
) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    if form.email.trim().is_empty() || form.password.is_empty() {
        return views::login(
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("Enter your email and password."),
        )
        .into_response();
    }
    match auth::login(&state, ip, form.email.trim(), form.password).await {
        Ok(LoginOutcome::MfaRequired { mfa_token }) => (
            AppendHeaders([(header::SET_COOKIE, cookie(MFA, &mfa_token, MFA_SECS))]),
            views::code(StatusCode::OK, None),
        )
            .into_response(),
        Ok(LoginOutcome::SignedIn(tokens)) => {
            if let Err(err) = auth::logout(&state, &tokens.refresh_token).await {
                tracing::warn!(error = %err, "cannot end the session a console login opened");
            }
            views::login(
                StatusCode::FORBIDDEN,
                Some(
                    "The console needs an admin account with two-factor authentication. \
                     Turn it on first (POST /api/v1/auth/2fa/setup, then /enable).",
                ),
            )
            .into_response()
        }
        Err(err) => {
            let (status, detail) = err.for_page();
            views::login(status, Some(&detail)).into_response()
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Code {
    code: String,
}

/// `POST /console/login/code`: the second factor (a TOTP or a recovery code). Only an
/// admin gets a console session; anyone else's new session is ended at once.
pub async fn login_code(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<Code>,
) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let Some(mfa_token) = read_cookie(&headers, MFA) else {
        return views::login(
            StatusCode::UNAUTHORIZED,
            Some("The sign-in took too long: enter your password again."),
        )
        .into_response();
    };
    let tokens = match auth::login_mfa(&state, &mfa_token, form.code.trim()).await {
        Ok(tokens) => tokens,
        Err(err @ (ApiError::InvalidCredentials | ApiError::RateLimited(_))) => {
            let (status, detail) = err.for_page();
            return views::code(status, Some(&detail)).into_response();
        }
        Err(err) => {
            let (status, detail) = err.for_page();
            return (
                AppendHeaders([(header::SET_COOKIE, cleared(MFA))]),
                views::login(status, Some(&detail)),
            )
                .into_response();
        }
    };
    let role = state
        .security
        .tokens
        .verify_access(&tokens.access_token)
        .map(|claims| claims.role);
    if role != Ok(Role::Admin) {
        if let Err(err) = auth::logout(&state, &tokens.refresh_token).await {
            tracing::warn!(error = %err, "cannot end the session a console login opened");
        }
        return (signed_out(), not_for(role.unwrap_or(Role::User))).into_response();
    }
    (
        AppendHeaders([(header::SET_COOKIE, cleared(MFA))]),
        session_cookies(&state, &tokens),
        Redirect::to("/console"),
    )
        .into_response()
}

/// `POST /console/logout`: ends the session (its refresh token family) and clears the
/// cookies.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    if let Some(refresh) = read_cookie(&headers, REFRESH)
        && let Err(err) = auth::logout(&state, &refresh).await
    {
        let (status, detail) = err.for_page();
        return views::refusal(status, &detail);
    }
    (signed_out(), Redirect::to("/console/login")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_str(value).expect("value"));
        }
        headers
    }

    #[test]
    fn a_form_post_must_come_from_the_consoles_own_origin() {
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(same_origin(&headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[
            ("origin", "https://evil.example"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[("origin", "null"), ("host", "a")])));
        // Not a browser: nothing another site could make it send.
        assert!(same_origin(&headers(&[])));
    }

    #[test]
    fn a_cookie_is_read_by_its_exact_name() {
        let h = headers(&[(
            "cookie",
            "__Host-conveyor_console_refresh=r1; __Host-conveyor_console=a1",
        )]);
        assert_eq!(read_cookie(&h, ACCESS).as_deref(), Some("a1"));
        assert_eq!(read_cookie(&h, REFRESH).as_deref(), Some("r1"));
        assert_eq!(read_cookie(&h, MFA), None);
    }
}
