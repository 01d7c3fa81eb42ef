//! Sessions: login (with 2FA when enabled), refresh-token rotation with reuse
//! detection, logout, password change, and TOTP enrolment.

use shared::domain::Principal;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::AsyncCommands as _;
use serde::Serialize;
use shared::crypto::password::PasswordError;
use shared::crypto::token;
use shared::crypto::totp::Totp;
use shared::db::sessions::{self, Consumed};
use shared::db::{recovery_codes, users};
use shared::domain::EmailAddress;
use shared::domain::password::NewPassword;
use shared::problem::FieldError;
use shared::session_epoch;
use time::OffsetDateTime;
use uuid::Uuid;

use super::accounts::{self, EMAIL_INDEX, EMAIL_PURPOSE, TOTP_PURPOSE};
use crate::error::ApiError;
use crate::services::session_cache::SessionEpoch;
use crate::state::AppState;

/// Recovery codes handed out when 2FA is enabled.
pub const RECOVERY_CODES: usize = 10;
/// Wrong codes an MFA token survives before it is spent.
const MFA_ATTEMPTS: i64 = 5;

/// A signed-in session: the access token for the body, the refresh token for the cookie.
#[derive(Debug)]
pub struct Tokens {
    pub access_token: String,
    pub expires_in: u64,
    pub refresh_token: String,
}

