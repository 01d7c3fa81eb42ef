//! Extractors whose rejections are problem+json, so axum's plain-text rejection
//! messages never reach a client.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::path::ErrorKind as PathErrorKind;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use shared::problem::FieldError;

use crate::error::ApiError;
use crate::state::AppState;

/// A JSON body. Malformed JSON is 400 `validation_failed`; well-formed JSON that does
/// not fit the schema (wrong type, missing or unknown field) is 422 `validation_failed`
/// naming the field; a wrong content type is 415; an oversized body 413.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = media_type(req.headers()).is_some_and(|mime| {
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType(
                "the body must be JSON with Content-Type: application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge("the body is larger than this endpoint accepts".into())
            } else {
                ApiError::validation("the body could not be read")
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// The request's media type, lowercased, without parameters (`charset`, `boundary`).
pub fn media_type(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| mime.trim().to_ascii_lowercase())
}

/// Deserializes with the path of the failing field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let message = inner.to_string();
                let message = message
                    .split(" at line ")
                    .next()
                    .unwrap_or(&message)
                    .to_owned();
                // A missing field is named itself, not the object that lacks it.
                let missing = message
                    .strip_prefix("missing field `")
                    .and_then(|rest| rest.split('`').next())
                    .map(str::to_owned);
                let (field, message) = match (missing, path.as_str()) {
                    (Some(name), ".") => (name, "is required".to_owned()),
                    (Some(name), _) => (format!("{path}.{name}"), "is required".to_owned()),
                    (None, ".") => ("body".to_owned(), message),
                    (None, _) => (path, message),
                };
                ApiError::Unprocessable {
                    detail: format!("`{field}`: {message}"),
                    errors: vec![FieldError::new(field, message)],
                }
            }
            _ => ApiError::validation(format!("the body is not valid JSON: {inner}")),
        }
    })?;
    deserializer
        .end()
        .map_err(|err| ApiError::validation(format!("the body is not valid JSON: {err}")))?;
    reject_nul_in_json(bytes)?;
    Ok(value)
}

/// PostgreSQL stores no U+0000 in `text` or `jsonb`, so a NUL that got past validation
/// would fail the insert with a 500. Refused here, once, for every JSON body.
const NUL_MESSAGE: &str = "must not contain the NUL character (U+0000)";

/// A 422 naming every string (or key) of a well-formed JSON body that holds a NUL.
/// JSON can only carry a NUL escaped, so bodies without `\u0000` are not walked.
fn reject_nul_in_json(bytes: &[u8]) -> Result<(), ApiError> {
    const ESCAPED_NUL: &[u8] = b"\\u0000";
    if !bytes.windows(ESCAPED_NUL.len()).any(|w| w == ESCAPED_NUL) {
        return Ok(());
    }
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|err| ApiError::validation(format!("the body is not valid JSON: {err}")))?;
    let mut fields = Vec::new();
    nul_fields(&value, &mut String::new(), &mut fields);
    if fields.is_empty() {
        return Ok(());
    }
    Err(ApiError::Unprocessable {
        detail: format!("`{}`: {NUL_MESSAGE}", fields[0]),
        errors: fields
            .into_iter()
            .map(|field| FieldError::new(field, NUL_MESSAGE))
            .collect(),
    })
}

/// Collects the paths (`text`, `to[2]`, `a.b`) of strings holding a NUL; a key holding
/// one is reported at the path of its object.
fn nul_fields(value: &serde_json::Value, path: &mut String, found: &mut Vec<String>) {
    let here = |path: &str| {
        if path.is_empty() {
            "body".to_owned()
        } else {
            path.to_owned()
        }
    };
    match value {
        serde_json::Value::String(text) if text.contains('\0') => found.push(here(path)),
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                nul_fields(item, path, found);
                path.truncate(len);
            }
        }
        serde_json::Value::Object(members) => {
            for (key, member) in members {
                if key.contains('\0') {
                    found.push(here(path));
                    continue;
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                nul_fields(member, path, found);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// A text field that does not come from a JSON body (a query value, say) checked for
/// the NUL PostgreSQL cannot store: a 400 naming the field.
pub fn reject_nul(field: &str, text: &str) -> Result<(), ApiError> {
    if text.contains('\0') {
        return Err(ApiError::Validation {
            detail: format!("`{field}`: {NUL_MESSAGE}"),
            errors: vec![FieldError::new(field, NUL_MESSAGE)],
        });
    }
    Ok(())
}

/// `Query<T>` with problem+json rejections (400 `validation_failed`), a NUL in any
/// value included.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // `%00` is the only way a NUL gets into a query value.
        if parts.uri.query().is_some_and(|q| q.contains("%00"))
            && let Ok(axum::extract::Query(pairs)) =
                axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
        {
            for (name, value) in &pairs {
                reject_nul("query", name)?;
                reject_nul(name, value)?;
            }
        }
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(err)) => {
                let text = err.body_text();
                let cause = text
                    .split_once(": ")
                    .map_or(text.as_str(), |(_, cause)| cause);
                Err(ApiError::validation(format!(
                    "the query string is invalid: {cause}"
                )))
            }
            Err(other) => Err(ApiError::validation(format!(
                "the query string is invalid ({})",
                other.status()
            ))),
        }
    }
}

