//! Builds the api's `Router`: routes, fallbacks and the middleware stack, ordered
//! here and only here. Tests build the same router.

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{from_fn, from_fn_with_state};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnResponse, OnResponse as _, TraceLayer};
use tracing::Level;

use crate::middleware::{breaker, deadline, http_metrics, problem, rate_limit, request_id};
use crate::routes;
use crate::state::AppState;

/// The api as it is served.
pub fn router(state: AppState) -> Router {
    let api_v1 = routes::api_v1(&state.config);
    build(state, api_v1)
}

/// The api with a given `/api/v1` router under the standard stack (tests add routes).
pub fn build(state: AppState, api_v1: Router<AppState>) -> Router {
    let config = state.config.clone();
    let mut routes = Router::new()
        .nest("/api/v1", api_v1)
        .merge(routes::docs::routes())
        .merge(routes::wellknown::routes());
    if config.http.console_enabled {
        routes = routes.merge(crate::console::routes(&state));
    }
    let routes = routes
        .fallback(problem::not_found)
        .with_state(state.clone())
        .merge(shared::health::routes(state.health()));

    // Outermost first. The request id wraps everything so every log line and every
    // error body (even a panic's) carries it.
    let stack = ServiceBuilder::new()
        .layer(from_fn(request_id::request_id))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(http_span)
                .on_response(
                    |response: &axum::http::Response<_>,
                     latency: Duration,
                     span: &tracing::Span| {
                        if shared::otel::on() {
                            span.record("http.response.status_code", response.status().as_u16());
                        }
                        DefaultOnResponse::new()
                            .level(Level::INFO)
                            .on_response(response, latency, span);
                    },
                )
                // A 5xx is logged once, by `ApiError` (or the panic handler), with its cause.
                .on_failure(()),
        )
        .layer(from_fn(http_metrics::track))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(cors(&config.http.cors_allowed_origins))
        .layer(from_fn(problem::ensure_problem_json))
        .layer(CatchPanicLayer::custom(problem::PanicToProblem))
        .layer(from_fn_with_state(
            deadline::Deadlines {
                request: config.http.request_timeout,
                upload: config.uploads.timeout,
            },
            deadline::deadline,
        ))
        .layer(from_fn_with_state(state.clone(), rate_limit::limit))
        .layer(from_fn_with_state(state.clone(), breaker::guard))
        .layer(DefaultBodyLimit::max(config.http.body_limit_bytes));
    routes.layer(stack)
}

/// The server span of a request, named by its route template as OpenTelemetry's HTTP
/// conventions ask (`POST /api/v1/emails`; the path only, never the query string,
/// which may carry something private). A client's `traceparent` is its parent when
/// `OTEL_TRUST_INCOMING=true`, else only a link: an outsider does not choose where
/// Conveyor's traces go.
fn http_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = request
        .headers()
        .get(&request_id::HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(axum::extract::MatchedPath::as_str);
    let method = request.method().as_str();
    let incoming = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|_| shared::otel::on());
    let trusted = incoming.filter(|_| shared::otel::trust_incoming());
    let path = request.uri().path();
    if !shared::otel::on() {
        // The log line's context: no attributes for a trace that is not there.
        return tracing::info_span!("http", method = %method, path = %path, request_id = %id);
    }
    // Recorded as a trusted client's trace is; otherwise the sampler decides.
    let make = || {
        tracing::info_span!(
            "http",
            method = %method,
            path = %path,
            request_id = %id,
            otel.name = %match route {
                Some(route) => format!("{method} {route}"),
                None => method.to_owned(),
            },
            otel.kind = "server",
            http.request.method = %method,
            http.route = route,
            http.response.status_code = tracing::field::Empty,
        )
    };
    let span = shared::otel::root_span(trusted, make);
    match (trusted, incoming) {
        (Some(parent), _) => shared::otel::set_parent(&span, parent),
        (None, Some(linked)) => shared::otel::add_link(&span, linked),
        (None, None) => {}
    }
    span
}

/// CORS from the allowlist; with an empty list no cross-origin request is allowed.
fn cors(origins: &[String]) -> CorsLayer {
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(allowed))
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("x-requested-with"),
            request_id::HEADER,
        ])
        .expose_headers([
            request_id::HEADER,
            header::LOCATION,
            header::RETRY_AFTER,
            HeaderName::from_static("ratelimit"),
            HeaderName::from_static("ratelimit-policy"),
        ])
        .allow_credentials(true)
        .max_age(Duration::from_secs(600))
}
