//! What `POST /uploads` accepts: the size limit, the allowed types, each owner's
//! quota and rate, and the request deadline.

use std::time::Duration;

use super::env::Env;
use super::{ConfigError, MIB};

/// What `POST /uploads` accepts.
#[derive(Debug)]
pub struct UploadsConfig {
    /// The hard limit of one file; reading stops the moment it is passed.
    pub max_bytes: u64,
    /// Types decided by magic bytes that are accepted.
    pub allowed_types: Vec<crate::files::FileType>,
    /// Bytes one owner may keep (every upload that is not rejected).
    pub quota_bytes: u64,
    /// Uploads one owner may create per rolling hour.
    pub per_hour: u32,
    /// The deadline of one `POST /uploads` (the body included).
    pub timeout: Duration,
    /// Uploads one owner may have in flight at once, across every api replica.
    pub max_in_flight: u32,
}

impl UploadsConfig {
    pub(crate) fn read<F: Fn(&str) -> Option<String>>(
        env: &Env<'_, F>,
    ) -> Result<Self, ConfigError> {
        Ok(UploadsConfig {
            max_bytes: env.parsed_range("UPLOAD_MAX_BYTES", 25 * MIB, 1..=5 * 1024 * MIB)?,
            allowed_types: env
                .list("UPLOAD_ALLOWED_TYPES", "png,jpeg,gif,webp,pdf,text,csv,zip")?,
            quota_bytes: env.parsed_range("UPLOAD_QUOTA_BYTES", 1024 * MIB, 1..=u64::MAX / 2)?,
            per_hour: env.parsed_range("UPLOADS_PER_HOUR", 100, 1..=1_000_000)?,
            timeout: env.seconds_in("UPLOAD_TIMEOUT_SECS", 300, 1..=86_400)?,
            max_in_flight: env.parsed_range("UPLOAD_MAX_IN_FLIGHT", 4, 1..=10_000)?,
        })
    }
}