/// `Path<T>` with problem+json rejections: a malformed parameter is a 400
/// `validation_failed` naming the parameter and the form it takes (`id`: must be a
/// UUID), never a bare "Bad Request".
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(PathRejection::FailedToDeserializePathParams(err)) => {
                let params: Vec<(String, String)> =
                    match axum::extract::RawPathParams::from_request_parts(parts, state).await {
                        Ok(raw) => raw
                            .iter()
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                            .collect(),
                        Err(_) => Vec::new(),
                    };
                Err(path_error::<T>(err.kind(), &params))
            }
            Err(other) => Err(ApiError::validation(format!(
                "the path is invalid ({})",
                other.status()
            ))),
        }
    }
}

/// An example UUID for messages (a UUIDv7, as Conveyor's ids are).
const UUID_EXAMPLE: &str = "0193a5b2-7c1d-7e8f-9a0b-1c2d3e4f5a6b";

/// The 400 for a path parameter of `T` that did not parse: which one, what it must
/// be, and what was given (cut to 64 characters).
fn path_error<T>(kind: &PathErrorKind, params: &[(String, String)]) -> ApiError {
    let at_key = |key: &str| params.iter().find(|(k, _)| k == key).cloned();
    let (param, given) = match kind {
        PathErrorKind::ParseErrorAtKey { key, .. }
        | PathErrorKind::DeserializeError { key, .. }
        | PathErrorKind::InvalidUtf8InPathParam { key } => {
            at_key(key).unwrap_or_else(|| (key.clone(), String::new()))
        }
        PathErrorKind::ParseErrorAtIndex { index, .. } => {
            params.get(*index).cloned().unwrap_or_default()
        }
        _ if params.len() == 1 => params[0].clone(),
        _ => ("path".to_owned(), String::new()),
    };
    let param = if param.is_empty() {
        "path".to_owned()
    } else {
        param
    };
    let expected = if std::any::type_name::<T>().contains("uuid::Uuid") {
        format!("must be a UUID, e.g. {UUID_EXAMPLE}")
    } else {
        match kind {
            PathErrorKind::ParseErrorAtKey { expected_type, .. }
            | PathErrorKind::ParseErrorAtIndex { expected_type, .. }
            | PathErrorKind::ParseError { expected_type, .. } => {
                format!("must be a {expected_type}")
            }
            PathErrorKind::DeserializeError { message, .. } => message.replace("variant", "value"),
            PathErrorKind::Message(message) => message.replace("variant", "value"),
            other => other.to_string(),
        }
    };
    let message = if given.is_empty() {
        expected
    } else {
        let shown: String = given.chars().take(64).collect();
        format!("{expected}; got {shown:?}")
    };
    ApiError::Validation {
        detail: format!("`{param}`: {message}"),
        errors: vec![FieldError::new(param, message)],
    }
}

/// The client's address: the peer, or — with `TRUST_FORWARDED_FOR=true`, behind a
/// proxy that appends it — the last `X-Forwarded-For` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if state.config.http.trust_forwarded_for
            && let Some(ip) = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|entry| entry.trim().parse::<IpAddr>().ok())
                .next_back()
        {
            return Ok(ClientIp(ip));
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!(
                    "the server was started without connect info"
                ))
            })?;
        Ok(ClientIp(peer))
    }
}
