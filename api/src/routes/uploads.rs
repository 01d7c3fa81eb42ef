//! `/api/v1/uploads` and `/api/v1/scans`: upload a file (multipart, streamed), read
//! its status and verdict, download it once it is `clean`, list one's uploads, ask
//! for a rescan. Another user's upload is 404, not 403.

use axum::body::Body;
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Multipart, State};

use crate::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use shared::db::uploads::UploadRow;
use shared::domain::UploadStatus;
use shared::files::FileType;
use time::OffsetDateTime;
use uuid::Uuid;
use uuid::fmt::Hyphenated;

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::middleware::auth::{Authorized, perm};
use crate::routes::cursor::{self, Page};
use crate::services::requests::Accepted;
use crate::services::uploads::{self as service, Created};
use crate::services::webhooks;
use crate::state::AppState;

/// Room for the multipart framing and the `description` part around the file.
const MULTIPART_OVERHEAD: usize = 64 * 1024;
/// A refused upload's unread rest is read and discarded up to this many bytes, for at
/// most [`DRAIN_TIME`], so a client still sending reads the error instead of a reset
/// connection (a lingering close, as nginx does). Larger bodies are cut off.
const DRAIN_BYTES: usize = 16 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);
/// Characters of a `description`.
const MAX_DESCRIPTION_CHARS: usize = 1000;

/// The body limit of `POST /uploads`: the file limit plus the framing and what a
/// refusal drains. The file limit itself is checked as bytes arrive.
pub fn body_limit(max_file_bytes: u64) -> usize {
    usize::try_from(max_file_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(MULTIPART_OVERHEAD + DRAIN_BYTES)
}

/// Reads and discards what is left of a refused upload (bounded by the route's body
/// limit and [`DRAIN_TIME`]); nothing is kept.
async fn drain(multipart: &mut Multipart) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Ok(Some(mut field)) = multipart.next_field().await {
            while let Ok(Some(_)) = field.chunk().await {}
        }
    })
    .await;
}

pub fn routes(body_limit: usize) -> Router<AppState> {
    Router::new()
        .route(
            "/uploads",
            post(upload)
                .layer(DefaultBodyLimit::max(body_limit))
                .get(list),
        )
        .route("/uploads/{id}", get(show))
        .route("/uploads/{id}/content", get(download))
        .route("/scans", post(rescan))
}

/// An upload as clients see it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UploadView {
    pub id: Uuid,
    /// The client's file name, sanitized (metadata only: never a storage path).
    pub file_name: String,
    pub description: Option<String>,
    pub size_bytes: i64,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    /// The type its magic bytes showed: png, jpeg, gif, webp, pdf, text, csv, zip.
    pub file_type: String,
    /// The media type it is served with.
    pub content_type: String,
    /// pending_scan → clean | infected; rejected if the staged object failed verification.
    pub status: UploadStatus,
    /// The rules an `infected` verdict matched.
    pub rules: Vec<String>,
    /// Scans so far (rescans included).
    pub scans: i32,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub scanned_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// The request that carries its verification and first scan (follow it at
    /// `/api/v1/requests/{id}/events`); absent once that request was pruned.
    pub request_id: Option<Uuid>,
    /// This resource.
    pub location: String,
    /// Where its bytes are served once `clean`.
    pub content_url: String,
}

