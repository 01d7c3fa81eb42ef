//! Uploads: a file is streamed to staging (never held whole in memory) while its size
//! and SHA-256 are computed and its type is decided by magic bytes; then one
//! transaction records the upload, its request and its `uploads` job. Limits: the
//! file size (`UPLOAD_MAX_BYTES`, checked as bytes arrive), the owner's quota
//! (`UPLOAD_QUOTA_BYTES`) and uploads per hour (`UPLOADS_PER_HOUR`). The same content
//! twice by one owner is one upload: the second request gets the first upload back.
//! Files are served only while `clean`; reading checks ownership (another user's
//! upload is not found).

use shared::domain::Principal;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use sha2::{Digest as _, Sha256};
use shared::db::uploads::{self, NewUpload, UploadFilter, UploadRow};
use shared::domain::{Permission, RequestKind, UploadLocation, UploadStatus};
use shared::files::{self, FileType};
use shared::jobs::NewJob;
use shared::jobs::files::{ScanJob, UploadJob};
use shared::storage::{Area, ObjectKey, StorageError};
use shared::telemetry::metric;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::ApiError;
use crate::services::operations::{self, Action, Operator};
use crate::services::requests::{self, Accepted, Submission};
use crate::services::upload_slots;
use crate::state::AppState;

/// Bytes of the head kept to decide the type.
const HEAD_BYTES: usize = 8 * 1024;
/// The per-hour window of `UPLOADS_PER_HOUR`.
const WINDOW: Duration = Duration::from_secs(3600);

/// A file as it arrived, staged under `staging/<id>`.
#[derive(Debug)]
pub struct Staged {
    pub id: Uuid,
    pub size: u64,
    pub sha256: [u8; 32],
    pub file_type: FileType,
    pub file_name: String,
}

/// What `POST /uploads` made of a file.
#[derive(Debug)]
pub enum Created {
    /// A new upload, on its way to storage and the scanner.
    New(UploadRow),
    /// The owner already had this content: that upload, unchanged.
    Existing(UploadRow),
}

pub(crate) fn storage_error(err: StorageError) -> ApiError {
    match err {
        StorageError::NotFound(what) => {
            ApiError::Internal(anyhow::anyhow!("a stored object is missing: {what}"))
        }
        other => {
            tracing::warn!(error = %other, "storage failed");
            ApiError::DependencyUnavailable("storage")
        }
    }
}

/// Refuses early, before any byte is read, an owner past the hourly limit or the
/// quota (with the declared body size, when known) or with `UPLOAD_MAX_IN_FLIGHT`
/// uploads in flight; else takes an in-flight slot, to be held until the request ends
/// (`None`: Redis could not say, let through). The limits are checked again under the
/// owner's lock in [`create`].
pub async fn admit(
    state: &AppState,
    owner: Uuid,
    expected: Option<u64>,
) -> Result<Option<upload_slots::Slot>, ApiError> {
    let usage = uploads::usage(&state.pool, owner, OffsetDateTime::now_utc() - WINDOW).await?;
    check_limits(state, usage, expected.unwrap_or(0))?;
    let limits = &state.config.uploads;
    upload_slots::take(&state.redis, owner, limits.max_in_flight, limits.timeout).await
}

fn check_limits(state: &AppState, usage: uploads::Usage, adding: u64) -> Result<(), ApiError> {
    let limits = &state.config.uploads;
    if u64::try_from(usage.recent).unwrap_or(0) >= u64::from(limits.per_hour) {
        return Err(ApiError::RateLimited(WINDOW / 4));
    }
    let held = u64::try_from(usage.bytes).unwrap_or(0);
    if held.saturating_add(adding) > limits.quota_bytes {
        return Err(ApiError::QuotaExceeded(format!(
            "you keep {held} bytes of uploads; the quota is {} bytes",
            limits.quota_bytes
        )));
    }
    Ok(())
}

