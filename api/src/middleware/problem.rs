//! The safety net under the central error handler: a panic becomes a problem+json
//! 500, and any error response that did not come from `ApiError` (a 405 from the
//! router, a 408 from the timeout layer, …) is rewritten as problem+json, so no
//! plain-text error leaves the api.

use std::any::Any;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shared::ErrorCode;
use shared::problem::{self, Problem};

use crate::error::ApiError;

/// `CatchPanicLayer` handler: logs the panic with the request id, answers a bare 500.
#[derive(Clone, Copy, Debug, Default)]
pub struct PanicToProblem;

impl tower_http::catch_panic::ResponseForPanic for PanicToProblem {
    type ResponseBody = Body;

    fn response_for_panic(&mut self, err: Box<dyn Any + Send + 'static>) -> Response<Body> {
        let message = err
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| err.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_owned());
        tracing::error!(panic = %message, "handler panicked");
        Problem::new(
            ErrorCode::Internal,
            "an unexpected error occurred; quote the request id when reporting it",
        )
        .into_response()
    }
}

/// The code a bare error status stands for.
fn code_for(status: StatusCode) -> ErrorCode {
    match status.as_u16() {
        401 => ErrorCode::Unauthenticated,
        403 => ErrorCode::Forbidden,
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        408 => ErrorCode::RequestTimeout,
        409 => ErrorCode::Conflict,
        413 => ErrorCode::PayloadTooLarge,
        415 => ErrorCode::UnsupportedMediaType,
        429 => ErrorCode::RateLimited,
        503 => ErrorCode::DependencyUnavailable,
        500..=599 => ErrorCode::Internal,
        _ => ErrorCode::ValidationFailed,
    }
}

/// Rewrites non-problem error responses; leaves everything else untouched.
pub async fn ensure_problem_json(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(problem::CONTENT_TYPE.as_bytes()));
    // A page that answers an error in HTML on purpose (the console's) keeps it.
    let is_page = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem || is_page {
        return response;
    }
    let code = code_for(status);
    let detail = match code {
        ErrorCode::NotFound => format!("no resource at {path}"),
        ErrorCode::MethodNotAllowed => format!("{method} is not allowed on {path}"),
        ErrorCode::RequestTimeout => "the request took longer than the server allows".to_owned(),
        ErrorCode::PayloadTooLarge => "the body is larger than this endpoint accepts".to_owned(),
        _ => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    if status.is_server_error() {
        tracing::error!(
            status = status.as_u16(),
            "error response without a problem body"
        );
    }
    let mut problem = Problem::new(code, detail);
    problem.status = status.as_u16();
    let (parts, _) = response.into_parts();
    let mut rewritten = problem.into_response();
    // Keep headers that matter to the client (Allow, Retry-After, WWW-Authenticate, CORS…).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().append(name, value.clone());
        }
    }
    rewritten.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(problem::CONTENT_TYPE),
    );
    rewritten
}

/// The router's fallback: an unknown route is a problem+json 404.
pub async fn not_found(request: Request) -> ApiError {
    ApiError::NotFound(format!("no resource at {}", request.uri().path()))
}
