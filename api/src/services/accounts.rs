//! Accounts: creating users (registration and the first admin), reading them back
//! with PII decrypted for their owner, and role changes.

use serde::Serialize;
use shared::db::sessions;
use shared::db::users::{self, NewUser, UserRow};
use shared::domain::password::NewPassword;
use shared::domain::{EmailAddress, PhoneNumber, Role};
use shared::problem::FieldError;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::Security;

/// Associated data that binds each ciphertext to its column.
pub const EMAIL_PURPOSE: &str = "users.email";
pub const PHONE_PURPOSE: &str = "users.phone";
pub const TOTP_PURPOSE: &str = "users.totp";
/// Blind index domain of emails.
pub const EMAIL_INDEX: &str = "email";

/// A registration that passed validation.
#[derive(Debug)]
pub struct NewAccount {
    pub email: EmailAddress,
    pub password: NewPassword,
    pub display_name: Option<String>,
    pub phone: Option<PhoneNumber>,
}

impl NewAccount {
    /// Validates every field, reporting all problems at once.
    pub fn parse(
        email: &str,
        password: &str,
        display_name: Option<&str>,
        phone: Option<&str>,
    ) -> Result<Self, ApiError> {
        let mut errors = Vec::new();
        let email = EmailAddress::parse(email)
            .map_err(|e| errors.push(FieldError::new("email", e.to_string())));
        let display_name = match display_name.map(str::trim) {
            None | Some("") => Ok(None),
            Some(name) if name.chars().count() > 100 => {
                errors.push(FieldError::new(
                    "display_name",
                    "must be at most 100 characters",
                ));
                Err(())
            }
            Some(name) if name.chars().any(char::is_control) => {
                errors.push(FieldError::new(
                    "display_name",
                    "must not contain control characters",
                ));
                Err(())
            }
            Some(name) => Ok(Some(name.to_owned())),
        };
        let phone = match phone {
            None => Ok(None),
            Some(raw) => PhoneNumber::parse(raw)
                .map(Some)
                .map_err(|e| errors.push(FieldError::new("phone", e.to_string()))),
        };
        let email_text = email
            .as_ref()
            .map(EmailAddress::as_str)
            .unwrap_or_default()
            .to_owned();
        let context: Vec<&str> = display_name
            .as_ref()
            .ok()
            .and_then(|n| n.as_deref())
            .into_iter()
            .collect();
        let password = NewPassword::parse(password, &email_text, &context)
            .map_err(|e| errors.push(FieldError::new("password", e.to_string())));
        match (email, password, display_name, phone) {
            (Ok(email), Ok(password), Ok(display_name), Ok(phone)) if errors.is_empty() => {
                Ok(NewAccount {
                    email,
                    password,
                    display_name,
                    phone,
                })
            }
            _ => Err(ApiError::Unprocessable {
                detail: "some fields are not valid".into(),
                errors,
            }),
        }
    }
}

/// The owner's view of an account, PII decrypted.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub phone: Option<String>,
    pub display_name: Option<String>,
    pub role: Role,
    pub mfa_enabled: bool,
    /// The address is confirmed; until it is, emails, campaigns and uploads are
    /// refused with 403 `email_unverified`.
    pub email_verified: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

/// What an administrator sees of another account (no PII).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdminUserView {
    pub id: Uuid,
    pub role: Role,
    pub display_name: Option<String>,
    pub mfa_enabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

pub fn role_of(row: &UserRow) -> Result<Role, ApiError> {
    row.role
        .parse()
        .map_err(|err: String| ApiError::Internal(anyhow::anyhow!("user {}: {err}", row.id)))
}

pub fn owner_view(security: &Security, row: &UserRow) -> Result<UserView, ApiError> {
    let decrypt = |purpose, data: &[u8]| {
        security
            .pii
            .decrypt(purpose, data)
            .map_err(|err| ApiError::Internal(anyhow::anyhow!("user {}: {err}", row.id)))
    };
    Ok(UserView {
        id: row.id,
        email: decrypt(EMAIL_PURPOSE, &row.email_ciphertext)?,
        phone: row
            .phone_ciphertext
            .as_deref()
            .map(|p| decrypt(PHONE_PURPOSE, p))
            .transpose()?,
        display_name: row.display_name.clone(),
        role: role_of(row)?,
        mfa_enabled: row.totp_secret_ciphertext.is_some(),
        email_verified: row.email_verified_at.is_some(),
        created_at: row.created_at,
    })
}

