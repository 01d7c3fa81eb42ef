//! The api's one error type. Every handler returns `Result<_, ApiError>`; its
//! `IntoResponse` writes the RFC 9457 problem body with a stable `code`, and logs a
//! 5xx once, here, with the request id.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use shared::ErrorCode;
use shared::breaker;
use shared::problem::{FieldError, Problem};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or a field is invalid (400 `validation_failed`).
    #[error("validation failed: {detail}")]
    Validation {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// A well-formed request whose content is refused (422 `validation_failed`).
    #[error("unprocessable: {detail}")]
    Unprocessable {
        detail: String,
        errors: Vec<FieldError>,
    },
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    #[error("the access token has expired")]
    TokenExpired,
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("this action needs a login that passed two-factor authentication")]
    MfaRequired,
    #[error("rate limited for {0:?}")]
    RateLimited(std::time::Duration),
    /// An owner already has `limit` uploads in flight (429 `rate_limited`).
    #[error("{limit} uploads already in flight")]
    TooManyInFlight {
        limit: u32,
        retry_after: std::time::Duration,
    },
    #[error("message quota used up: {detail}")]
    MessageQuotaExceeded {
        detail: String,
        retry_after: std::time::Duration,
    },
    #[error("the email address is not confirmed")]
    EmailUnverified,
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("the Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    /// A submission names a `callback_url` but its owner has no signing secret.
    #[error("a callback_url needs a webhook signing secret")]
    WebhookSecretMissing,
    #[error("payload too large: {0}")]
    PayloadTooLarge(String),
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    #[error("the upload has not been scanned yet")]
    ScanPending,
    #[error("the upload is quarantined")]
    Quarantined,
    #[error("{0} is unavailable")]
    DependencyUnavailable(&'static str),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

impl From<shared::domain::Refusal> for ApiError {
    fn from(refusal: shared::domain::Refusal) -> Self {
        match refusal {
            shared::domain::Refusal::Role(_) => ApiError::Forbidden(refusal.to_string()),
            shared::domain::Refusal::SecondFactor => ApiError::MfaRequired,
            shared::domain::Refusal::UnconfirmedEmail => ApiError::EmailUnverified,
        }
    }
}

impl From<shared::jobs::EnqueueError> for ApiError {
    fn from(err: shared::jobs::EnqueueError) -> Self {
        match err {
            shared::jobs::EnqueueError::Database(err) => ApiError::Database(err),
            shared::jobs::EnqueueError::Encode(err) => ApiError::Internal(err.into()),
        }
    }
}

impl ApiError {
    pub fn validation(detail: impl Into<String>) -> Self {
        ApiError::Validation {
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Validation { .. } => ErrorCode::ValidationFailed,
            ApiError::Unprocessable { .. } => ErrorCode::ValidationFailed,
            ApiError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            ApiError::TokenExpired => ErrorCode::TokenExpired,
            ApiError::InvalidCredentials => ErrorCode::InvalidCredentials,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::MfaRequired => ErrorCode::MfaRequired,
            ApiError::RateLimited(_) | ApiError::TooManyInFlight { .. } => ErrorCode::RateLimited,
            ApiError::MessageQuotaExceeded { .. } => ErrorCode::MessageQuotaExceeded,
            ApiError::EmailUnverified => ErrorCode::EmailUnverified,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::IdempotencyKeyReused => ErrorCode::IdempotencyKeyReused,
            ApiError::WebhookSecretMissing => ErrorCode::WebhookSecretMissing,
            ApiError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            ApiError::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            ApiError::QuotaExceeded(_) => ErrorCode::QuotaExceeded,
            ApiError::ScanPending => ErrorCode::ScanPending,
            ApiError::Quarantined => ErrorCode::Quarantined,
            ApiError::DependencyUnavailable(_) => ErrorCode::DependencyUnavailable,
            ApiError::Database(err) if is_unavailable(err) => ErrorCode::DependencyUnavailable,
            ApiError::Database(_) | ApiError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The status and the sentence a page shows for this error (the console's): what
    /// its problem+json answer would say; a 5xx is logged as `into_response` logs it.
    pub fn for_page(self) -> (axum::http::StatusCode, String) {
        let code = self.code();
        if code.status() >= 500 {
            tracing::error!(error = %self, code = %code, "request failed");
        }
        let problem = self.into_problem();
        (problem.status_code(), problem.detail)
    }

    fn into_problem(self) -> Problem {
        let code = self.code();
        match self {
            ApiError::Validation { detail, errors } => {
                Problem::new(code, detail).with_errors(errors)
            }
            ApiError::Unprocessable { detail, errors } => {
                let mut problem = Problem::new(code, detail).with_errors(errors);
                problem.status = 422;
                problem
            }
            ApiError::Unauthenticated(detail) | ApiError::Forbidden(detail) => {
                Problem::new(code, detail)
            }
            ApiError::TokenExpired => {
                Problem::new(code, "the access token has expired; refresh it")
            }
            ApiError::InvalidCredentials => Problem::new(code, "the email or password is wrong"),
            ApiError::IdempotencyKeyReused => Problem::new(
                code,
                "this Idempotency-Key was already used with a different request; use a new key",
            ),
            ApiError::WebhookSecretMissing => Problem::new(
                code,
                "a callback_url needs a webhook signing secret: create one with \
                 POST /api/v1/me/webhook-secret first",
            ),
            ApiError::MfaRequired => Problem::new(
                code,
                "this action needs a login that passed two-factor authentication",
            ),
            ApiError::RateLimited(wait) => Problem::new(
                code,
                format!("too many attempts; retry in {} s", wait.as_secs().max(1)),
            ),
            ApiError::TooManyInFlight { limit, .. } => Problem::new(
                code,
                format!(
                    "at most {limit} uploads in flight per account; retry once one has finished"
                ),
            ),
            ApiError::MessageQuotaExceeded { detail, .. } => Problem::new(code, detail),
            ApiError::EmailUnverified => Problem::new(
                code,
                "confirm the account's email address first: follow the link sent to it \
                 (POST /api/v1/auth/verify-email/resend sends a new one)",
            ),
            ApiError::NotFound(detail)
            | ApiError::Conflict(detail)
            | ApiError::PayloadTooLarge(detail)
            | ApiError::UnsupportedMediaType(detail)
            | ApiError::QuotaExceeded(detail) => Problem::new(code, detail),
            ApiError::ScanPending => Problem::new(
                code,
                "the file is still being verified and scanned; try again when its status is `clean`",
            ),
            ApiError::Quarantined => Problem::new(
                code,
                "a scan found the file infected: it is quarantined and never served",
            ),
            ApiError::DependencyUnavailable(name) => {
                Problem::new(code, format!("{name} is unavailable, try again shortly"))
            }
            ApiError::Database(_) if code == ErrorCode::DependencyUnavailable => {
                Problem::new(code, "the database is unavailable, try again shortly")
            }
            // Nothing internal (SQL, messages, causes) reaches the client.
            ApiError::Database(_) | ApiError::Internal(_) => Problem::new(
                code,
                "an unexpected error occurred; quote the request id when reporting it",
            ),
        }
    }
}

/// A pool that cannot hand out a connection means PostgreSQL is down or saturated.
fn is_unavailable(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        // The one log line of a 5xx: it alone knows the cause. The request id comes
        // from the `http` span it is logged in. Nothing else may log the same failure
        // at error level (tests/logging.rs).
        if code.status() >= 500 {
            tracing::error!(error = %self, code = %code, "request failed");
        }
        // Which dependency this failure found down, for the breaker (`middleware::breaker`).
        let down = match &self {
            ApiError::Database(err) if is_unavailable(err) => Some(DependencyDown("postgres")),
            ApiError::DependencyUnavailable(name) => Some(DependencyDown(name)),
            _ => None,
        };
        let retry_after = match &self {
            ApiError::DependencyUnavailable(_) => Some(breaker::RETRY_AFTER.as_secs()),
            ApiError::Database(err) if is_unavailable(err) => Some(breaker::RETRY_AFTER.as_secs()),
            ApiError::RateLimited(wait)
            | ApiError::TooManyInFlight {
                retry_after: wait, ..
            }
            | ApiError::MessageQuotaExceeded {
                retry_after: wait, ..
            } => Some(wait.as_secs().max(1)),
            _ => None,
        };
        let mut response = self.into_problem().into_response();
        let headers = response.headers_mut();
        match code {
            ErrorCode::Unauthenticated | ErrorCode::TokenExpired => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"conveyor\", error=\"invalid_token\""),
                );
            }
            ErrorCode::InvalidCredentials => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"conveyor\""),
                );
            }
            _ => {}
        }
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(down) = down {
            response.extensions_mut().insert(down);
        }
        response
    }
}

/// On a response: the request found this dependency unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DependencyDown(pub &'static str);

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    #[test]
    fn database_errors_never_leak_their_message() {
        let err = ApiError::Database(sqlx::Error::Protocol("relation users_secret".into()));
        let problem = err.into_problem();
        assert_eq!(problem.code, ErrorCode::Internal);
        assert!(!problem.detail.contains("users_secret"));
    }

    #[test]
    fn pool_timeout_is_dependency_unavailable() {
        let response = ApiError::Database(sqlx::Error::PoolTimedOut).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn unprocessable_is_422_validation_failed() {
        let err = ApiError::Unprocessable {
            detail: "x".into(),
            errors: vec![],
        };
        let problem = err.into_problem();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.code, ErrorCode::ValidationFailed);
    }
}