#[derive(Debug)]
pub enum LoginOutcome {
    SignedIn(Tokens),
    MfaRequired { mfa_token: String },
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TotpSetup {
    /// The shared secret, base32 (RFC 4648), for manual entry.
    pub secret: String,
    /// `otpauth://` URL for a QR code.
    pub otpauth_url: String,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn at(offset: Duration) -> OffsetDateTime {
    OffsetDateTime::now_utc() + offset
}

/// Starts a session and issues its first tokens.
async fn start_session(
    state: &AppState,
    user_id: Uuid,
    role: shared::domain::Role,
    mfa: bool,
) -> Result<Tokens, ApiError> {
    let config = &state.auth;
    let session_id = Uuid::now_v7();
    let refresh_token = token::new_token();
    let session_expires = at(config.session_max_lifetime);
    let token_expires = at(config.refresh_token_ttl).min(session_expires);
    let mut tx = state.pool.begin().await?;
    sessions::create(&mut *tx, session_id, user_id, mfa, session_expires).await?;
    sessions::insert_refresh_token(
        &mut *tx,
        session_id,
        &token::hash_token(&refresh_token),
        token_expires,
    )
    .await?;
    tx.commit().await?;
    let access_token = state
        .security
        .tokens
        .issue_access(user_id, role, session_id, mfa)?;
    Ok(Tokens {
        access_token,
        expires_in: state.security.tokens.access_ttl().as_secs(),
        refresh_token,
    })
}

/// Password login. Wrong email and wrong password answer alike, in similar time.
/// The attempt is counted before the password is checked (see [`super::lockout`]), so
/// a burst of guesses cannot outrun the limit.
pub async fn login(
    state: &AppState,
    ip: IpAddr,
    email: &str,
    password_text: String,
) -> Result<LoginOutcome, ApiError> {
    let normalized = EmailAddress::parse(email)
        .map(EmailAddress::into_string)
        .unwrap_or_default();
    let account_key = state.security.blind_index.index(EMAIL_INDEX, &normalized);
    let reservation = state
        .lockout
        .reserve(&account_key, ip)
        .await
        .map_err(ApiError::RateLimited)?;
    let user = match check_password(state, &normalized, &account_key, password_text).await {
        Ok(Some(user)) => {
            state.lockout.succeeded(reservation).await;
            user
        }
        Ok(None) => {
            state.lockout.failed(reservation);
            tracing::info!(%ip, "login refused");
            return Err(ApiError::InvalidCredentials);
        }
        Err(err) => {
            state.lockout.release(reservation).await;
            return Err(err);
        }
    };
    if user.totp_secret_ciphertext.is_some() {
        let mfa_token = state.security.tokens.issue_mfa(user.id)?;
        return Ok(LoginOutcome::MfaRequired { mfa_token });
    }
    let role = accounts::role_of(&user)?;
    tracing::info!(user_id = %user.id, "signed in");
    Ok(LoginOutcome::SignedIn(
        start_session(state, user.id, role, false).await?,
    ))
}

/// The account whose email is `normalized`, if `password_text` is its password. An
/// unknown (or unparsable) email spends the same hashing work and gives `None`.
async fn check_password(
    state: &AppState,
    normalized: &str,
    account_key: &[u8],
    password_text: String,
) -> Result<Option<users::UserRow>, ApiError> {
    let user = if normalized.is_empty() {
        None
    } else {
        users::find_by_email_index(&state.pool, account_key).await?
    };
    let matches = state
        .security
        .passwords
        .verify(
            password_text,
            user.as_ref().map(|u| u.password_hash.clone()),
        )
        .await
        .map_err(password_error)?;
    Ok(user.filter(|_| matches))
}

/// A saturated password hasher answers 429 `rate_limited` with `Retry-After`, not 503
/// `dependency_unavailable`: nothing this service depends on is down, the load comes
/// from the volume of requests (often a credential-stuffing burst), and retrying after
/// the hint is exactly what the client should do — the answer login throttling already
/// gives, which clients handle. A 503 would also page as an outage of a dependency.
pub(crate) fn password_error(err: PasswordError) -> ApiError {
    match err {
        PasswordError::Busy { retry_after } => {
            tracing::warn!("password hashing saturated: request refused");
            ApiError::RateLimited(retry_after)
        }
        PasswordError::Failed(err) => ApiError::Internal(err.into()),
    }
}

/// Second step of a 2FA login: a TOTP code or a recovery code.
pub async fn login_mfa(state: &AppState, mfa_token: &str, code: &str) -> Result<Tokens, ApiError> {
    let claims = state.security.tokens.verify_mfa(mfa_token).map_err(|_| {
        ApiError::Unauthenticated("the MFA token is not valid or has expired".into())
    })?;
    let mut conn = state.redis.connection();
    let used_key = state.redis.key(&format!("mfa-token:{}", claims.jti));
    let attempts: i64 = conn
        .get::<_, Option<i64>>(&used_key)
        .await
        .map_err(redis_down)?
        .unwrap_or(0);
    if attempts >= MFA_ATTEMPTS {
        return Err(ApiError::Unauthenticated(
            "the MFA token has been used; sign in again".into(),
        ));
    }
    let user = users::find_by_id(&state.pool, claims.sub)
        .await?
        .ok_or_else(|| ApiError::Unauthenticated("the MFA token is not valid".into()))?;
    let passed = state
        .factor_limit
        .guard(user.id, || verify_second_factor(state, &user, code))
        .await?;
    let ttl = i64::try_from(super::tokens::MFA_TOKEN_TTL.as_secs()).unwrap_or(300);
    if !passed {
        let _: () = redis::pipe()
            .incr(&used_key, 1)
            .ignore()
            .expire(&used_key, ttl)
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(redis_down)?;
        return Err(ApiError::InvalidCredentials);
    }
    // Spend the token: SET … GET tells whether a concurrent completion spent it first.
    let previous: Option<i64> = redis::cmd("SET")
        .arg(&used_key)
        .arg(MFA_ATTEMPTS)
        .arg("GET")
        .arg("EX")
        .arg(ttl)
        .query_async(&mut conn)
        .await
        .map_err(redis_down)?;
    if previous.unwrap_or(0) >= MFA_ATTEMPTS {
        return Err(ApiError::Unauthenticated(
            "the MFA token has been used; sign in again".into(),
        ));
    }
    let role = accounts::role_of(&user)?;
    tracing::info!(user_id = %user.id, "signed in with 2FA");
    start_session(state, user.id, role, true).await
}

fn redis_down(err: redis::RedisError) -> ApiError {
    tracing::warn!(error = %err, "Redis unavailable");
    ApiError::DependencyUnavailable("redis")
}

/// A current TOTP code (not replayed) or an unused recovery code.
async fn verify_second_factor(
    state: &AppState,
    user: &users::UserRow,
    code: &str,
) -> Result<bool, ApiError> {
    let Some(secret) = &user.totp_secret_ciphertext else {
        return Ok(false);
    };
    let code = code.trim();
    if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
        let totp = decrypt_totp(state, user.id, secret)?;
        return match totp.verify(code, unix_now()) {
            Some(step) => Ok(users::advance_totp_step(&state.pool, user.id, step_i64(step)).await?),
            None => Ok(false),
        };
    }
    let normalized = token::normalize_recovery_code(code);
    if normalized.len() != 10 {
        return Ok(false);
    }
    Ok(recovery_codes::consume(&state.pool, user.id, &token::hash_token(&normalized)).await?)
}

fn step_i64(step: u64) -> i64 {
    i64::try_from(step).unwrap_or(i64::MAX)
}

fn decrypt_totp(state: &AppState, user: Uuid, secret: &[u8]) -> Result<Totp, ApiError> {
    let encoded = state
        .security
        .pii
        .decrypt(TOTP_PURPOSE, secret)
        .map_err(|err| ApiError::Internal(anyhow::anyhow!("user {user}: totp secret: {err}")))?;
    Totp::from_base32(&encoded).ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!("user {user}: totp secret is not base32"))
    })
}

