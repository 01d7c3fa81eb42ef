//! The `uploads` queue: verifies a staged object against what the api recorded (size,
//! SHA-256, type by magic bytes), copies it to `stored/`, and — in one transaction —
//! marks the upload stored and enqueues its `scans` job under the same request. A
//! redelivery after that commit finds the upload stored and only tidies staging.
//! An object that fails verification rejects the upload (dead job, failed request).

use futures::StreamExt as _;
use sha2::{Digest as _, Sha256};
use shared::Config;
use shared::db::jobs::ClaimedJob;
use shared::db::uploads::{self, UploadRow};
use shared::domain::{UploadLocation, UploadStatus};
use shared::files::{self, FileType};
use shared::jobs::files::{ScanJob, UploadJob};
use shared::maintenance::dispatcher::push_committed;
use shared::queue::{Lane, QueueName};
use shared::redis::Redis;
use shared::storage::{Area, ObjectKey, Storage, StorageError};
use shared::telemetry::metric;
use sqlx::PgPool;

use crate::handler::{Handler, Outcome};

/// Bytes of the head the type is re-checked on (as the api did).
const HEAD_BYTES: usize = 8 * 1024;

pub struct Uploads {
    pool: PgPool,
    redis: Redis,
    storage: Storage,
    allowed: Vec<FileType>,
    scan_attempts: i32,
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
    pub fn new(config: &Config, pool: PgPool, redis: Redis, storage: Storage) -> Self {
        Uploads {
            pool,
            redis,
            storage,
            allowed: config.uploads.allowed_types.clone(),
            scan_attempts: i32::try_from(config.queues.scans.max_attempts).unwrap_or(i32::MAX),
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

    /// Marks the upload stored and enqueues its scan, in one transaction. Returns the
    /// scan job's ids (none if another delivery got there first).
    async fn store(&self, row: &UploadRow) -> Result<Vec<uuid::Uuid>, sqlx::Error> {
        let Some(request_id) = row.request_id else {
            return Ok(Vec::new());
        };
        let mut tx = self.pool.begin().await?;
        if !uploads::mark_stored(&mut *tx, row.id).await? {
            return Ok(Vec::new());
        }
        let payload = shared::db::jobs::Payload::of(&ScanJob { upload_id: row.id })
            .map_err(|err| sqlx::Error::Encode(Box::new(err)))?;
        let ids = shared::db::jobs::insert_many(
            &mut tx,
            request_id,
            QueueName::Scans,
            Lane::Priority,
            &[payload],
            self.scan_attempts,
        )
        .await?;
        shared::db::requests::add_jobs(&mut *tx, request_id, 1).await?;
        tx.commit().await?;
        Ok(ids)
    }

    async fn remove_staged(&self, staged: &ObjectKey) {
        if let Err(err) = self.storage.delete(staged).await {
            tracing::warn!(error = %err, key = %staged.as_path(), "cannot remove a staged object; it stays until removed by hand");
        }
    }
}

impl Handler for Uploads {
    async fn handle(&self, job: &ClaimedJob) -> Outcome {
        let payload: UploadJob = match serde_json::from_value(job.payload.clone()) {
            Ok(payload) => payload,
            Err(err) => return Outcome::Dead(format!("unreadable payload: {err}")),
        };
        let row = match uploads::find(&self.pool, payload.upload_id, None).await {
            Ok(Some(row)) => row,
            Ok(None) => return Outcome::Dead("the upload no longer exists".into()),
            Err(err) => return Outcome::Retry(format!("cannot load the upload: {err}")),
        };
        let staged = ObjectKey::new(Area::Staging, row.id);
        if row.location != UploadLocation::Staging || row.status == UploadStatus::Rejected {
            // Done by an earlier delivery: only staging may be left to tidy.
            self.remove_staged(&staged).await;
            return Outcome::Succeeded;
        }
        match self.verify(&row, &staged).await {
            Ok(()) => {}
            Err(Check::Failed(err)) => return Outcome::Retry(format!("storage: {err}")),
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
            return Outcome::Retry(format!("cannot store the object: {err}"));
        }
        let ids = match self.store(&row).await {
            Ok(ids) => ids,
            Err(err) => return Outcome::Retry(format!("cannot record the stored upload: {err}")),
        };
        if !ids.is_empty() {
            metrics::counter!(metric::JOBS_ENQUEUED_TOTAL, "queue" => QueueName::Scans.as_str())
                .increment(ids.len() as u64);
            push_committed(
                &self.pool,
                &self.redis,
                QueueName::Scans,
                Lane::Priority,
                &ids,
            )
            .await;
        }
        self.remove_staged(&staged).await;
        Outcome::Succeeded
    }
}
