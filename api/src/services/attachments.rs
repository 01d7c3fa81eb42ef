//! Attachments from uploads: a message names the sender's uploads by id. Checked at
//! submission — each must be the sender's (another's is not found: 404, no existence
//! leak), not infected or rejected, and together within `ATTACHMENTS_MAX_BYTES` — and
//! an upload still being verified or scanned makes the message wait for it: its job
//! depends on the upload's unfinished jobs (the runtime's `waiting`, released when the
//! scan ends; see `db::jobs::lock_unfinished_of_requests`). The worker attaches the
//! stored bytes once the upload is clean, or fails the message with the reason.

use shared::db::uploads;
use shared::domain::{Principal, UploadStatus};
use shared::problem::FieldError;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// What a submission's attachments need.
#[derive(Debug, Default)]
pub struct Checked {
    pub ids: Vec<Uuid>,
    /// The requests (upload, then scan) of attachments not yet scanned: the message
    /// waits for their jobs.
    pub wait_for: Vec<Uuid>,
}

/// Checks `ids` (the field `attachments`) for `user`.
pub async fn check(
    state: &AppState,
    user: &Principal,
    ids: Vec<Uuid>,
) -> Result<Checked, ApiError> {
    if ids.is_empty() {
        return Ok(Checked::default());
    }
    let rows = uploads::owned(&state.pool, user.id, &ids).await?;
    let mut errors = Vec::new();
    let mut wait_for = Vec::new();
    let mut total: u64 = 0;
    for (i, id) in ids.iter().enumerate() {
        let Some(row) = rows.iter().find(|r| r.id == *id) else {
            return Err(ApiError::NotFound(format!("no upload {id}")));
        };
        total = total.saturating_add(u64::try_from(row.size_bytes).unwrap_or(0));
        match row.status {
            UploadStatus::Clean => {}
            UploadStatus::PendingScan => wait_for.extend(row.request_id),
            UploadStatus::Infected => errors.push(FieldError::new(
                format!("attachments[{i}]"),
                "the upload is infected (quarantined): it cannot be attached",
            )),
            UploadStatus::Rejected => errors.push(FieldError::new(
                format!("attachments[{i}]"),
                "the upload was rejected: it cannot be attached",
            )),
        }
    }
    let max = state.config.mail.attachments_max_bytes;
    if total > max {
        errors.push(FieldError::new(
            "attachments",
            format!("together {total} bytes, more than the {max} allowed"),
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Unprocessable {
            detail: "the attachments cannot be sent".into(),
            errors,
        });
    }
    wait_for.sort_unstable();
    wait_for.dedup();
    Ok(Checked { ids, wait_for })
}
