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
            mfa_required, not_found, method_not_allowed, conflict, idempotency_key_reused, webhook_secret_missing, \
            rate_limited, message_quota_exceeded, email_unverified, payload_too_large, unsupported_media_type, quota_exceeded, \
            scan_pending, quarantined, request_timeout, dependency_unavailable, internal."
    ),
    paths(
        crate::routes::meta::index,
        crate::routes::auth::register,
        crate::routes::auth::verify_email_page,
        crate::routes::auth::verify_email,
        crate::routes::auth::resend_verification,
        crate::routes::auth::login,
        crate::routes::auth::login_mfa,
        crate::routes::auth::refresh,
        crate::routes::auth::logout,
        crate::routes::auth::change_password,
        crate::routes::auth::setup_2fa,
        crate::routes::auth::enable_2fa,
        crate::routes::auth::disable_2fa,
        crate::routes::me::me,
        crate::routes::webhooks::rotate,
        crate::routes::webhooks::show,
        crate::routes::admin::update_user,
        crate::routes::admin::rescan_all,
        crate::routes::admin::list_queues,
        crate::routes::admin::pause_queue,
        crate::routes::admin::resume_queue,
        crate::routes::admin::list_jobs,
        crate::routes::admin::show_job,
        crate::routes::admin::retry_job,
        crate::routes::admin::discard_job,
        crate::routes::admin::bulk_retry,
        crate::routes::admin::show_operation,
        crate::routes::admin::list_schedules,
        crate::routes::admin::pause_schedule,
        crate::routes::admin::resume_schedule,
        crate::routes::admin::canary,
        crate::routes::admin::audit,
        crate::routes::wellknown::jwks,
        crate::routes::emails::send_email,
        crate::routes::emails::send_campaign,
        crate::routes::suppressions::campaign_stats,
        crate::routes::suppressions::list,
        crate::routes::suppressions::add,
        crate::routes::suppressions::remove,
        crate::routes::suppressions::unsubscribe_page,
        crate::routes::suppressions::unsubscribe,
        crate::routes::suppressions::inbound_report,
        crate::routes::templates::create,
        crate::routes::templates::list,
        crate::routes::templates::show,
        crate::routes::templates::edit,
        crate::routes::templates::remove,
        crate::routes::templates::preview,
        crate::routes::sending_limits::set,
        crate::routes::sending_limits::show,
        crate::routes::sending_limits::remove,
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
    modifiers(&BearerAuth, &Contract, &Webhooks, &Downloads),
    components(schemas(
        crate::routes::auth::MfaChallenge,
        crate::routes::auth::TokenResponse,
        shared::webhooks::RequestFinishedEvent,
        shared::webhooks::FinishedRequest,
        shared::problem::Problem,
        shared::problem::FieldError,
        shared::events::Progress,
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
        (name = "suppressions", description = "Addresses a sending account no longer sends to; one-click unsubscribe"),
        (name = "templates", description = "Email templates: versioned, checked when stored, previewed without sending"),
        (name = "uploads", description = "Files: streamed uploads, scans, downloads of clean files"),
        (name = "webhooks", description = "Completion webhooks: the signing secret (see `callback_url` on submissions)"),
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
        components.add_security_scheme(
            "inbound_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("INBOUND_REPORTS_TOKEN"))
                    .build(),
            ),
        );
    }
}

/// Completes every operation from what the api does for all of them, so the spec is
/// valid OpenAPI 3.1 and lists every answer a client can get:
/// - operation ids `{tag}_{handler}` (unique across resources);
/// - every response has a description (the error code's title for errors);
/// - problems are `application/problem+json`, as the server sends them;
/// - the answers every operation can give: 500 and 503 everywhere, 429 (limits), 401
///   and 403 where a token is needed, 400 where a path parameter must parse, 400,
///   413, 415 and 422 where a body is read;
/// - response headers: `x-request-id` and the rate limit's `RateLimit-Policy` and
///   `RateLimit` on every answer, `Location` on 201/202,
///   `Retry-After` on 429/503, `WWW-Authenticate` on 401.
struct Contract;

