//! The OpenAPI 3.1 description of the api, generated from the handlers and types.

use std::sync::OnceLock;

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Conveyor API",
        description = "Submit emails, uploads and scans; follow their jobs to the end. \
            Every error is `application/problem+json` (RFC 9457) with a stable `code`: \
            validation_failed, unauthenticated, token_expired, invalid_credentials, forbidden, \
            mfa_required, not_found, method_not_allowed, conflict, idempotency_key_reused, \
            rate_limited, payload_too_large, unsupported_media_type, request_timeout, \
            dependency_unavailable, internal."
    ),
    paths(
        crate::routes::meta::index,
        shared::health::live,
        shared::health::ready,
    ),
    components(schemas(
        shared::problem::Problem,
        shared::problem::FieldError,
        shared::health::Readiness,
        shared::health::DependencyState,
    )),
    tags(
        (name = "meta", description = "About this api"),
        (name = "health", description = "Liveness and readiness probes"),
    )
)]
pub struct ApiDoc;

/// The spec as JSON, rendered once.
pub fn json() -> String {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|err| format!("{{\"error\":\"cannot render the spec: {err}\"}}"))
    })
    .clone()
}
