//! The `users` table. PII columns hold ciphertexts; callers encrypt and decrypt.

use sqlx::{FromRow, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub role: String,
    pub email_ciphertext: Vec<u8>,
    pub phone_ciphertext: Option<Vec<u8>>,
    pub display_name: Option<String>,
    pub password_hash: String,
    pub totp_pending_ciphertext: Option<Vec<u8>>,
    pub totp_secret_ciphertext: Option<Vec<u8>>,
    pub totp_last_step: Option<i64>,
    /// `None` until the owner follows the verification link.
    pub email_verified_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// The columns of [`UserRow`], as a literal so queries stay static strings.
macro_rules! columns {
    () => {
        "id, role, email_ciphertext, phone_ciphertext, display_name, password_hash, \
         totp_pending_ciphertext, totp_secret_ciphertext, totp_last_step, email_verified_at, \
         created_at, updated_at"
    };
}

#[derive(Debug)]
pub struct NewUser<'a> {
    pub id: Uuid,
    pub role: &'a str,
    pub email_ciphertext: &'a [u8],
    pub email_index: &'a [u8],
    pub phone_ciphertext: Option<&'a [u8]>,
    pub display_name: Option<&'a str>,
    pub password_hash: &'a str,
    /// Made by an operator (verified at once) rather than self-registered (a
    /// verification link is on its way, so the account-mail clock starts now).
    pub verified: bool,
}

/// Inserts a user; `None` if the email is taken (nothing is changed then).
pub async fn insert(
    db: impl PgExecutor<'_>,
    user: &NewUser<'_>,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "INSERT INTO users (id, role, email_ciphertext, email_index, phone_ciphertext, display_name, \
         password_hash, email_verified_at, account_mail_sent_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $8 THEN now() END, CASE WHEN NOT $8 THEN now() END) \
         ON CONFLICT (email_index) DO NOTHING RETURNING ",
        columns!()
    ))
    .bind(user.id)
    .bind(user.role)
    .bind(user.email_ciphertext)
    .bind(user.email_index)
    .bind(user.phone_ciphertext)
    .bind(user.display_name)
    .bind(user.password_hash)
    .bind(user.verified)
    .fetch_optional(db)
    .await
}

/// Starts the account-mail clock of `id` if its last account email is at least
/// `interval` old: `true` means one may be sent now. Locks the row until commit.
pub async fn take_account_mail_slot(
    db: impl PgExecutor<'_>,
    id: Uuid,
    interval: std::time::Duration,
) -> Result<bool, sqlx::Error> {
    let taken: Option<Uuid> = sqlx::query_scalar(
        "UPDATE users SET account_mail_sent_at = now() WHERE id = $1 \
         AND (account_mail_sent_at IS NULL OR account_mail_sent_at <= now() - make_interval(secs => $2)) \
         RETURNING id",
    )
    .bind(id)
    .bind(interval.as_secs_f64())
    .fetch_optional(db)
    .await?;
    Ok(taken.is_some())
}

/// Seconds until `id` may be sent another account email (0: now).
pub async fn account_mail_wait(
    db: impl PgExecutor<'_>,
    id: Uuid,
    interval: std::time::Duration,
) -> Result<f64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(greatest(0, extract(epoch FROM \
         account_mail_sent_at + make_interval(secs => $2) - now()))::float8, 0) \
         FROM users WHERE id = $1",
    )
    .bind(id)
    .bind(interval.as_secs_f64())
    .fetch_optional(db)
    .await
    .map(Option::unwrap_or_default)
}

/// Stores a verification token (its hash) for `user_id`.
pub async fn insert_verification(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
    user_id: Uuid,
    expires_at: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO email_verifications (token_hash, user_id, expires_at) VALUES ($1, $2, $3)",
    )
    .bind(token_hash)
    .bind(user_id)
    .bind(expires_at)
    .execute(db)
    .await?;
    Ok(())
}

/// What following a verification link did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The token was good: the address is confirmed now.
    Verified(Uuid),
    /// The token was used before and its account is verified: nothing to do.
    AlreadyVerified(Uuid),
    /// Unknown, expired, or used for an account that is not verified.
    Invalid,
}

