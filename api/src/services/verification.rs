//! Self-registration and email verification.
//!
//! `POST /auth/register` answers the same way whether or not the address is taken,
//! and does the same work either way (a password hash, one transaction, one email
//! queued): a new account gets a verification link; the owner of a taken address is
//! told that someone tried to register it. Both messages go through the `emails`
//! queue like any other mail, as requests of kind `account_email` owned by the
//! account, with the content sealed (the link is a credential). At most one account
//! email per address per `ACCOUNT_MAIL_INTERVAL_SECS`, so registration cannot be
//! used to flood someone's mailbox.
//!
//! A verification link carries a 256-bit random token of which only the SHA-256 is
//! stored; it works once, for `EMAIL_VERIFICATION_TTL_SECS`. Following it again after
//! it worked says "already confirmed". An account that never confirms is deleted after
//! `UNVERIFIED_ACCOUNT_TTL_SECS`, which frees the address for its real owner.

use shared::domain::Principal;
use std::time::Duration;

use shared::crypto::token;
use shared::db::users::{self, Verification};
use shared::domain::{EmailAddress, RequestKind, Role};
use shared::jobs::email::{EmailContent, EmailJob, Sealed, SealedContent};
use shared::jobs::{Enqueued, NewJob};
use shared::telemetry::metric;
use time::OffsetDateTime;
use uuid::Uuid;

use super::accounts::{EMAIL_PURPOSE, NewAccount, PreparedAccount};
use super::requests::{self, Submission};
use crate::error::ApiError;
use crate::state::AppState;

/// Where a verification link points (`GET` shows a confirm button, `POST` confirms).
pub const VERIFY_PATH: &str = "/api/v1/auth/verify-email";

/// An account email to queue.
enum AccountMail {
    Verification {
        token: String,
    },
    /// Someone tried to register an address that has an account.
    Notice {
        verified: bool,
        created_at: OffsetDateTime,
    },
}

/// Registers a `user` account, or tells the owner of a taken address by email. The
/// caller learns nothing about which happened.
pub async fn register(state: &AppState, account: NewAccount) -> Result<(), ApiError> {
    let prepared = PreparedAccount::prepare(&state.security, account).await?;
    let settings = &state.config.accounts;
    let mut tx = state.pool.begin().await?;
    let mail = match users::insert(&mut *tx, &prepared.new_user(Role::User, false)).await? {
        Some(user) => {
            let token = new_verification(&mut tx, state, user.id).await?;
            tracing::info!(user_id = %user.id, "account registered; verification link queued");
            Some((user.id, AccountMail::Verification { token }))
        }
        None => match users::find_by_email_index(&mut *tx, &prepared.email_index).await? {
            Some(existing)
                if users::take_account_mail_slot(
                    &mut *tx,
                    existing.id,
                    settings.account_mail_interval,
                )
                .await? =>
            {
                tracing::info!(user_id = %existing.id, "registration of a taken address; owner notified");
                Some((
                    existing.id,
                    AccountMail::Notice {
                        verified: existing.email_verified_at.is_some(),
                        created_at: existing.created_at,
                    },
                ))
            }
            _ => {
                metrics::counter!(metric::ACCOUNT_EMAILS_TOTAL, "kind" => "throttled").increment(1);
                tracing::info!("registration of a taken address; owner notified lately");
                None
            }
        },
    };
    let enqueued = match mail {
        Some((owner, mail)) => queue_mail(&mut tx, state, owner, &prepared.email, mail).await?,
        None => Enqueued::default(),
    };
    tx.commit().await?;
    enqueued.dispatch(&state.pool, &state.redis).await;
    Ok(())
}

/// Follows a verification link: `Ok(true)` if it confirmed the address now,
/// `Ok(false)` if it had done so before.
pub async fn verify(state: &AppState, token_text: &str) -> Result<bool, ApiError> {
    let invalid = || ApiError::Unprocessable {
        detail: "the verification link is not valid or has expired; sign in and ask for a new one"
            .into(),
        errors: vec![shared::problem::FieldError::new(
            "token",
            "is not valid, or has expired",
        )],
    };
    if !is_token_shaped(token_text) {
        return Err(invalid());
    }
    let mut conn = state.pool.acquire().await?;
    match users::verify_email(&mut conn, &token::hash_token(token_text)).await? {
        Verification::Verified(id) => {
            shared::session_epoch::bump(&state.redis, &[id]).await;
            tracing::info!(user_id = %id, "email address confirmed");
            Ok(true)
        }
        Verification::AlreadyVerified(_) => Ok(false),
        Verification::Invalid => Err(invalid()),
    }
}

