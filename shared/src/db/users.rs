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
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// The columns of [`UserRow`], as a literal so queries stay static strings.
macro_rules! columns {
    () => {
        "id, role, email_ciphertext, phone_ciphertext, display_name, password_hash, \
         totp_pending_ciphertext, totp_secret_ciphertext, totp_last_step, created_at, updated_at"
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
}

/// Inserts a user; a taken email surfaces as a unique violation on `users_email_index_key`.
pub async fn insert(db: impl PgExecutor<'_>, user: &NewUser<'_>) -> Result<UserRow, sqlx::Error> {
    sqlx::query_as(concat!(
        "INSERT INTO users (id, role, email_ciphertext, email_index, phone_ciphertext, display_name, password_hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
        columns!()
    ))
    .bind(user.id)
    .bind(user.role)
    .bind(user.email_ciphertext)
    .bind(user.email_index)
    .bind(user.phone_ciphertext)
    .bind(user.display_name)
    .bind(user.password_hash)
    .fetch_one(db)
    .await
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