/// Spends a verification token and confirms its account's address, in one statement
/// (single use holds under concurrent clicks).
pub async fn verify_email(
    db: &mut sqlx::PgConnection,
    token_hash: &[u8],
) -> Result<Verification, sqlx::Error> {
    let spent: Option<Uuid> = sqlx::query_scalar(
        "WITH spent AS ( \
             UPDATE email_verifications SET used_at = now() \
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now() RETURNING user_id) \
         UPDATE users u SET email_verified_at = coalesce(u.email_verified_at, now()) \
         FROM spent WHERE u.id = spent.user_id RETURNING u.id",
    )
    .bind(token_hash)
    .fetch_optional(&mut *db)
    .await?;
    if let Some(id) = spent {
        return Ok(Verification::Verified(id));
    }
    let used: Option<Uuid> = sqlx::query_scalar(
        "SELECT u.id FROM email_verifications v JOIN users u ON u.id = v.user_id \
         WHERE v.token_hash = $1 AND v.used_at IS NOT NULL AND u.email_verified_at IS NOT NULL",
    )
    .bind(token_hash)
    .fetch_optional(&mut *db)
    .await?;
    Ok(used.map_or(Verification::Invalid, Verification::AlreadyVerified))
}

/// Deletes accounts that never confirmed their address and were created before
/// `before` (at most `limit`); their requests and sessions go with them.
pub async fn delete_unverified_before(
    db: impl PgExecutor<'_>,
    before: OffsetDateTime,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "DELETE FROM users WHERE id IN ( \
             SELECT id FROM users WHERE email_verified_at IS NULL AND created_at < $1 \
             ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Forgets message-quota hours that began before `before`.
pub async fn purge_quota_usage(
    db: impl PgExecutor<'_>,
    before: OffsetDateTime,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM message_quota_usage WHERE hour < $1")
        .bind(before)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

/// Forgets verification tokens that expired before `before`.
pub async fn purge_verifications(
    db: impl PgExecutor<'_>,
    before: OffsetDateTime,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM email_verifications WHERE expires_at < $1")
        .bind(before)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

pub async fn find_by_id(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(concat!("SELECT ", columns!(), " FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn find_by_email_index(
    db: impl PgExecutor<'_>,
    email_index: &[u8],
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM users WHERE email_index = $1"
    ))
    .bind(email_index)
    .fetch_optional(db)
    .await
}

/// Returns the updated row, or `None` if there is no such user.
pub async fn set_role(
    db: impl PgExecutor<'_>,
    id: Uuid,
    role: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE users SET role = $2 WHERE id = $1 RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(role)
    .fetch_optional(db)
    .await
}

pub async fn set_password(
    db: impl PgExecutor<'_>,
    id: Uuid,
    password_hash: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = $2, password_changed_at = now() WHERE id = $1")
        .bind(id)
        .bind(password_hash)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn set_totp_pending(
    db: impl PgExecutor<'_>,
    id: Uuid,
    pending: Option<&[u8]>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET totp_pending_ciphertext = $2 WHERE id = $1")
        .bind(id)
        .bind(pending)
        .execute(db)
        .await?;
    Ok(())
}

/// Makes the pending secret the active one, recording `step` as used.
pub async fn enable_totp(
    db: impl PgExecutor<'_>,
    id: Uuid,
    step: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE users SET totp_secret_ciphertext = totp_pending_ciphertext, totp_pending_ciphertext = NULL, \
         totp_last_step = $2 WHERE id = $1 AND totp_pending_ciphertext IS NOT NULL",
    )
    .bind(id)
    .bind(step)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn disable_totp(db: impl PgExecutor<'_>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users SET totp_secret_ciphertext = NULL, totp_pending_ciphertext = NULL, totp_last_step = NULL \
         WHERE id = $1",
    )
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// Records `step` as used if it is later than the last one: the one place TOTP replay
/// is refused, atomically, so two concurrent uses of one code cannot both pass.
pub async fn advance_totp_step(
    db: impl PgExecutor<'_>,
    id: Uuid,
    step: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE users SET totp_last_step = $2 WHERE id = $1 AND totp_secret_ciphertext IS NOT NULL \
         AND (totp_last_step IS NULL OR totp_last_step < $2)",
    )
    .bind(id)
    .bind(step)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn count_by_role(db: impl PgExecutor<'_>, role: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM users WHERE role = $1")
        .bind(role)
        .fetch_one(db)
        .await
}

/// Serialises role changes until the transaction ends, so two concurrent demotions
/// cannot both pass the last-admin check.
pub async fn lock_role_changes(tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('conveyor.users.role'))")
        .execute(tx)
        .await?;
    Ok(())
}
