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
            rate_limited, payload_too_large, unsupported_media_type, quota_exceeded, \
            scan_pending, quarantined, request_timeout, dependency_unavailable, internal."
    ),
    paths(
        crate::routes::meta::index,
        crate::routes::auth::register,
        crate::routes::auth::login,
        crate::routes::auth::login_mfa,
        crate::routes::auth::refresh,
        crate::routes::auth::logout,
        crate::routes::auth::change_password,
        crate::routes::auth::setup_2fa,
        crate::routes::auth::enable_2fa,
        crate::routes::auth::disable_2fa,
        crate::routes::me::me,
        crate::routes::admin::update_user,
        crate::routes::admin::rescan_all,
        crate::routes::wellknown::jwks,
        crate::routes::emails::send_email,
        crate::routes::emails::send_campaign,
        crate::routes::requests::list,
        crate::routes::requests::show,
        crate::routes::requests::cancel,
        crate::routes::requests::stream_events,
        crate::routes::uploads::upload,
        crate::routes::uploads::list,
        crate::routes::uploads::show,
        crate::routes::uploads::download,
        crate::routes::uploads::rescan,
        shared::health::live,
        shared::health::ready,
    ),
    modifiers(&BearerAuth),
    components(schemas(
        crate::routes::auth::MfaChallenge,
        shared::problem::Problem,
        shared::problem::FieldError,
        shared::health::Readiness,
        shared::health::DependencyState,
    )),
    tags(
        (name = "meta", description = "About this api"),
        (name = "health", description = "Liveness and readiness probes"),
        (name = "auth", description = "Accounts, sessions and two-factor authentication"),
        (name = "admin", description = "Operator actions (admin role, 2FA login)"),
        (name = "emails", description = "Messages and campaigns, delivered by the workers"),
        (name = "requests", description = "Following submitted work"),
        (name = "uploads", description = "Files: streamed uploads, scans, downloads of clean files"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` scheme the secured paths name.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

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