impl From<&UploadRow> for UploadView {
    fn from(row: &UploadRow) -> Self {
        let content_type = row
            .file_type
            .parse::<FileType>()
            .map(|t| t.mime().to_owned())
            .unwrap_or_else(|_| "application/octet-stream".to_owned());
        UploadView {
            id: row.id,
            file_name: row.file_name.clone(),
            description: row.description.clone(),
            size_bytes: row.size_bytes,
            sha256: row.sha256.iter().map(|b| format!("{b:02x}")).collect(),
            file_type: row.file_type.clone(),
            content_type,
            status: row.status,
            rules: row.rules.clone(),
            scans: row.scans,
            scanned_at: row.scanned_at,
            created_at: row.created_at,
            request_id: row.request_id,
            location: format!("/api/v1/uploads/{}", row.id),
            content_url: format!("/api/v1/uploads/{}/content", row.id),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page, as it was given: only a cursor this api
    /// issued is accepted (another is 400).
    #[param(pattern = "^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RescanRequest {
    /// One of the caller's uploads (another is 404) whose first scan has run (409
    /// while it is pending, or if the upload was rejected). Hyphenated, as the `uuid`
    /// format has it.
    #[schema(value_type = Uuid)]
    pub upload_id: Hyphenated,
    /// As an email's `callback_url`: one event when the rescan has finished.
    #[schema(max_length = 2048, examples("https://hooks.example.org/conveyor"))]
    pub callback_url: Option<String>,
}

/// The multipart form of `POST /uploads` (for the OpenAPI document): the parts
/// `upload` reads, no others.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The file: at least 1 byte (an empty file is 400) and at most `UPLOAD_MAX_BYTES`
    /// (a deployment setting: 413 past it, or past the account's `UPLOAD_QUOTA_BYTES`).
    /// Its type is decided by its content (magic bytes): a type off the allowlist, or a
    /// declared `Content-Type` or file extension that contradicts the content, is 415.
    // No `minLength`: schemathesis (scripts/check-contract) validates a multipart body
    // with its binary parts read as "", so it would take every body as schema-violating.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    /// Up to 1,000 characters; no control characters but LF (a CRLF line break, as
    /// browsers send one, is stored as LF; a lone CR is refused).
    #[schema(
        nullable = false,
        max_length = 1000,
        pattern = r"^[^\x00-\x09\x0B-\x1F\x7F-\x9F]*$",
        examples("Signed contract, second revision")
    )]
    pub description: Option<String>,
    /// Where to POST a signed `request.finished` event when the upload's request
    /// (verification and first scan) reaches its final state; as an email's
    /// `callback_url` (422 `validation_failed` or `webhook_secret_missing`).
    #[schema(
        nullable = false,
        max_length = 2048,
        examples("https://hooks.example.org/conveyor")
    )]
    pub callback_url: Option<String>,
}

fn multipart_error(err: MultipartError) -> ApiError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge("the upload is larger than the limit".into())
    } else {
        ApiError::validation(format!(
            "the multipart body is malformed: {}",
            err.body_text()
        ))
    }
}

fn with_location(status: StatusCode, row: &UploadRow) -> Response {
    let view = UploadView::from(row);
    let location = HeaderValue::from_str(&view.location)
        .unwrap_or_else(|_| HeaderValue::from_static("/api/v1/uploads"));
    (status, [(header::LOCATION, location)], Json(view)).into_response()
}

/// Uploads one file (multipart/form-data: a `file` part, an optional `description`).
/// The file is streamed to staging, verified and moved to storage by the `uploads`
/// job, then scanned by the `scans` job; it can be downloaded once `clean`.
#[utoipa::path(post, path = "/api/v1/uploads", tag = "uploads", security(("bearer" = [])),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, body = UploadView, description = "Received (`pending_scan`); `Location` names the upload"),
        (status = 200, body = UploadView, description = "The same content was uploaded before: that upload"),
        (status = 400, body = shared::problem::Problem, description = "no `file` part, an empty file, an unknown part or a malformed body"),
        (status = 413, body = shared::problem::Problem, description = "`payload_too_large` (past `UPLOAD_MAX_BYTES`) or `quota_exceeded`"),
        (status = 415, body = shared::problem::Problem, description = "not multipart, a type off the allowlist, or content contradicting the declared type or extension"),
        (status = 422, body = shared::problem::Problem, description = "`validation_failed` (a bad `callback_url`) or `webhook_secret_missing`"),
        (status = 429, body = shared::problem::Problem, description = "more than `UPLOADS_PER_HOUR` uploads in the last hour"),
    ))]
