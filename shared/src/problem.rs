//! RFC 9457 `application/problem+json` bodies: the one shape every error of every
//! Conveyor HTTP listener takes, and the request id they carry.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error_code::ErrorCode;

pub const CONTENT_TYPE: &str = "application/problem+json";

tokio::task_local! {
    /// The id of the request being served; set by the request-id middleware so an
    /// error body can name it without threading it through every call.
    pub static REQUEST_ID: String;
}

/// The request id of the request this task serves, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// JSON path of the field, e.g. `to[2]` or `password`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A problem details body (RFC 9457) with Conveyor's `code`, `request_id` and (when
/// tracing is on) `trace_id`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URN naming the problem type, e.g. `urn:conveyor:problem:not_found`.
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code; see the error code table in the book
    /// (docs/src/reference/errors.md).
    #[schema(value_type = String, example = "validation_failed")]
    pub code: ErrorCode,
    /// The `x-request-id` of the request, to quote when asking for help.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The trace of the request (hex), when tracing is on: an operator opens it in
    /// the trace backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// At most `MAX_FIELD_ERRORS` invalid fields, in request order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// How many further invalid fields `errors` leaves out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors_omitted: Option<usize>,
}

/// The most field errors a problem lists, so that a request with a huge invalid list
/// cannot make an answer proportionally huge.
pub const MAX_FIELD_ERRORS: usize = 100;

impl Problem {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Problem {
            type_: code.type_uri(),
            title: code.title().to_owned(),
            status: code.status(),
            detail: detail.into(),
            code,
            request_id: current_request_id(),
            trace_id: crate::otel::current_trace_id(),
            errors: Vec::new(),
            errors_omitted: None,
        }
    }

    /// The field errors, the first `MAX_FIELD_ERRORS` of them listed and the rest
    /// counted in `errors_omitted`.
    pub fn with_errors(mut self, mut errors: Vec<FieldError>) -> Self {
        let omitted = errors.len().saturating_sub(MAX_FIELD_ERRORS);
        errors.truncate(MAX_FIELD_ERRORS);
        self.errors = errors;
        self.errors_omitted = (omitted > 0).then_some(omitted);
        self
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let mut response = (status, axum::Json(self)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn body_has_every_field_and_the_task_request_id() {
        let problem = REQUEST_ID
            .scope("req-1".to_owned(), async {
                Problem::new(ErrorCode::ValidationFailed, "bad")
                    .with_errors(vec![FieldError::new("to", "required")])
            })
            .await;
        let json = serde_json::to_value(&problem).expect("serialize");
        assert_eq!(json["type"], "urn:conveyor:problem:validation_failed");
        assert_eq!(json["status"], 400);
        assert_eq!(json["code"], "validation_failed");
        assert_eq!(json["request_id"], "req-1");
        assert_eq!(json["errors"][0]["field"], "to");
        let response = problem.into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
    }

    #[test]
    fn field_errors_are_capped_and_the_rest_counted() {
        let errors = (0..5000)
            .map(|i| FieldError::new(format!("to[{i}]"), "is not an email address"))
            .collect();
        let problem = Problem::new(ErrorCode::ValidationFailed, "bad").with_errors(errors);
        assert_eq!(problem.errors.len(), MAX_FIELD_ERRORS);
        assert_eq!(problem.errors[99].field, "to[99]");
        assert_eq!(problem.errors_omitted, Some(4900));
        let json = serde_json::to_vec(&problem).expect("serialize");
        assert!(json.len() < 16 * 1024, "{} bytes", json.len());

        let few = Problem::new(ErrorCode::ValidationFailed, "bad")
            .with_errors(vec![FieldError::new("to", "required")]);
        let json = serde_json::to_value(&few).expect("serialize");
        assert!(json.get("errors_omitted").is_none());
    }

    #[test]
    fn outside_a_request_the_id_is_omitted() {
        let json = serde_json::to_value(Problem::new(ErrorCode::Internal, "x")).expect("serialize");
        assert!(json.get("request_id").is_none());
        assert!(json.get("errors").is_none());
    }
}