/// Rotates a refresh token. Presenting a token that was already rotated revokes its
/// whole family (someone holds a stolen copy); exactly one of two concurrent
/// refreshes with one token succeeds.
pub async fn refresh(state: &AppState, refresh_token: &str) -> Result<Tokens, ApiError> {
    let hash = token::hash_token(refresh_token);
    let mut tx = state.pool.begin().await?;
    let session_id = match sessions::consume_refresh_token(&mut tx, &hash).await? {
        Consumed::Fresh(session) => session,
        Consumed::Reused(session) => {
            let user = sessions::revoke(&mut *tx, session, "refresh token reused").await?;
            tx.commit().await?;
            session_epoch::bump(&state.redis, user.as_slice()).await;
            tracing::warn!(session_id = %session, "refresh token reuse: session revoked");
            return Err(ApiError::Unauthenticated(
                "the refresh token was already used; the session is revoked".into(),
            ));
        }
        Consumed::Invalid => {
            return Err(ApiError::Unauthenticated(
                "the refresh token is not valid".into(),
            ));
        }
    };
    let session = sessions::find_active(&mut *tx, session_id)
        .await?
        .ok_or_else(|| ApiError::Unauthenticated("the session has ended; sign in again".into()))?;
    let user = users::find_by_id(&mut *tx, session.user_id)
        .await?
        .ok_or_else(|| ApiError::Unauthenticated("the account no longer exists".into()))?;
    let role = accounts::role_of(&user)?;
    let next = token::new_token();
    let expires = at(state.auth.refresh_token_ttl).min(session.expires_at);
    sessions::insert_refresh_token(&mut *tx, session_id, &token::hash_token(&next), expires)
        .await?;
    tx.commit().await?;
    let access_token =
        state
            .security
            .tokens
            .issue_access(user.id, role, session_id, session.mfa)?;
    Ok(Tokens {
        access_token,
        expires_in: state.security.tokens.access_ttl().as_secs(),
        refresh_token: next,
    })
}

/// Ends the session a refresh token belongs to (idempotent).
pub async fn logout(state: &AppState, refresh_token: &str) -> Result<(), ApiError> {
    let session =
        sessions::session_of_refresh_token(&state.pool, &token::hash_token(refresh_token)).await?;
    if let Some(session) = session {
        let user = sessions::revoke(&state.pool, session, "logout").await?;
        session_epoch::bump(&state.redis, user.as_slice()).await;
    }
    Ok(())
}

/// Changes the password after checking the current one; every session ends.
pub async fn change_password(
    state: &AppState,
    user: &Principal,
    current: String,
    new: &str,
) -> Result<(), ApiError> {
    let row = current_user(state, user).await?;
    let matches = state
        .factor_limit
        .guard(user.id, || async {
            state
                .security
                .passwords
                .verify(current, Some(row.password_hash.clone()))
                .await
                .map_err(password_error)
        })
        .await?;
    if !matches {
        return Err(ApiError::InvalidCredentials);
    }
    let email = state
        .security
        .pii
        .decrypt(EMAIL_PURPOSE, &row.email_ciphertext)
        .map_err(|err| ApiError::Internal(anyhow::anyhow!("user {}: {err}", row.id)))?;
    let context: Vec<&str> = row.display_name.as_deref().into_iter().collect();
    let new = NewPassword::parse(new, &email, &context).map_err(|err| ApiError::Unprocessable {
        detail: "the new password is not acceptable".into(),
        errors: vec![FieldError::new("new_password", err.to_string())],
    })?;
    let hash = state
        .security
        .passwords
        .hash(new.into_inner())
        .await
        .map_err(password_error)?;
    let mut tx = state.pool.begin().await?;
    users::set_password(&mut *tx, user.id, &hash).await?;
    let ended = sessions::revoke_all_for_user(&mut *tx, user.id, "password changed").await?;
    tx.commit().await?;
    session_epoch::bump(&state.redis, &[user.id]).await;
    tracing::info!(user_id = %user.id, sessions_ended = ended, "password changed");
    Ok(())
}

/// Makes a new TOTP secret, kept pending until [`enable_totp`] proves the app has it.
pub async fn setup_totp(state: &AppState, user: &Principal) -> Result<TotpSetup, ApiError> {
    let row = current_user(state, user).await?;
    if row.totp_secret_ciphertext.is_some() {
        return Err(ApiError::Conflict(
            "two-factor authentication is already enabled".into(),
        ));
    }
    let view = accounts::owner_view(&state.security, &row)?;
    let totp = Totp::generate();
    let sealed = state.security.pii.encrypt(TOTP_PURPOSE, &totp.base32());
    users::set_totp_pending(&state.pool, user.id, Some(&sealed)).await?;
    Ok(TotpSetup {
        secret: totp.base32(),
        otpauth_url: totp.otpauth_url("Conveyor", &view.email),
    })
}