pub async fn upload(
    State(state): State<AppState>,
    Authorized(user, ..): Authorized<perm::Upload>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let max = state.config.uploads.max_bytes;
    let declared_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || ApiError::PayloadTooLarge(format!("the file is larger than {max} bytes"));
    if declared_length.is_some_and(|n| n > body_limit(max) as u64) {
        return Err(too_large());
    }
    let mut multipart = multipart.map_err(|rejection| {
        ApiError::UnsupportedMediaType(format!(
            "the body must be multipart/form-data: {}",
            rejection.body_text()
        ))
    })?;
    let mut staged = None;
    let mut description = None;
    let mut callback = None;
    // Held until this request ends: one of the owner's uploads in flight.
    let mut _slot = None;
    let result = async {
        if declared_length.is_some_and(|n| n > max.saturating_add(MULTIPART_OVERHEAD as u64)) {
            return Err(too_large());
        }
        _slot = service::admit(&state, user.id, declared_length).await?;
        while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
            match field.name() {
                Some("file") if staged.is_none() => {
                    let declared_type = field.content_type().map(str::to_owned);
                    let name = field.file_name().map(str::to_owned);
                    let chunks = std::pin::pin!(
                        futures::stream::poll_fn(move |cx| field.poll_next_unpin(cx))
                            .map(|chunk| chunk.map_err(multipart_error))
                    );
                    staged = Some(
                        service::stage(&state, chunks, declared_type.as_deref(), name.as_deref())
                            .await?,
                    );
                }
                Some("file") => return Err(ApiError::validation("send exactly one `file` part")),
                Some("description") if description.is_none() => {
                    // Browsers send a text box's line breaks as CRLF: stored as LF.
                    let text = field
                        .text()
                        .await
                        .map_err(multipart_error)?
                        .replace("\r\n", "\n");
                    if text.chars().count() > MAX_DESCRIPTION_CHARS
                        || text.chars().any(|c| c.is_control() && c != '\n')
                    {
                        return Err(ApiError::validation(format!(
                            "description: at most {MAX_DESCRIPTION_CHARS} characters, no control characters but newlines"
                        )));
                    }
                    description = Some(text);
                }
                Some("callback_url") if callback.is_none() => {
                    callback = Some(field.text().await.map_err(multipart_error)?);
                }
                other => {
                    return Err(ApiError::validation(format!(
                        "unexpected part `{}`: send `file` and, optionally, `description` and `callback_url`",
                        other.unwrap_or_default()
                    )));
                }
            }
        }
        webhooks::checked_callback(&state, user.id, "callback_url", callback.as_deref()).await
    }
    .await;
    let (staged, callback_url) = match (result, staged) {
        (Ok(callback_url), Some(staged)) => (staged, callback_url),
        (Ok(_), None) => return Err(ApiError::validation("the form has no `file` part")),
        (Err(err), staged) => {
            if let Some(staged) = staged {
                service::discard(&state, staged.id).await;
            }
            drain(&mut multipart).await;
            return Err(err);
        }
    };
    match service::create(
        &state,
        &user,
        staged,
        description,
        callback_url,
        super::correlation(&headers),
    )
    .await?
    {
        Created::New(row) => Ok(with_location(StatusCode::ACCEPTED, &row)),
        Created::Existing(row) => Ok(with_location(StatusCode::OK, &row)),
    }
}

/// Lists the caller's uploads, newest first, a keyset page at a time.
#[utoipa::path(get, path = "/api/v1/uploads", tag = "uploads", params(ListQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<UploadView>), (status = 400, body = shared::problem::Problem)))]
pub async fn list(
    State(state): State<AppState>,
    Authorized(user, ..): Authorized<perm::Upload>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<UploadView>>, ApiError> {
    let limit = cursor::page_size(query.limit)?;
    let after = query.cursor.as_deref().map(cursor::decode).transpose()?;
    let (rows, more) = service::list(&state, &user, after, limit).await?;
    Ok(Json(Page::keyset(
        rows,
        more,
        |row| (row.created_at, row.id),
        |row| UploadView::from(&row),
    )))
}

/// One upload: status, verdict and the rules it matched.
#[utoipa::path(get, path = "/api/v1/uploads/{id}", tag = "uploads", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = UploadView), (status = 404, body = shared::problem::Problem)))]
pub async fn show(
    State(state): State<AppState>,
    Authorized(user, ..): Authorized<perm::Upload>,
    Path(id): Path<Uuid>,
) -> Result<Json<UploadView>, ApiError> {
    let row = service::find(&state, &user, id).await?;
    Ok(Json(UploadView::from(&row)))
}

/// `attachment` with an ASCII fallback name and the UTF-8 name (RFC 6266 / 8187).
fn content_disposition(file_name: &str) -> HeaderValue {
    let ascii: String = file_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ' ' | '(' | ')') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = file_name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// The file's bytes, streamed, only when `clean`: as an attachment with `nosniff`
/// and the type its content showed.
#[utoipa::path(get, path = "/api/v1/uploads/{id}/content", tag = "uploads", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses(
        (status = 200, content_type = "application/octet-stream", description = "The bytes, `Content-Disposition: attachment` with the sanitized file name, `Content-Type` the type its content showed (the upload's `file_type`)"),
        (status = 403, body = shared::problem::Problem, description = "`quarantined`: a scan found it infected"),
        (status = 404, body = shared::problem::Problem),
        (status = 409, body = shared::problem::Problem, description = "`scan_pending` (not scanned yet) or `conflict` (rejected)"),
    ))]