/// The response headers every operation shares, declared once under
/// `components/headers` and referenced: (name, description).
const SHARED_HEADERS: [(&str, &str); 6] = [
    (
        "RateLimit-Policy",
        "The route group's budget: `\"group\";q=REQUESTS;w=SECONDS`",
    ),
    (
        "RateLimit",
        "What is left of it: `\"group\";r=REMAINING;t=SECONDS_UNTIL_RESET`",
    ),
    (
        "x-request-id",
        "The request's id (the client's, or a new UUID v7); on every log line of the request",
    ),
    (
        "Location",
        "Where the created resource (or the request to follow) is",
    ),
    ("Retry-After", "Seconds to wait before trying again"),
    ("WWW-Authenticate", "The Bearer challenge"),
];

/// The problems every operation of a kind can answer (see [`Contract::complete`]),
/// declared once under `components/responses` as `Problem{status}`.
const SHARED_PROBLEMS: [u16; 9] = [400, 401, 403, 413, 415, 422, 429, 500, 503];

impl Contract {
    fn header(description: &str) -> utoipa::openapi::Header {
        use utoipa::openapi::{HeaderBuilder, ObjectBuilder, Type};
        HeaderBuilder::new()
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .description(Some(description))
            .build()
    }

    /// A reference to one of [`SHARED_HEADERS`], or the header itself where references
    /// are not used (the probes, which are not rate limited).
    fn header_ref(name: &str, inline: bool) -> utoipa::openapi::RefOr<utoipa::openapi::Header> {
        use utoipa::openapi::{Ref, RefOr};
        if inline {
            let description = SHARED_HEADERS
                .iter()
                .find(|(n, _)| *n == name)
                .map_or("", |(_, d)| d);
            RefOr::T(Self::header(description))
        } else {
            RefOr::Ref(Ref::new(format!("#/components/headers/{name}")))
        }
    }

    fn problem(status: u16) -> utoipa::openapi::Response {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let title = shared::ErrorCode::ALL
            .iter()
            .find(|code| code.status() == status)
            .map_or("Error", |code| code.title());
        ResponseBuilder::new()
            .description(title)
            .content(
                PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build()
    }

    /// The headers a response with this status carries: `x-request-id` always, the
    /// rate limit's where the route is limited, and the status's own.
    fn add_headers(response: &mut utoipa::openapi::Response, code: u16, limited: bool) {
        let mut names = vec!["x-request-id"];
        if limited {
            names.extend(["RateLimit-Policy", "RateLimit"]);
        }
        match code {
            201 | 202 => names.push("Location"),
            429 | 503 => names.push("Retry-After"),
            401 => names.push("WWW-Authenticate"),
            _ => {}
        }
        for name in names {
            response
                .headers
                .entry(name.to_owned())
                .or_insert_with(|| Self::header_ref(name, !limited));
        }
    }

    /// `components/headers` and `components/responses` for what operations share.
    fn add_components(openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, description) in SHARED_HEADERS {
            components
                .headers
                .insert(name.to_owned(), Self::header(description).into());
        }
        for status in SHARED_PROBLEMS {
            let mut response = Self::problem(status);
            Self::add_headers(&mut response, status, true);
            components
                .responses
                .insert(format!("Problem{status}"), response.into());
        }
    }

    fn complete(path: &str, tag: &str, operation: &mut utoipa::openapi::path::Operation) {
        let limited = !path.starts_with("/health/");
        use utoipa::openapi::{Ref, RefOr};
        if let Some(id) = &operation.operation_id
            && !id.starts_with(&format!("{tag}_"))
        {
            operation.operation_id = Some(format!("{tag}_{id}"));
        }
        let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
        let has_body = operation.request_body.is_some();
        let has_path_parameters = operation.parameters.iter().flatten().any(|p| {
            matches!(p, RefOr::T(p) if p.parameter_in == utoipa::openapi::path::ParameterIn::Path)
        });
        let mut statuses: Vec<u16> = vec![429, 500, 503];
        if has_path_parameters {
            // A path parameter that does not parse (not a UUID).
            statuses.push(400);
        }
        if secured {
            statuses.extend([401, 403]);
        }
        if has_body {
            statuses.extend([400, 413, 415, 422]);
        }
        let responses = &mut operation.responses.responses;
        for status in statuses {
            responses.entry(status.to_string()).or_insert_with(|| {
                if limited {
                    RefOr::Ref(Ref::new(format!("#/components/responses/Problem{status}")))
                } else {
                    RefOr::T(Self::problem(status))
                }
            });
        }
        for (status, response) in responses.iter_mut() {
            let RefOr::T(response) = response else {
                continue;
            };
            let code: u16 = status.parse().unwrap_or(0);
            if response.description.trim().is_empty() {
                response.description = match code {
                    200 => "OK".to_owned(),
                    201 => "Created".to_owned(),
                    202 => "Accepted".to_owned(),
                    204 => "No content".to_owned(),
                    _ => Self::problem(code).description,
                };
            }
            if code >= 400
                && let Some(json) = response.content.shift_remove("application/json")
            {
                response.content.insert(PROBLEM_JSON.to_owned(), json);
            }
            Self::add_headers(response, code, limited);
        }
    }
}

