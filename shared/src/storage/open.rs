//! Building a [`Storage`] from its URL: `file:///abs/dir` for the local file system,
//! `s3://bucket/optional/prefix` for S3-compatible object storage.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::{Storage, StorageError};

/// How to reach S3 (or MinIO, moto, …). The bucket and prefix come from the URL.
#[derive(Clone, Debug)]
pub struct S3Settings {
    /// e.g. `http://127.0.0.1:9000` for MinIO; AWS's regional endpoint when `None`.
    /// With `virtual_hosted_style` it must already name the bucket.
    pub endpoint: Option<String>,
    pub region: String,
    /// Static credentials. Without them the process's AWS environment is used
    /// (`AWS_*` variables, web identity, container or instance credentials).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<SecretString>,
    /// Permit a plain-HTTP endpoint (local MinIO/moto only).
    pub allow_http: bool,
    /// `bucket.host/key` instead of `host/bucket/key`; off by default because MinIO
    /// and moto are addressed path-style.
    pub virtual_hosted_style: bool,
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            endpoint: None,
            region: "us-east-1".to_owned(),
            access_key_id: None,
            secret_access_key: None,
            allow_http: false,
            virtual_hosted_style: false,
        }
    }
}

impl S3Settings {
    /// A local S3-compatible server (MinIO, moto) at `endpoint`: path-style, plain
    /// HTTP allowed, static credentials.
    pub fn local_server(
        endpoint: &str,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> S3Settings {
        S3Settings {
            endpoint: Some(endpoint.to_owned()),
            access_key_id: Some(access_key_id.to_owned()),
            secret_access_key: Some(SecretString::from(secret_access_key)),
            allow_http: true,
            ..S3Settings::default()
        }
    }
}

impl Storage {
    /// Opens the storage `url` names; `s3` is used only for `s3://` URLs.
    pub fn from_url(url: &str, s3: &S3Settings) -> Result<Storage, StorageError> {
        let parsed =
            Url::parse(url).map_err(|e| config(format!("storage URL is not a URL: {e}")))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(config("storage URL must not carry credentials"));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(config("storage URL must not have a query or fragment"));
        }
        match parsed.scheme() {
            "file" => local(&parsed),
            "s3" => amazon_s3(&parsed, s3),
            other => Err(config(format!(
                "storage URL scheme {other:?} is not supported (file:// or s3://)"
            ))),
        }
    }
}

fn config(message: impl Into<String>) -> StorageError {
    StorageError::Config(message.into())
}

fn local(url: &Url) -> Result<Storage, StorageError> {
    if url
        .host_str()
        .is_some_and(|h| !h.is_empty() && h != "localhost")
    {
        return Err(config(
            "a file:// storage URL names no host: file:///abs/dir",
        ));
    }
    let dir: PathBuf = url
        .to_file_path()
        .map_err(|()| config("a file:// storage URL needs an absolute path"))?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| config(format!("cannot create {}: {e}", dir.display())))?;
    let root = std::fs::canonicalize(&dir)
        .map_err(|e| config(format!("cannot resolve {}: {e}", dir.display())))?;
    let store = LocalFileSystem::new_with_prefix(&root)
        .map_err(|e| config(format!("cannot open {}: {e}", root.display())))?
        // Durable before success, as a remote store is.
        .with_fsync(true);
    Ok(Storage {
        store: Arc::new(store),
        description: format!("file://{}", root.display()).into(),
        local_root: Some(Arc::new(root)),
    })
}

