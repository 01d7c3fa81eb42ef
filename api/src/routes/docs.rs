//! The OpenAPI document and an interactive reference of it: Swagger UI, whose assets
//! are vendored inside the `utoipa-swagger-ui` crate (nothing is downloaded at build
//! or run time, so it works offline), served under a Content-Security-Policy that
//! allows only this origin.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::openapi;
use crate::state::AppState;

/// Where the spec is served; the reference reads it from here.
pub const SPEC_PATH: &str = "/api/v1/openapi.json";

/// Scripts, styles, images and fonts from this origin only (Swagger UI sets a few
/// inline styles and uses data: images); the spec and "try it out" calls go to this
/// origin only.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

pub fn routes() -> Router<AppState> {
    let reference: Router<AppState> = SwaggerUi::new("/docs")
        .config(
            Config::new([SPEC_PATH])
                .try_it_out_enabled(true)
                .persist_authorization(false),
        )
        .into();
    Router::new()
        .route(SPEC_PATH, get(spec))
        .merge(reference.layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(DOCS_CSP),
        )))
}

async fn spec() -> Response {
    let mut response = openapi::json().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
