//! The stable, machine-readable error codes of the public API (`code` in every
//! `application/problem+json` body). Clients branch on these; never rename one.

use serde::Serialize;

/// A stable error code. The string form is snake_case and part of the API contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    ValidationFailed,
    Unauthenticated,
    TokenExpired,
    InvalidCredentials,
    Forbidden,
    MfaRequired,
    NotFound,
    MethodNotAllowed,
    Conflict,
    IdempotencyKeyReused,
    WebhookSecretMissing,
    RateLimited,
    MessageQuotaExceeded,
    EmailUnverified,
    PayloadTooLarge,
    UnsupportedMediaType,
    QuotaExceeded,
    ScanPending,
    Quarantined,
    RequestTimeout,
    DependencyUnavailable,
    Internal,
}

impl ErrorCode {
    /// Every code, in the order the documentation lists them.
    pub const ALL: [ErrorCode; 22] = [
        ErrorCode::ValidationFailed,
        ErrorCode::Unauthenticated,
        ErrorCode::TokenExpired,
        ErrorCode::InvalidCredentials,
        ErrorCode::Forbidden,
        ErrorCode::MfaRequired,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::WebhookSecretMissing,
        ErrorCode::RateLimited,
        ErrorCode::MessageQuotaExceeded,
        ErrorCode::EmailUnverified,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::QuotaExceeded,
        ErrorCode::ScanPending,
        ErrorCode::Quarantined,
        ErrorCode::RequestTimeout,
        ErrorCode::DependencyUnavailable,
        ErrorCode::Internal,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ValidationFailed => "validation_failed",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::MfaRequired => "mfa_required",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::WebhookSecretMissing => "webhook_secret_missing",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::MessageQuotaExceeded => "message_quota_exceeded",
            ErrorCode::EmailUnverified => "email_unverified",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::ScanPending => "scan_pending",
            ErrorCode::Quarantined => "quarantined",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::DependencyUnavailable => "dependency_unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status this code is answered with.
    pub const fn status(self) -> u16 {
        match self {
            ErrorCode::ValidationFailed => 400,
            ErrorCode::Unauthenticated
            | ErrorCode::TokenExpired
            | ErrorCode::InvalidCredentials => 401,
            ErrorCode::Forbidden
            | ErrorCode::MfaRequired
            | ErrorCode::EmailUnverified
            | ErrorCode::Quarantined => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::Conflict | ErrorCode::ScanPending => 409,
            ErrorCode::PayloadTooLarge | ErrorCode::QuotaExceeded => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::IdempotencyKeyReused | ErrorCode::WebhookSecretMissing => 422,
            ErrorCode::RateLimited | ErrorCode::MessageQuotaExceeded => 429,
            ErrorCode::Internal => 500,
            ErrorCode::DependencyUnavailable => 503,
        }
    }

    /// A short, human-readable summary (the problem `title`).
    pub const fn title(self) -> &'static str {
        match self {
            ErrorCode::ValidationFailed => "The request is not valid",
            ErrorCode::Unauthenticated => "Authentication is required",
            ErrorCode::TokenExpired => "The access token has expired",
            ErrorCode::InvalidCredentials => "Invalid email or password",
            ErrorCode::Forbidden => "Not allowed",
            ErrorCode::MfaRequired => "Two-factor authentication is required",
            ErrorCode::NotFound => "Not found",
            ErrorCode::MethodNotAllowed => "Method not allowed",
            ErrorCode::Conflict => "Conflict",
            ErrorCode::IdempotencyKeyReused => "Idempotency key reused with a different request",
            ErrorCode::WebhookSecretMissing => "No webhook signing secret yet",
            ErrorCode::RateLimited => "Too many requests",
            ErrorCode::MessageQuotaExceeded => "Message quota used up",
            ErrorCode::EmailUnverified => "The email address is not confirmed yet",
            ErrorCode::PayloadTooLarge => "Payload too large",
            ErrorCode::UnsupportedMediaType => "Unsupported media type",
            ErrorCode::QuotaExceeded => "Storage quota exceeded",
            ErrorCode::ScanPending => "The file has not been scanned yet",
            ErrorCode::Quarantined => "The file is quarantined",
            ErrorCode::RequestTimeout => "The request took too long",
            ErrorCode::DependencyUnavailable => "A dependency is unavailable",
            ErrorCode::Internal => "Internal server error",
        }
    }

    /// The problem `type` URI: a stable URN naming the code (RFC 9457 §3.1.1 allows
    /// any URI; a URN promises nothing dereferenceable).
    pub fn type_uri(self) -> String {
        format!("urn:conveyor:problem:{}", self.as_str())
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_form_matches_as_str_for_every_code() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).expect("serialize code");
            assert_eq!(json, serde_json::Value::String(code.as_str().to_owned()));
        }
    }

    #[test]
    fn statuses_are_client_or_server_errors() {
        for code in ErrorCode::ALL {
            assert!(
                (400..600).contains(&code.status()),
                "{code} has status {}",
                code.status()
            );
        }
    }

    #[test]
    fn the_book_lists_every_code_with_its_status() {
        let page = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../docs/src/reference/errors.md"),
        )
        .expect("docs/src/reference/errors.md");
        for code in ErrorCode::ALL {
            let row = page
                .lines()
                .find(|line| line.starts_with(&format!("| `{}` |", code.as_str())))
                .unwrap_or_else(|| panic!("the book's error table has no row for `{code}`"));
            assert!(
                row.contains(&code.status().to_string()),
                "`{code}` row does not say {}: {row}",
                code.status()
            );
        }
    }
}