/// Streams one file into staging. Past `UPLOAD_MAX_BYTES`, or once the head shows a
/// type that is refused, reading stops and the partial object is removed.
pub async fn stage<S>(
    state: &AppState,
    chunks: S,
    declared_type: Option<&str>,
    raw_name: Option<&str>,
) -> Result<Staged, ApiError>
where
    S: Stream<Item = Result<Bytes, ApiError>> + Unpin,
{
    let id = Uuid::now_v7();
    let file_name = files::sanitize_file_name(raw_name.unwrap_or_default());
    let key = ObjectKey::new(Area::Staging, id);
    let mut writer = state.storage.writer(&key).await.map_err(storage_error)?;
    let received = receive(state, chunks, &mut writer, declared_type, &file_name).await;
    match received {
        Ok((size, sha256, file_type)) => {
            writer.finish().await.map_err(storage_error)?;
            Ok(Staged {
                id,
                size,
                sha256,
                file_type,
                file_name,
            })
        }
        Err(err) => {
            if let Err(abort) = writer.abort().await {
                tracing::warn!(error = %abort, upload_id = %id, "cannot remove a partial upload");
            }
            Err(err)
        }
    }
}

async fn receive<S>(
    state: &AppState,
    mut chunks: S,
    writer: &mut shared::storage::ObjectWriter,
    declared_type: Option<&str>,
    file_name: &str,
) -> Result<(u64, [u8; 32], FileType), ApiError>
where
    S: Stream<Item = Result<Bytes, ApiError>> + Unpin,
{
    let limits = &state.config.uploads;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut head = Vec::with_capacity(HEAD_BYTES);
    let mut file_type = None;
    let name = Some(file_name);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        if size > limits.max_bytes {
            return Err(ApiError::PayloadTooLarge(format!(
                "the file is larger than {} bytes",
                limits.max_bytes
            )));
        }
        if file_type.is_none() {
            let take = (HEAD_BYTES - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
            if head.len() == HEAD_BYTES {
                file_type = Some(detect(state, &head, declared_type, name)?);
            }
        }
        hasher.update(&chunk);
        writer.write(chunk).await.map_err(storage_error)?;
    }
    if size == 0 {
        return Err(ApiError::validation("the file is empty"));
    }
    let file_type = match file_type {
        Some(file_type) => file_type,
        None => detect(state, &head, declared_type, name)?,
    };
    Ok((size, hasher.finalize().into(), file_type))
}

fn detect(
    state: &AppState,
    head: &[u8],
    declared_type: Option<&str>,
    file_name: Option<&str>,
) -> Result<FileType, ApiError> {
    files::detect(
        head,
        declared_type,
        file_name,
        &state.config.uploads.allowed_types,
    )
    .map_err(|rejection| ApiError::UnsupportedMediaType(rejection.to_string()))
}

/// Records a staged file: under the owner's lock, checks the limits and the same
/// content, then inserts the request, the upload and its `uploads` job in one
/// transaction. The staged object is removed when nothing refers to it.
pub async fn create(
    state: &AppState,
    user: &Principal,
    staged: Staged,
    description: Option<String>,
    callback_url: Option<String>,
    correlation_id: Option<String>,
) -> Result<Created, ApiError> {
    let result = record(
        state,
        user,
        &staged,
        description,
        callback_url,
        correlation_id,
    )
    .await;
    if !matches!(result, Ok(Created::New(_))) {
        discard(state, staged.id).await;
    }
    result
}

/// Removes a staged object nothing refers to (best effort: logged on failure).
pub async fn discard(state: &AppState, id: Uuid) {
    if let Err(err) = state
        .storage
        .delete(&ObjectKey::new(Area::Staging, id))
        .await
    {
        tracing::warn!(error = %err, upload_id = %id, "cannot remove a staged upload");
    }
}

