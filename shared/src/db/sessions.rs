//! `sessions` (refresh-token families) and `refresh_tokens`.

use sqlx::{FromRow, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

pub async fn create(
    db: impl PgExecutor<'_>,
    id: Uuid,
    user_id: Uuid,
    mfa: bool,
    expires_at: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO sessions (id, user_id, mfa, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(user_id)
        .bind(mfa)
        .bind(expires_at)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn insert_refresh_token(
    db: impl PgExecutor<'_>,
    session_id: Uuid,
    token_hash: &[u8],
    expires_at: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO refresh_tokens (id, session_id, token_hash, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(Uuid::now_v7())
        .bind(session_id)
        .bind(token_hash)
        .bind(expires_at)
        .execute(db)
        .await?;
    Ok(())
}

/// What consuming a refresh token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consumed {
    /// The token was live and is now used; the session it belongs to.
    Fresh(Uuid),
    /// The token was already used: someone replays it. Its session.
    Reused(Uuid),
    /// Unknown or expired.
    Invalid,
}

/// Marks a refresh token used. The `UPDATE … WHERE used_at IS NULL` is the atomic
/// step that lets exactly one of two concurrent refreshes with one token succeed.
pub async fn consume_refresh_token(
    db: &mut sqlx::PgConnection,
    token_hash: &[u8],
) -> Result<Consumed, sqlx::Error> {
    let fresh: Option<Uuid> = sqlx::query_scalar(
        "UPDATE refresh_tokens SET used_at = now() \
         WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now() RETURNING session_id",
    )
    .bind(token_hash)
    .fetch_optional(&mut *db)
    .await?;
    if let Some(session) = fresh {
        return Ok(Consumed::Fresh(session));
    }
    let used: Option<Uuid> = sqlx::query_scalar(
        "SELECT session_id FROM refresh_tokens WHERE token_hash = $1 AND used_at IS NOT NULL",
    )
    .bind(token_hash)
    .fetch_optional(&mut *db)
    .await?;
    Ok(used.map_or(Consumed::Invalid, Consumed::Reused))
}

#[derive(Debug, Clone, FromRow)]
pub struct SessionRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub mfa: bool,
    pub expires_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
}

/// The session a refresh token (used or not) belongs to.
pub async fn session_of_refresh_token(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT session_id FROM refresh_tokens WHERE token_hash = $1")
        .bind(token_hash)
        .fetch_optional(db)
        .await
}

/// The session if it is neither revoked nor past its absolute lifetime.
pub async fn find_active(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<SessionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, user_id, mfa, expires_at, revoked_at FROM sessions \
         WHERE id = $1 AND revoked_at IS NULL AND expires_at > now()",
    )
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Ends a session; returns its user, if it was active.
pub async fn revoke(
    db: impl PgExecutor<'_>,
    id: Uuid,
    reason: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = $2 \
         WHERE id = $1 AND revoked_at IS NULL RETURNING user_id",
    )
    .bind(id)
    .bind(reason)
    .fetch_optional(db)
    .await
}

pub async fn revoke_all_for_user(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    reason: &str,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = $2 WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .bind(reason)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// What every authenticated request checks: the user's current role and whether
/// their email is confirmed, if the session named by the access token is still active.
pub async fn active_role(
    db: impl PgExecutor<'_>,
    session_id: Uuid,
    user_id: Uuid,
) -> Result<Option<(String, bool, OffsetDateTime)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT u.role, u.email_verified_at IS NOT NULL, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL AND s.expires_at > now()",
    )
    .bind(session_id)
    .bind(user_id)
    .fetch_optional(db)
    .await
}