const PROBLEM_JSON: &str = "application/problem+json";

impl utoipa::Modify for Contract {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        Self::add_components(openapi);
        for (path, item) in openapi.paths.paths.iter_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
            ]
            .into_iter()
            .flatten()
            {
                let tag = operation
                    .tags
                    .as_ref()
                    .and_then(|tags| tags.first())
                    .cloned()
                    .unwrap_or_else(|| "api".to_owned());
                Self::complete(path, &tag, operation);
            }
        }
    }
}

/// A download's 200 is served with the type its content showed when it was uploaded
/// (one of the upload allowlist's types; `application/octet-stream` when unknown): each
/// is declared, with a binary schema, so generated clients return the bytes.
struct Downloads;

impl utoipa::Modify for Downloads {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{
            ContentBuilder, KnownFormat, ObjectBuilder, RefOr, SchemaFormat, Type,
        };
        let Some(RefOr::T(ok)) = openapi
            .paths
            .paths
            .get_mut("/api/v1/uploads/{id}/content")
            .and_then(|item| item.get.as_mut())
            .and_then(|get| get.responses.responses.get_mut("200"))
        else {
            return;
        };
        let binary = || {
            let content = ContentBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary))),
                ))
                .build();
            RefOr::T(content)
        };
        ok.content.clear();
        ok.content
            .insert("application/octet-stream".to_owned(), binary());
        for file_type in shared::files::FileType::ALL {
            ok.content.insert(file_type.mime().to_owned(), binary());
        }
    }
}

/// The webhooks Conveyor sends (OpenAPI 3.1 `webhooks`): `request.finished`, POSTed to
/// a submission's `callback_url` with the Standard Webhooks headers.
struct Webhooks;

impl utoipa::Modify for Webhooks {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{
            HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
        };
        use utoipa::openapi::request_body::RequestBodyBuilder;
        use utoipa::openapi::{
            ContentBuilder, ObjectBuilder, PathsBuilder, Ref, Required, ResponseBuilder, Type,
        };
        let header = |name: &str, required: bool, description: &str| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Header)
                .required(if required {
                    Required::True
                } else {
                    Required::False
                })
                .description(Some(description))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .build()
        };
        let operation = OperationBuilder::new()
            .operation_id(Some("webhooks_request_finished"))
            .tag("webhooks")
            .summary(Some("A request reached its final status"))
            .description(Some(
                "POSTed to the submission's `callback_url` once the request is finished \
                 (succeeded, failed or cancelled), signed as Standard Webhooks specifies: \
                 verify `webhook-signature` over `{webhook-id}.{webhook-timestamp}.{body}` \
                 with the secret of `POST /api/v1/me/webhook-secret` (any Standard Webhooks \
                 library does it), and reject old timestamps. Delivered at least once: \
                 `webhook-id` is stable across retries, so use it to ignore repeats. Any 2xx \
                 acknowledges; any other answer, a timeout or a network error is retried \
                 with backoff up to `WEBHOOK_MAX_ATTEMPTS`.",
            ))
            .parameter(header(
                "webhook-id",
                true,
                "The delivery's id, the same on every retry",
            ))
            .parameter(header(
                "webhook-timestamp",
                true,
                "When this attempt was signed, in Unix seconds",
            ))
            .parameter(header(
                "webhook-signature",
                true,
                "Space-separated `v1,<base64 HMAC-SHA256>`, one per secret still valid \
                 (two for a day after a rotation)",
            ))
            .parameter(header(
                "traceparent",
                false,
                "W3C trace context of the delivery, when tracing is on",
            ))
            .request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("RequestFinishedEvent")))
                            .build(),
                    )
                    .build(),
            ))
            .response(
                "200",
                ResponseBuilder::new()
                    .description("Any 2xx acknowledges the delivery; the body is ignored")
                    .build(),
            )
            .build();
        openapi.webhooks = Some(
            PathsBuilder::new()
                .path(
                    shared::webhooks::EVENT_REQUEST_FINISHED,
                    PathItem::new(HttpMethod::Post, operation),
                )
                .build(),
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