async fn record(
    state: &AppState,
    user: &Principal,
    staged: &Staged,
    description: Option<String>,
    callback_url: Option<String>,
    correlation_id: Option<String>,
) -> Result<Created, ApiError> {
    let mut tx = state.pool.begin().await?;
    uploads::lock_owner(&mut tx, user.id).await?;
    if let Some(existing) = uploads::find_by_content(&mut *tx, user.id, &staged.sha256).await? {
        metrics::counter!(metric::UPLOADS_TOTAL, "outcome" => "duplicate").increment(1);
        return Ok(Created::Existing(existing));
    }
    let usage = uploads::usage(&mut *tx, user.id, OffsetDateTime::now_utc() - WINDOW).await?;
    check_limits(state, usage, staged.size)?;
    let submission = Submission {
        owner: user.id,
        kind: RequestKind::Upload,
        name: Some(staged.file_name.clone()),
        correlation_id,
        content: None,
        send_at: None,
        jobs: vec![NewJob::of(&UploadJob {
            upload_id: staged.id,
        })?],
        quota: None,
        callback_url,
        wait_for: Vec::new(),
    };
    let (request, enqueued) = requests::enqueue(&mut tx, state, submission).await?;
    let size = i64::try_from(staged.size).map_err(|_| ApiError::validation("file too large"))?;
    let row = uploads::insert(
        &mut *tx,
        &NewUpload {
            id: staged.id,
            owner_id: user.id,
            request_id: request.id,
            file_name: &staged.file_name,
            description: description.as_deref(),
            size_bytes: size,
            sha256: &staged.sha256,
            file_type: staged.file_type.name(),
        },
    )
    .await?
    .ok_or_else(|| ApiError::Conflict("the same file is being uploaded; retry".into()))?;
    tx.commit().await?;
    metrics::counter!(metric::UPLOADS_TOTAL, "outcome" => "accepted").increment(1);
    metrics::counter!(metric::UPLOAD_BYTES_TOTAL).increment(staged.size);
    enqueued.dispatch(&state.pool, &state.redis).await;
    Ok(Created::New(row))
}

/// The caller's upload, or not found.
pub async fn find(state: &AppState, user: &Principal, id: Uuid) -> Result<UploadRow, ApiError> {
    uploads::find(&state.pool, id, Some(user.id))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no upload {id}")))
}

