//! The api's one error type. Every handler returns `Result<_, ApiError>`; its
//! `IntoResponse` writes the RFC 9457 problem body with a stable `code`, and logs a
//! 5xx once, here, with the request id.

use axum::response::{IntoResponse, Response};
use shared::ErrorCode;
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
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("payload too large: {0}")]
    PayloadTooLarge(String),
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("{0} is unavailable")]
    DependencyUnavailable(&'static str),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
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
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            ApiError::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            ApiError::DependencyUnavailable(_) => ErrorCode::DependencyUnavailable,
            ApiError::Database(err) if is_unavailable(err) => ErrorCode::DependencyUnavailable,
            ApiError::Database(_) | ApiError::Internal(_) => ErrorCode::Internal,
        }
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
            ApiError::NotFound(detail)
            | ApiError::Conflict(detail)
            | ApiError::PayloadTooLarge(detail)
            | ApiError::UnsupportedMediaType(detail) => Problem::new(code, detail),
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
        if code.status() >= 500 {
            tracing::error!(error = %self, code = %code, "request failed");
        }
        self.into_problem().into_response()
    }
}

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
