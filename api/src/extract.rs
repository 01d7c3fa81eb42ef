//! Extractors whose rejections are problem+json, so axum's plain-text rejection
//! messages never reach a client.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// `Json<T>` with problem+json rejections: a malformed or mistyped body is
/// 400 `validation_failed`, a wrong content type 415, an oversized body 413.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
            "the body must be JSON with Content-Type: application/json".into(),
        ),
        JsonRejection::JsonSyntaxError(err) => ApiError::validation(format!(
            "the body is not valid JSON: {}",
            serde_cause(&err.body_text())
        )),
        JsonRejection::JsonDataError(err) => ApiError::validation(format!(
            "the body does not match the schema: {}",
            serde_cause(&err.body_text())
        )),
        JsonRejection::BytesRejection(err) if err.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge("the body is larger than this endpoint accepts".into())
        }
        other => ApiError::validation(format!("the body could not be read ({})", other.status())),
    }
}

/// Keeps serde's own description (line, column, which field) and drops axum's prefix.
fn serde_cause(text: &str) -> String {
    text.split_once(": ")
        .map_or(text, |(_, cause)| cause)
        .to_owned()
}

/// `Query<T>` with problem+json rejections (400 `validation_failed`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(err)) => {
                Err(ApiError::validation(format!(
                    "the query string is invalid: {}",
                    serde_cause(&err.body_text())
                )))
            }
            Err(other) => Err(ApiError::validation(format!(
                "the query string is invalid ({})",
                other.status()
            ))),
        }
    }
}
