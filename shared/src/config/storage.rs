//! Where uploaded objects live: a local directory or S3-compatible object storage,
//! and how to reach S3.

use secrecy::SecretString;

use super::ConfigError;
use super::env::Env;

/// Where uploaded objects live: a local directory or S3-compatible object storage.
#[derive(Debug)]
pub struct StorageConfig {
    /// `file:///abs/dir` or `s3://bucket/optional/prefix` (a plain path is made a
    /// `file://` URL against the working directory).
    pub url: String,
    /// How to reach S3 (endpoint, region, keys); used only for `s3://` URLs.
    pub s3: crate::storage::S3Settings,
}

impl StorageConfig {
    /// Opens the storage this names.
    pub fn open(&self) -> Result<crate::storage::Storage, crate::storage::StorageError> {
        crate::storage::Storage::from_url(&self.url, &self.s3)
    }

    /// The default directory depends on `production` (see `Env::storage_url`).
    pub(crate) fn read<F: Fn(&str) -> Option<String>>(
        env: &Env<'_, F>,
        production: bool,
    ) -> Result<Self, ConfigError> {
        Ok(StorageConfig {
            url: env.storage_url("STORAGE_URL", production)?,
            s3: crate::storage::S3Settings {
                endpoint: env.get("S3_ENDPOINT"),
                region: env.string("S3_REGION", "us-east-1"),
                access_key_id: env.get("S3_ACCESS_KEY_ID"),
                secret_access_key: env.get("S3_SECRET_ACCESS_KEY").map(SecretString::from),
                allow_http: env.bool("S3_ALLOW_HTTP", false)?,
                virtual_hosted_style: env.bool("S3_VIRTUAL_HOSTED_STYLE", false)?,
            },
        })
    }
}