/// Enables 2FA with a code from the pending secret; returns the recovery codes (shown once).
pub async fn enable_totp(
    state: &AppState,
    user: &Principal,
    code: &str,
) -> Result<Vec<String>, ApiError> {
    let row = current_user(state, user).await?;
    if row.totp_secret_ciphertext.is_some() {
        return Err(ApiError::Conflict(
            "two-factor authentication is already enabled".into(),
        ));
    }
    let pending = row
        .totp_pending_ciphertext
        .as_deref()
        .ok_or_else(|| ApiError::Conflict("call /auth/2fa/setup first".into()))?;
    let totp = decrypt_totp(state, user.id, pending)?;
    let step = totp.verify(code, unix_now());
    if !state
        .factor_limit
        .guard(user.id, || async { Ok(step.is_some()) })
        .await?
    {
        return Err(invalid_code());
    }
    let step = step.ok_or_else(invalid_code)?;
    let codes: Vec<String> = (0..RECOVERY_CODES)
        .map(|_| token::new_recovery_code())
        .collect();
    let hashes: Vec<Vec<u8>> = codes
        .iter()
        .map(|c| token::hash_token(&token::normalize_recovery_code(c)))
        .collect();
    let mut tx = state.pool.begin().await?;
    if !users::enable_totp(&mut *tx, user.id, step_i64(step)).await? {
        return Err(ApiError::Conflict("call /auth/2fa/setup first".into()));
    }
    recovery_codes::replace(&mut tx, user.id, &hashes).await?;
    tx.commit().await?;
    tracing::info!(user_id = %user.id, "2FA enabled");
    Ok(codes)
}

/// Disables 2FA with a current code (or a recovery code).
pub async fn disable_totp(state: &AppState, user: &Principal, code: &str) -> Result<(), ApiError> {
    let row = current_user(state, user).await?;
    if row.totp_secret_ciphertext.is_none() {
        return Err(ApiError::Conflict(
            "two-factor authentication is not enabled".into(),
        ));
    }
    if !state
        .factor_limit
        .guard(row.id, || verify_second_factor(state, &row, code))
        .await?
    {
        return Err(invalid_code());
    }
    let mut tx = state.pool.begin().await?;
    users::disable_totp(&mut *tx, user.id).await?;
    recovery_codes::delete_all(&mut *tx, user.id).await?;
    tx.commit().await?;
    tracing::info!(user_id = %user.id, "2FA disabled");
    Ok(())
}

/// The caller's row; gone (deleted meanwhile) is unauthenticated.
pub async fn current_user(state: &AppState, user: &Principal) -> Result<users::UserRow, ApiError> {
    users::find_by_id(&state.pool, user.id)
        .await?
        .ok_or_else(|| ApiError::Unauthenticated("the account no longer exists".into()))
}

fn invalid_code() -> ApiError {
    ApiError::Unprocessable {
        detail: "the code is not valid (wrong, expired or already used)".into(),
        errors: vec![FieldError::new("code", "not valid")],
    }
}

/// The account's role now, if session `session_id` of `user_id` is still active:
/// what every authenticated request checks, so logout, a password change, refresh
/// reuse or a role change end the old access tokens at once.
pub async fn current_role(
    state: &AppState,
    session_id: Uuid,
    user_id: Uuid,
) -> Result<Option<(shared::domain::Role, bool)>, ApiError> {
    Ok(active_session(state, session_id, user_id)
        .await?
        .map(|(role, verified, _)| (role, verified)))
}

/// [`current_role`] through the process's session cache, valid under `epoch` (the
/// user's session epoch, read before this call).
pub async fn current_role_cached(
    state: &AppState,
    session_id: Uuid,
    user_id: Uuid,
    epoch: SessionEpoch,
) -> Result<Option<(shared::domain::Role, bool)>, ApiError> {
    if let Some(hit) = state.sessions.get(session_id, user_id, epoch) {
        return Ok(Some(hit));
    }
    let Some((role, verified, expires)) = active_session(state, session_id, user_id).await? else {
        return Ok(None);
    };
    state
        .sessions
        .put(session_id, user_id, epoch, (role, verified), expires);
    Ok(Some((role, verified)))
}

async fn active_session(
    state: &AppState,
    session_id: Uuid,
    user_id: Uuid,
) -> Result<Option<(shared::domain::Role, bool, OffsetDateTime)>, ApiError> {
    let active = sessions::active_role(&state.pool, session_id, user_id).await?;
    // A role the code does not know (a newer schema) ends the session.
    Ok(active.and_then(|(role, verified, expires)| Some((role.parse().ok()?, verified, expires))))
}
