//! A message's attachments: the sender's uploads, attached with their stored bytes,
//! their sanitized file name and their detected type. Only a `clean` upload is
//! attached; an infected, rejected or never-scanned one fails the message, with the
//! reason, before anything is sent. A message with an attachment still being scanned
//! never gets here: its job waits for the scan (`waiting`, released when the scan's
//! job ends: `db::jobs::lock_unfinished_of_requests`).
//!
//! A campaign's attachments (the same for every message) are read from storage once
//! and kept for the campaign being sent; each message still checks the uploads'
//! status (a rescan may have quarantined one since).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use shared::db::uploads::{self, UploadRow};
use shared::domain::{UploadLocation, UploadStatus};
use shared::files::FileType;
use shared::storage::{Area, ObjectKey, Storage};
use sqlx::PgPool;
use uuid::Uuid;

/// One attachment, ready to go into a message.
#[derive(Debug, Clone)]
pub struct Attached {
    pub file_name: String,
    pub mime: &'static str,
    pub bytes: Bytes,
}

/// Why the attachments could not be attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Not to be sent: the message fails.
    Permanent(String),
    /// The database or the storage did not answer: try again.
    Transient(String),
}

pub struct Attachments {
    pool: PgPool,
    storage: Storage,
    /// The last campaign's attachments, by request.
    campaign: Mutex<Option<(Uuid, Arc<Vec<Attached>>)>>,
}

impl Attachments {
    pub fn new(pool: PgPool, storage: Storage) -> Self {
        Attachments {
            pool,
            storage,
            campaign: Mutex::new(None),
        }
    }

    /// `ids` (uploads of `owner`) as attachments; for a campaign (`campaign` its
    /// request), the bytes read once per campaign.
    pub async fn load(
        &self,
        owner: Uuid,
        ids: &[Uuid],
        campaign: Option<Uuid>,
    ) -> Result<Arc<Vec<Attached>>, Refused> {
        if ids.is_empty() {
            return Ok(Arc::new(Vec::new()));
        }
        let rows = uploads::owned(&self.pool, owner, ids)
            .await
            .map_err(|err| Refused::Transient(format!("cannot load the attachments: {err}")))?;
        let mut ordered: Vec<&UploadRow> = Vec::with_capacity(ids.len());
        for id in ids {
            let row = rows.iter().find(|r| r.id == *id).ok_or_else(|| {
                Refused::Permanent(format!("attachment {id}: the upload no longer exists"))
            })?;
            check(row)?;
            ordered.push(row);
        }
        if let Some(request) = campaign
            && let Ok(cache) = self.campaign.lock()
            && let Some((cached, attached)) = cache.as_ref()
            && *cached == request
        {
            return Ok(Arc::clone(attached));
        }
        let mut attached = Vec::with_capacity(ordered.len());
        for row in ordered {
            attached.push(self.read(row).await?);
        }
        let attached = Arc::new(attached);
        if let Some(request) = campaign
            && let Ok(mut cache) = self.campaign.lock()
        {
            *cache = Some((request, Arc::clone(&attached)));
        }
        Ok(attached)
    }

    async fn read(&self, row: &UploadRow) -> Result<Attached, Refused> {
        let key = ObjectKey::new(Area::Stored, row.id);
        let size = u64::try_from(row.size_bytes).unwrap_or(0);
        let bytes = self.storage.read_all(&key, size).await.map_err(|err| {
            Refused::Transient(format!("attachment {}: cannot read it: {err}", row.id))
        })?;
        let mime = row
            .file_type
            .parse::<FileType>()
            .map_or("application/octet-stream", FileType::mime);
        Ok(Attached {
            file_name: row.file_name.clone(),
            mime,
            bytes,
        })
    }
}

/// Only a clean, stored upload is attached.
fn check(row: &UploadRow) -> Result<(), Refused> {
    let refused = |why: &str| {
        Err(Refused::Permanent(format!(
            "attachment {} ({}) {why}: the message was not sent",
            row.id, row.file_name
        )))
    };
    match (row.status, row.location) {
        (UploadStatus::Clean, UploadLocation::Stored) => Ok(()),
        (UploadStatus::Infected, _) => refused("is infected (quarantined)"),
        (UploadStatus::Rejected, _) => refused("was rejected"),
        (UploadStatus::PendingScan, _) => refused("was never scanned clean (its scan failed)"),
        (UploadStatus::Clean, _) => refused("is not in storage"),
    }
}