/// One page of the caller's uploads, newest first; one row more than `limit` tells
/// whether another page follows.
pub async fn list(
    state: &AppState,
    user: &Principal,
    after: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> Result<(Vec<UploadRow>, bool), ApiError> {
    let mut rows = uploads::list(&state.pool, user.id, after, limit + 1).await?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    Ok((rows, more))
}

/// The bytes of a clean upload: its size and a stream of its object.
pub async fn content(
    state: &AppState,
    row: &UploadRow,
) -> Result<
    (
        u64,
        futures::stream::BoxStream<'static, Result<Bytes, StorageError>>,
    ),
    ApiError,
> {
    match row.status {
        UploadStatus::Clean => {}
        UploadStatus::PendingScan => return Err(ApiError::ScanPending),
        UploadStatus::Infected => return Err(ApiError::Quarantined),
        UploadStatus::Rejected => {
            return Err(ApiError::Conflict(
                "the upload was rejected when it was verified; it has no content".into(),
            ));
        }
    }
    let key = ObjectKey::new(Area::Stored, row.id);
    state.storage.read_stream(&key).await.map_err(storage_error)
}

/// A rescan of one of the caller's uploads with the current rules.
pub async fn rescan(
    state: &AppState,
    user: &Principal,
    upload_id: Uuid,
    callback_url: Option<String>,
    correlation_id: Option<String>,
) -> Result<Accepted, ApiError> {
    let row = find(state, user, upload_id).await?;
    match (row.status, row.location) {
        (UploadStatus::Rejected, _) => {
            return Err(ApiError::Conflict(
                "the upload was rejected; there is nothing to scan".into(),
            ));
        }
        (_, shared::domain::UploadLocation::Staging) => return Err(ApiError::ScanPending),
        _ => {}
    }
    let submission = Submission {
        owner: user.id,
        kind: RequestKind::Scan,
        name: Some(format!("rescan {}", row.file_name)),
        correlation_id,
        content: None,
        send_at: None,
        jobs: vec![NewJob::of(&ScanJob { upload_id })?],
        quota: None,
        callback_url,
        wait_for: Vec::new(),
    };
    requests::submit(state, submission, None).await
}

/// Any account's upload (an operator's view), or not found.
pub async fn find_any(state: &AppState, id: Uuid) -> Result<UploadRow, ApiError> {
    uploads::find(&state.pool, id, None)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no upload {id}")))
}

/// One page of every account's uploads, newest first (an operator's view); one row
/// more than `filter.limit` tells whether another page follows.
pub async fn list_all(
    state: &AppState,
    filter: UploadFilter,
) -> Result<(Vec<UploadRow>, bool), ApiError> {
    let limit = usize::try_from(filter.limit).unwrap_or(0);
    let probe = UploadFilter {
        limit: filter.limit.saturating_add(1),
        ..filter
    };
    let mut rows = uploads::list_all(&state.pool, &probe).await?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    Ok((rows, more))
}

/// An admin rescans any account's upload with the current rules (the console's
/// Rescan). The scan's request is the admin's, as rescan-all's is, not the owner's:
/// the owner's request list holds only what they asked for (and no webhook of theirs
/// fires for work they did not ask for), while the admin can follow the scan there.
/// The upload is locked while its state is checked: one that was rejected, or is
/// still in staging (its first scan follows its move to storage), is refused with a
/// conflict and nothing is queued. The request, its `scans` job and the audit row
/// (`rescan` of `upload:<id>`; the details name the owner and the request) commit in
/// one transaction.
pub async fn rescan_as_admin(
    state: &AppState,
    admin: &Principal,
    upload_id: Uuid,
    correlation_id: Option<String>,
) -> Result<Accepted, ApiError> {
    admin.check(Permission::ManageQueues)?;
    let mut tx = state.pool.begin().await?;
    let row = uploads::lock(&mut tx, upload_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no upload {upload_id}")))?;
    match (row.status, row.location) {
        (UploadStatus::Rejected, _) => {
            return Err(ApiError::Conflict(
                "the upload was rejected when it was verified: it has no object to scan".into(),
            ));
        }
        (_, UploadLocation::Staging) => {
            return Err(ApiError::Conflict(
                "the upload is still in staging: its first scan follows once it is verified \
                 and stored; there is nothing to rescan until then"
                    .into(),
            ));
        }
        _ => {}
    }
    let operator = Operator::admin(admin, correlation_id.clone());
    let submission = Submission {
        owner: admin.id,
        kind: RequestKind::Scan,
        name: Some(format!("rescan {}", row.file_name)),
        correlation_id,
        content: None,
        send_at: None,
        jobs: vec![NewJob::of(&ScanJob { upload_id })?],
        quota: None,
        callback_url: None,
        wait_for: Vec::new(),
    };
    let (request, enqueued) = requests::enqueue(&mut tx, state, submission).await?;
    operations::record(
        &mut *tx,
        &operator,
        Action::Rescan,
        &format!("upload:{upload_id}"),
        serde_json::json!({ "owner_id": row.owner_id, "request_id": request.id }),
    )
    .await?;
    tx.commit().await?;
    operations::counted(Action::Rescan);
    enqueued.dispatch(&state.pool, &state.redis).await;
    tracing::info!(actor = operator.actor(), upload = %upload_id, request = %request.id, "upload rescan queued by an admin");
    Ok(Accepted::from(&request))
}

/// Rescans every stored upload: one request, followed like a campaign, carried out by
/// an operation (a job of the `operations` queue) that adds the scans in chunks; the
/// request's total is the uploads in scope. Bulk work: the scans take the admin's turns
/// in the scans queue's fair lane, so new uploads' scans go first.
pub async fn rescan_all(
    state: &AppState,
    admin: &Principal,
    correlation_id: Option<String>,
) -> Result<Accepted, ApiError> {
    let mut tx = state.pool.begin().await?;
    let submission = Submission {
        owner: admin.id,
        kind: RequestKind::Scan,
        name: Some("rescan all uploads".into()),
        correlation_id: correlation_id.clone(),
        content: None,
        send_at: None,
        jobs: Vec::new(),
        quota: None,
        callback_url: None,
        wait_for: Vec::new(),
    };
    let (mut request, mut enqueued) = requests::enqueue(&mut tx, state, submission).await?;
    let (operation, started) = shared::jobs::operations::start_rescan_all(
        &mut tx,
        &state.config.queues,
        &format!("admin:{}", admin.id),
        request.id,
        correlation_id.as_deref(),
    )
    .await?;
    request.total = i32::try_from(operation.total).unwrap_or(i32::MAX);
    if operation.total == 0 {
        // Nothing to scan: the request is done now, and so is the operation.
        let finished =
            shared::db::requests::finish(&mut tx, &state.config.queues, &[request.id]).await?;
        enqueued.merge(finished.webhooks);
        if let Some(row) = finished.requests.into_iter().next() {
            request = row;
        }
    }
    enqueued.merge(started);
    tx.commit().await?;
    enqueued.dispatch(&state.pool, &state.redis).await;
    tracing::info!(request = %request.id, operation = %operation.id, total = operation.total, "rescan of every upload started");
    Ok(Accepted::from(&request))
}