fn amazon_s3(url: &Url, s3: &S3Settings) -> Result<Storage, StorageError> {
    let bucket = url
        .host_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| config("an s3:// storage URL names a bucket: s3://bucket/prefix"))?;
    let prefix = url.path().trim_matches('/');
    let mut builder = match (&s3.access_key_id, &s3.secret_access_key) {
        (Some(id), Some(secret)) => AmazonS3Builder::new()
            .with_access_key_id(id)
            .with_secret_access_key(secret.expose_secret()),
        (None, None) => AmazonS3Builder::from_env(),
        _ => {
            return Err(config(
                "S3 credentials need both an access key id and a secret access key",
            ));
        }
    };
    if let Some(endpoint) = &s3.endpoint {
        let parsed =
            Url::parse(endpoint).map_err(|e| config(format!("S3 endpoint is not a URL: {e}")))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(config("S3 endpoint must not carry credentials"));
        }
        // Also the S3-specific key, which would otherwise win when set in the environment.
        builder = builder
            .with_endpoint(endpoint)
            .with_config(AmazonS3ConfigKey::S3Endpoint, endpoint);
    }
    let store = builder
        .with_bucket_name(bucket)
        .with_region(&s3.region)
        .with_virtual_hosted_style_request(s3.virtual_hosted_style)
        .with_allow_http(s3.allow_http)
        .with_retry(retry())
        .build()
        .map_err(|e| config(format!("S3 storage: {e}")))?;
    let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
        Arc::new(store)
    } else {
        let prefix = Path::parse(prefix).map_err(|e| {
            config(format!(
                "S3 prefix {prefix:?} is not a valid key prefix: {e}"
            ))
        })?;
        Arc::new(PrefixStore::new(store, prefix))
    };
    let mut description = format!("s3://{bucket}");
    if !prefix.is_empty() {
        description.push('/');
        description.push_str(prefix);
    }
    match &s3.endpoint {
        Some(endpoint) => {
            description.push_str(&format!(" (endpoint {endpoint}, region {})", s3.region))
        }
        None => description.push_str(&format!(" (region {})", s3.region)),
    }
    Ok(Storage {
        store,
        description: description.into(),
        local_root: None,
    })
}

/// A few quick retries: a request that still fails surfaces as
/// [`StorageError::Unavailable`] within seconds, and the job that made it is retried
/// with its own backoff, rather than holding a worker for the default three minutes.
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: Duration::from_secs(30),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_of_an_s3_storage_has_no_secret() {
        let settings = S3Settings {
            endpoint: Some("http://127.0.0.1:9000".to_owned()),
            access_key_id: Some("AKIDEXAMPLE".to_owned()),
            secret_access_key: Some(SecretString::from("wJalrXUtnFEMI-secret")),
            allow_http: true,
            ..S3Settings::default()
        };
        let storage = Storage::from_url("s3://uploads/conveyor/prod/", &settings).expect("opens");
        assert_eq!(
            storage.describe(),
            "s3://uploads/conveyor/prod (endpoint http://127.0.0.1:9000, region us-east-1)"
        );
        assert!(!format!("{storage:?}").contains("secret"));
        assert!(!format!("{settings:?}").contains("wJalr"));
    }

    #[test]
    fn malformed_urls_and_settings_are_configuration_errors() {
        let half_credentials = S3Settings {
            access_key_id: Some("AKIDEXAMPLE".to_owned()),
            ..S3Settings::default()
        };
        for (url, settings) in [
            ("uploads", S3Settings::default()),
            ("ftp://host/dir", S3Settings::default()),
            ("s3://key:secret@bucket/x", S3Settings::default()),
            ("s3:///prefix", S3Settings::default()),
            ("s3://bucket/a//b", S3Settings::default()),
            ("s3://bucket?region=x", S3Settings::default()),
            ("s3://bucket", half_credentials),
            ("file://server/share", S3Settings::default()),
        ] {
            let result = Storage::from_url(url, &settings);
            assert!(
                matches!(result, Err(StorageError::Config(_))),
                "{url}: {result:?}"
            );
        }
    }

    #[test]
    fn a_missing_local_root_is_created() {
        let dir = std::env::temp_dir().join(format!("conveyor-storage-{}", uuid::Uuid::new_v4()));
        let storage =
            Storage::from_url(&format!("file://{}", dir.display()), &S3Settings::default())
                .expect("opens");
        assert!(dir.is_dir());
        assert!(storage.describe().starts_with("file:///"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
