//! Completion webhooks, the api's side: each user's signing secret (made or rotated,
//! shown once; its state without it) and the `callback_url` of a submission (checked
//! here; delivered by the workers once the request finishes).

use shared::domain::Principal;
use std::time::Duration;

use serde::Serialize;
use shared::db::webhooks as repo;
use shared::problem::FieldError;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// How long a rotated-out secret keeps signing (next to the new one), so receivers
/// can switch without rejecting events.
pub const ROTATION_GRACE: Duration = Duration::from_secs(24 * 3600);

/// A new secret: the only time it is shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewSecret {
    /// `whsec_` + base64 of 32 random bytes; sign with the decoded bytes. Shown once.
    #[schema(examples("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwaaaaaaaaaaaa"))]
    pub secret: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// Until when the secret this one replaced still signs (absent for a first secret).
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub previous_valid_until: Option<OffsetDateTime>,
}

/// Whether the caller has a secret; never the secret itself.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SecretState {
    pub configured: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub created_at: Option<OffsetDateTime>,
    /// While a rotated-out secret still signs (next to the current one): until when.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub previous_valid_until: Option<OffsetDateTime>,
}

/// Makes the caller's first secret, or rotates it: the previous one keeps signing
/// for [`ROTATION_GRACE`].
pub async fn rotate(state: &AppState, user: &Principal) -> Result<NewSecret, ApiError> {
    let secret = shared::webhooks::generate_secret();
    let shown = shared::webhooks::encode_secret(&secret);
    let sealed = state
        .security
        .pii
        .encrypt(shared::webhooks::SECRET_PURPOSE, &shown);
    let stored = repo::rotate_secret(&state.pool, user.id, &sealed, ROTATION_GRACE).await?;
    tracing::info!(
        user = %user.id,
        rotated = stored.previous_until.is_some(),
        "webhook signing secret made"
    );
    Ok(NewSecret {
        secret: shown,
        created_at: stored.created_at,
        previous_valid_until: stored.previous_until,
    })
}

pub async fn secret_state(state: &AppState, user: &Principal) -> Result<SecretState, ApiError> {
    let stored = repo::secret_status(&state.pool, user.id).await?;
    Ok(SecretState {
        configured: stored.is_some(),
        created_at: stored.as_ref().map(|s| s.created_at),
        previous_valid_until: stored.and_then(|s| s.previous_until),
    })
}

/// A submission's `callback_url`, checked as [`shared::webhooks::callback_url`]
/// says; a bad one adds a field error to `errors` (named `field`).
pub fn parse_callback(
    state: &AppState,
    field: &str,
    raw: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let raw = raw?;
    match shared::webhooks::callback_url(raw, &state.config.webhooks.allowed_networks) {
        Ok(url) => Some(url.to_string()),
        Err(err) => {
            errors.push(FieldError::new(field, err.to_string()));
            None
        }
    }
}

/// A callback needs its owner's signing secret: 422 `webhook_secret_missing` when
/// there is none.
pub async fn require_secret(state: &AppState, owner: Uuid) -> Result<(), ApiError> {
    match repo::secret_status(&state.pool, owner).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::WebhookSecretMissing),
    }
}

/// [`parse_callback`] and [`require_secret`] for a submission whose only field
/// error could be its callback.
pub async fn checked_callback(
    state: &AppState,
    owner: Uuid,
    field: &str,
    raw: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let mut errors = Vec::new();
    let url = parse_callback(state, field, raw, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Unprocessable {
            detail: "the callback URL is not valid".into(),
            errors,
        });
    }
    if url.is_some() {
        require_secret(state, owner).await?;
    }
    Ok(url)
}
