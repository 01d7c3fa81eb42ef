//! The `uploads` queue: verifies a staged object against what the api recorded (size,
//! SHA-256, type by magic bytes), copies it to `stored/`, marks the upload stored and
//! succeeds with its `scans` job as the follow-up: the completer inserts the scan,
//! counted on the same request, in the transaction that records this success. A
//! redelivery (this success was never recorded) finds the upload stored and returns
//! the scan again; a recorded success is never redelivered, so the scan is made once.
//! An object that fails verification rejects the upload (dead job, failed request);
//! running its job again says so again — it never pretends to succeed.

use futures::StreamExt as _;
use sha2::{Digest as _, Sha256};
use shared::Config;
use shared::db::jobs::ClaimedJob;
use shared::db::uploads::{self, UploadRow};
use shared::domain::{UploadLocation, UploadStatus};
use shared::files::{self, FileType};
use shared::jobs::NewJob;
use shared::jobs::files::{ScanJob, UploadJob};
use shared::storage::{Area, ObjectKey, Storage, StorageError};
use sqlx::PgPool;

use crate::handler::{Handler, Outcome};

/// Bytes of the head the type is re-checked on (as the api did).
const HEAD_BYTES: usize = 8 * 1024;

pub struct Uploads {
    pool: PgPool,
    storage: Storage,
    allowed: Vec<FileType>,
}

/// Why a staged object is refused.
enum Check {
    Rejected(String),
    Failed(StorageError),
}

impl From<StorageError> for Check {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::NotFound(what) => {
                Check::Rejected(format!("the staged object is missing: {what}"))
            }
            other => Check::Failed(other),
        }
    }
}

impl Uploads {
    pub fn new(config: &Config, pool: PgPool, storage: Storage) -> Self {
        Uploads {
            pool,
            storage,
            allowed: config.uploads.allowed_types.clone(),
        }
    }

    async fn verify(&self, row: &UploadRow, staged: &ObjectKey) -> Result<(), Check> {
        let (size, mut stream) = self.storage.read_stream(staged).await?;
        if i64::try_from(size).ok() != Some(row.size_bytes) {
            return Err(Check::Rejected(format!(
                "the staged object has {size} bytes, {} were received",
                row.size_bytes
            )));
        }
        let mut hasher = Sha256::new();
        let mut head = Vec::with_capacity(HEAD_BYTES);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            let take = (HEAD_BYTES - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
            hasher.update(&chunk);
        }
        if hasher.finalize()[..] != row.sha256[..] {
            return Err(Check::Rejected(
                "the staged object's SHA-256 differs from the one received".into(),
            ));
        }
        let declared = row.file_type.parse::<FileType>().ok().map(FileType::mime);
        match files::detect(&head, declared, Some(&row.file_name), &self.allowed) {
            Ok(found) if found.name() == row.file_type => Ok(()),
            Ok(found) => Err(Check::Rejected(format!(
                "the staged object is {}, {} was recorded",
                found.name(),
                row.file_type
            ))),
            Err(rejection) => Err(Check::Rejected(rejection.to_string())),
        }
    }

    /// Success, with the stored upload's scan to follow (counted on its request).
    fn scan_follows(row: &UploadRow) -> Outcome {
        let Some(request_id) = row.request_id else {
            return Outcome::Succeeded;
        };
        match NewJob::of(&ScanJob { upload_id: row.id }) {
            Ok(scan) => Outcome::SucceededWith(vec![scan.for_request(request_id)]),
            Err(err) => Outcome::Dead(format!("cannot encode the scan job: {err}")),
        }
    }

    /// A storage failure: the whole queue waits for the storage when it does not answer
    /// a listing (no attempt spent), else this job is retried.
    async fn storage_failed(&self, error: String) -> Outcome {
        if self.storage.check().await.is_err() {
            Outcome::Blocked {
                dependency: "storage",
                reason: error,
            }
        } else {
            Outcome::Retry(error)
        }
    }

    async fn remove_staged(&self, staged: &ObjectKey) {
        if let Err(err) = self.storage.delete(staged).await {
            tracing::warn!(error = %err, key = %staged.as_path(), "cannot remove a staged object; it stays until removed by hand");
        }
    }
}

impl Handler for Uploads {
    type Job = UploadJob;

    async fn handle(&self, _job: &ClaimedJob, payload: UploadJob) -> Outcome {
        let row = match uploads::find(&self.pool, payload.upload_id, None).await {
            Ok(Some(row)) => row,
            Ok(None) => return Outcome::Dead("the upload no longer exists".into()),
            Err(err) => return Outcome::Retry(format!("cannot load the upload: {err}")),
        };
        let staged = ObjectKey::new(Area::Staging, row.id);
        if row.status == UploadStatus::Rejected {
            self.remove_staged(&staged).await;
            let reason = row.error.as_deref().unwrap_or("verification failed");
            return Outcome::Dead(format!("the upload was rejected: {reason}"));
        }
        if row.location != UploadLocation::Staging {
            // Stored by an attempt whose success was not recorded: only staging may be
            // left to tidy, and the scan still follows.
            self.remove_staged(&staged).await;
            return Self::scan_follows(&row);
        }
        match self.verify(&row, &staged).await {
            Ok(()) => {}
            Err(Check::Failed(err)) => return self.storage_failed(format!("storage: {err}")).await,
            Err(Check::Rejected(reason)) => {
                return match uploads::reject(&self.pool, row.id, &reason).await {
                    Ok(_) => {
                        tracing::warn!(upload_id = %row.id, reason = %reason, "upload rejected");
                        self.remove_staged(&staged).await;
                        Outcome::Dead(reason)
                    }
                    Err(err) => Outcome::Retry(format!("cannot reject the upload: {err}")),
                };
            }
        }
        let stored = ObjectKey::new(Area::Stored, row.id);
        if let Err(err) = self.storage.copy(&staged, &stored).await {
            return self
                .storage_failed(format!("cannot store the object: {err}"))
                .await;
        }
        if let Err(err) = uploads::mark_stored(&self.pool, row.id).await {
            return Outcome::Retry(format!("cannot record the stored upload: {err}"));
        }
        self.remove_staged(&staged).await;
        Self::scan_follows(&row)
    }

    async fn probe(&self, dependency: &'static str) -> bool {
        dependency != "storage" || self.storage.check().await.is_ok()
    }
}
