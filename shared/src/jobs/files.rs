//! Payloads of the `uploads` and `scans` queues: both name the upload; everything
//! else (size, checksum, type, where its object is) is in its row.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Job;
use crate::queue::QueueName;

/// `uploads`: verify the staged object and move it to storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadJob {
    pub upload_id: Uuid,
}

/// `scans`: scan the upload's object with the current rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanJob {
    pub upload_id: Uuid,
}

impl Job for UploadJob {
    const QUEUE: QueueName = QueueName::Uploads;
}

impl Job for ScanJob {
    const QUEUE: QueueName = QueueName::Scans;
}