pub async fn download(
    State(state): State<AppState>,
    Authorized(user, ..): Authorized<perm::Upload>,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let row = service::find(&state, &user, id).await?;
    let (size, stream) = service::content(&state, &row).await?;
    let content_type = row
        .file_type
        .parse::<FileType>()
        .map(|t| t.mime())
        .unwrap_or("application/octet-stream");
    let body = Body::from_stream(stream.map(|chunk| chunk.map_err(std::io::Error::other)));
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CONTENT_LENGTH, HeaderValue::from(size)),
            (
                header::CONTENT_DISPOSITION,
                content_disposition(&row.file_name),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; sandbox"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-store"),
            ),
        ],
        body,
    )
        .into_response())
}

/// Scans one of the caller's uploads again with the current rules; follow the
/// returned request. The upload keeps its status until the new verdict.
#[utoipa::path(post, path = "/api/v1/scans", tag = "uploads", request_body = RescanRequest, security(("bearer" = [])),
    responses(
        (status = 202, body = Accepted, description = "Queued; `Location` names the request"),
        (status = 404, body = shared::problem::Problem),
        (status = 409, body = shared::problem::Problem, description = "`scan_pending` (its first scan has not run) or `conflict` (rejected)"),
        (status = 422, body = shared::problem::Problem, description = "`validation_failed` (a bad `callback_url`) or `webhook_secret_missing`"),
    ))]
pub async fn rescan(
    State(state): State<AppState>,
    Authorized(user, ..): Authorized<perm::Scan>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RescanRequest>,
) -> Result<Response, ApiError> {
    let callback_url = webhooks::checked_callback(
        &state,
        user.id,
        "callback_url",
        body.callback_url.as_deref(),
    )
    .await?;
    let accepted = service::rescan(
        &state,
        &user,
        body.upload_id.into_uuid(),
        callback_url,
        super::correlation(&headers),
    )
    .await?;
    Ok(super::accepted(accepted))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{MAX_DESCRIPTION_CHARS, RescanRequest};
    use crate::routes::emails::spec_check::{class, schema};

    #[test]
    fn the_form_documents_what_upload_reads() {
        let form = schema("UploadForm");
        assert_eq!(
            form["additionalProperties"], false,
            "only `file` and `description`"
        );
        assert_eq!(form["required"], json!(["file"]));
        let description = &form["properties"]["description"];
        assert_eq!(description["type"], "string", "a form part is never null");
        assert_eq!(description["maxLength"], MAX_DESCRIPTION_CHARS);
        let pattern = format!("^[^{}]*$", class(|c| c.is_control() && c != '\n'));
        assert_eq!(description["pattern"], pattern.as_str());
    }

    #[test]
    fn an_upload_id_is_a_hyphenated_uuid_as_its_format_says() {
        let id = "0190a6f4-e89b-72d3-a456-426614174000";
        for good in [id.to_owned(), id.to_uppercase()] {
            let body: RescanRequest =
                serde_json::from_value(json!({ "upload_id": good })).expect("hyphenated");
            assert_eq!(body.upload_id.into_uuid().to_string(), id);
        }
        for bad in [
            id.replace('-', ""),
            format!("{{{id}}}"),
            format!("urn:uuid:{id}"),
            String::new(),
        ] {
            assert!(
                serde_json::from_value::<RescanRequest>(json!({ "upload_id": bad })).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            schema("RescanRequest")["properties"]["upload_id"]["format"],
            "uuid"
        );
    }
}