/// Sends the signed-in user a new verification link.
pub async fn resend(state: &AppState, user: &Principal) -> Result<(), ApiError> {
    let interval = state.config.accounts.account_mail_interval;
    let mut tx = state.pool.begin().await?;
    let row = users::find_by_id(&mut *tx, user.id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such user".into()))?;
    if row.email_verified_at.is_some() {
        return Err(ApiError::Conflict(
            "the email address is already confirmed".into(),
        ));
    }
    if !users::take_account_mail_slot(&mut *tx, row.id, interval).await? {
        let wait = users::account_mail_wait(&mut *tx, row.id, interval).await?;
        return Err(ApiError::RateLimited(Duration::from_secs_f64(wait.ceil())));
    }
    let address = state
        .security
        .pii
        .decrypt(EMAIL_PURPOSE, &row.email_ciphertext)
        .map_err(|err| ApiError::Internal(anyhow::anyhow!("user {}: {err}", row.id)))?;
    let address = EmailAddress::parse(&address)
        .map_err(|err| ApiError::Internal(anyhow::anyhow!("user {}: {err}", row.id)))?;
    let token = new_verification(&mut tx, state, row.id).await?;
    let enqueued = queue_mail(
        &mut tx,
        state,
        row.id,
        &address,
        AccountMail::Verification { token },
    )
    .await?;
    tx.commit().await?;
    enqueued.dispatch(&state.pool, &state.redis).await;
    Ok(())
}

/// A 43-character base64url token, as [`token::new_token`] makes them.
pub fn is_token_shaped(text: &str) -> bool {
    text.len() == 43
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn new_verification(
    tx: &mut sqlx::PgConnection,
    state: &AppState,
    user_id: Uuid,
) -> Result<String, ApiError> {
    let token = token::new_token();
    let expires = OffsetDateTime::now_utc() + state.config.accounts.verification_ttl;
    users::insert_verification(&mut *tx, &token::hash_token(&token), user_id, expires).await?;
    Ok(token)
}

/// Queues `mail` to `address` as an `account_email` request of `owner`.
async fn queue_mail(
    tx: &mut sqlx::PgConnection,
    state: &AppState,
    owner: Uuid,
    address: &EmailAddress,
    mail: AccountMail,
) -> Result<Enqueued, ApiError> {
    let (kind, content) = compose(state, &mail);
    let job = EmailJob {
        to: vec![Sealed::seal(&state.security.pii, address.as_str())],
        cc: Vec::new(),
        bcc: Vec::new(),
        reply_to: None,
        content: None,
        sealed_content: Some(
            SealedContent::seal(&state.security.pii, &content)
                .map_err(|e| ApiError::Internal(e.into()))?,
        ),
        variables: None,
        owner: None,
        attachments: Vec::new(),
    };
    let submission = Submission {
        owner,
        kind: RequestKind::AccountEmail,
        name: Some(
            match kind {
                "verification" => "email verification",
                _ => "registration notice",
            }
            .to_owned(),
        ),
        correlation_id: None,
        content: None,
        send_at: None,
        jobs: vec![NewJob::of(&job)?],
        quota: None,
        callback_url: None,
        wait_for: Vec::new(),
    };
    let (_, enqueued) = requests::enqueue(tx, state, submission).await?;
    metrics::counter!(metric::ACCOUNT_EMAILS_TOTAL, "kind" => kind).increment(1);
    Ok(enqueued)
}

/// The metric kind and the message of an account email.
fn compose(state: &AppState, mail: &AccountMail) -> (&'static str, EmailContent) {
    let settings = &state.config.accounts;
    match mail {
        AccountMail::Verification { token } => {
            let link = format!("{}{VERIFY_PATH}?token={token}", state.auth.public_url);
            let hours = settings.verification_ttl.as_secs().div_ceil(3600);
            let days = settings.unverified_ttl.as_secs().div_ceil(86_400);
            (
                "verification",
                EmailContent {
                    subject: "Confirm your email address".into(),
                    text: format!(
                        "Someone, hopefully you, created a Conveyor account with this address.\n\n\
                         To confirm it, open this link within {hours} hours and press Confirm:\n\n\
                         {link}\n\n\
                         Until then the account cannot send email or store files.\n\n\
                         If you did not create it, ignore this message: the account stays \
                         unusable and is deleted after {days} days.\n"
                    ),
                    html: None,
                },
            )
        }
        AccountMail::Notice {
            verified,
            created_at,
        } => {
            let state_line = if *verified {
                "If it was you, sign in with your existing password.".to_owned()
            } else {
                let deleted = *created_at + settings.unverified_ttl;
                format!(
                    "The account with this address has not been confirmed yet. If you \
                     created it, follow the link in the first message, or sign in and ask \
                     for a new one. If you did not, it is deleted on {} (UTC), and the \
                     address is free again.",
                    deleted.date()
                )
            };
            (
                "notice",
                EmailContent {
                    subject: "Someone tried to register with your email address".into(),
                    text: format!(
                        "Someone tried to create a Conveyor account with this address, which \
                         already has one. Nothing was changed.\n\n{state_line}\n\n\
                         If it was not you, you can ignore this message.\n"
                    ),
                    html: None,
                },
            )
        }
    }
}