pub fn admin_view(row: &UserRow) -> Result<AdminUserView, ApiError> {
    Ok(AdminUserView {
        id: row.id,
        role: role_of(row)?,
        display_name: row.display_name.clone(),
        mfa_enabled: row.totp_secret_ciphertext.is_some(),
        created_at: row.created_at,
    })
}

/// A validated account with its password hashed and its PII sealed: ready to insert.
pub struct PreparedAccount {
    pub email: EmailAddress,
    email_ciphertext: Vec<u8>,
    pub email_index: Vec<u8>,
    phone_ciphertext: Option<Vec<u8>>,
    display_name: Option<String>,
    password_hash: String,
}

impl PreparedAccount {
    /// Hashes the password (the slow part, bounded by `PASSWORD_HASH_CONCURRENCY`)
    /// and seals the PII; no database work, so no connection is held meanwhile.
    pub async fn prepare(security: &Security, account: NewAccount) -> Result<Self, ApiError> {
        let password_hash = security
            .passwords
            .hash(account.password.into_inner())
            .await
            .map_err(super::auth::password_error)?;
        Ok(PreparedAccount {
            email_ciphertext: security.pii.encrypt(EMAIL_PURPOSE, account.email.as_str()),
            email_index: security
                .blind_index
                .index(EMAIL_INDEX, account.email.as_str()),
            phone_ciphertext: account
                .phone
                .as_ref()
                .map(|p| security.pii.encrypt(PHONE_PURPOSE, p.as_str())),
            display_name: account.display_name,
            email: account.email,
            password_hash,
        })
    }

    pub fn new_user(&self, role: Role, verified: bool) -> NewUser<'_> {
        NewUser {
            id: Uuid::now_v7(),
            role: role.as_str(),
            email_ciphertext: &self.email_ciphertext,
            email_index: &self.email_index,
            phone_ciphertext: self.phone_ciphertext.as_deref(),
            display_name: self.display_name.as_deref(),
            password_hash: &self.password_hash,
            verified,
        }
    }
}

/// Creates an account with `role`, its address taken as verified: an operator's
/// account (`api create-user`, `create-admin`). A taken email is 409 `conflict`.
/// Self-registration goes through [`super::verification::register`] instead.
pub async fn create(
    pool: &PgPool,
    security: &Security,
    account: NewAccount,
    role: Role,
) -> Result<UserRow, ApiError> {
    let prepared = PreparedAccount::prepare(security, account).await?;
    users::insert(pool, &prepared.new_user(role, true))
        .await?
        .ok_or_else(|| ApiError::Conflict("an account with this email already exists".into()))
}

/// Changes a role. Refuses to remove the last admin. The user's current access tokens
/// stop working at once (they carry the old role); a refresh gets the new one.
pub async fn change_role(
    pool: &PgPool,
    redis: &shared::redis::Redis,
    id: Uuid,
    role: Role,
) -> Result<UserRow, ApiError> {
    let mut tx = pool.begin().await?;
    // Serialise role changes so two concurrent demotions cannot both pass the check.
    users::lock_role_changes(&mut tx).await?;
    let current = users::find_by_id(&mut *tx, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such user".into()))?;
    if current.role == Role::Admin.as_str()
        && role != Role::Admin
        && users::count_by_role(&mut *tx, Role::Admin.as_str()).await? <= 1
    {
        return Err(ApiError::Conflict(
            "the last admin cannot be demoted".into(),
        ));
    }
    let updated = users::set_role(&mut *tx, id, role.as_str())
        .await?
        .ok_or_else(|| ApiError::NotFound("no such user".into()))?;
    if current.role != role.as_str() {
        // Every session ends: tokens naming the old role never work again (not even
        // after a change back), and the user signs in anew with the new role.
        sessions::revoke_all_for_user(&mut *tx, id, "role_changed").await?;
    }
    tx.commit().await?;
    shared::session_epoch::bump(redis, &[id]).await;
    Ok(updated)
}
