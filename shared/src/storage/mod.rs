//! Uploaded files behind one interface over `object_store`, with two real backends: the
//! local file system (keys confined under its root) and S3-compatible object storage.
//! Keys are server-made ([`ObjectKey`]); reads and writes stream with bounded memory.

mod confine;
mod key;
mod open;
mod writer;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};

pub use confine::confine;
pub use key::{Area, InvalidObjectKey, ObjectKey};
pub use open::S3Settings;
pub use writer::{ObjectWriter, PART_SIZE, PARTS_IN_FLIGHT};

/// What can go wrong with storage, sorted by what the caller does about it.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("no object at {0}")]
    NotFound(String),
    #[error("the object is larger than allowed")]
    TooLarge,
    /// Transient (network, timeouts, 5xx, I/O): retry later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Wrong URL, settings, credentials or permissions: retrying will not help.
    #[error("storage misconfigured: {0}")]
    Config(String),
}

/// Sorts an `object_store` error; `key` names the object in the message.
fn classify(error: object_store::Error, key: &str) -> StorageError {
    use object_store::Error as E;
    match error {
        E::NotFound { .. } => StorageError::NotFound(key.to_owned()),
        E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::UnknownConfigurationKey { .. } => StorageError::Config(error.to_string()),
        other => StorageError::Unavailable(other.to_string()),
    }
}

/// The storage: cheap to clone, shared by the api and the workers.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// Where the objects are, without secrets (for logs and startup messages).
    description: Arc<str>,
    /// The local backend's root, to confine every key under it.
    local_root: Option<Arc<PathBuf>>,
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Storage").field(&self.description).finish()
    }
}

impl Storage {
    /// `file:///var/lib/conveyor` or `s3://bucket/prefix (endpoint …, region …)`.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// Checks the storage once, in the background, and logs the outcome: a process
    /// starts even when storage is down (emails do not need it), but says so loudly.
    pub fn announce(&self, service: &'static str) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let storage = self.clone();
        runtime.spawn(async move {
            match storage.check().await {
                Ok(()) => tracing::info!(service, storage = %storage.describe(), "storage ready"),
                Err(err) => tracing::error!(
                    service,
                    storage = %storage.describe(),
                    error = %err,
                    "storage is not usable: uploads and scans fail until it is"
                ),
            }
        });
    }

    /// Readiness: the root (or bucket) answers a listing of its top level, which holds
    /// only the three areas. A missing bucket or root is a configuration error; an
    /// unreachable server is [`StorageError::Unavailable`].
    pub async fn check(&self) -> Result<(), StorageError> {
        if let Some(root) = &self.local_root {
            let is_dir = tokio::fs::metadata(root.as_path())
                .await
                .is_ok_and(|m| m.is_dir());
            if !is_dir {
                return Err(StorageError::Config(format!(
                    "{} is not a directory",
                    self.description
                )));
            }
        }
        match self.store.list_with_delimiter(None).await {
            Ok(_) => Ok(()),
            // `object_store` reports a failed S3 listing as a generic error whatever its
            // status, so a missing bucket is known only by S3's error code in the body.
            Err(error) if error.to_string().contains("NoSuchBucket") => Err(StorageError::Config(
                format!("{}: the bucket does not exist", self.description),
            )),
            Err(error) => Err(classify(error, "")),
        }
    }

    /// The store's path for `key`; on the local backend only after [`confine`] agrees.
    fn location(&self, key: &ObjectKey) -> Result<(Path, String), StorageError> {
        let key = key.as_path();
        if let Some(root) = &self.local_root {
            confine(root, &key).ok_or_else(|| {
                StorageError::Config(format!("object key {key:?} is not confined to the root"))
            })?;
        }
        Ok((Path::from(key.as_str()), key))
    }

    /// A writer for `key`; the object appears when the writer finishes.
    pub async fn writer(&self, key: &ObjectKey) -> Result<ObjectWriter, StorageError> {
        let (path, key) = self.location(key)?;
        Ok(ObjectWriter::new(Arc::clone(&self.store), path, key))
    }

    /// The object's size and its bytes as a stream.
    #[tracing::instrument(name = "storage", target = "conveyor_trace", skip_all, fields(otel.name = "storage read", otel.kind = "client", conveyor.storage.operation = "read"))]
    pub async fn read_stream(
        &self,
        key: &ObjectKey,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, StorageError>>), StorageError> {
        let (path, key) = self.location(key)?;
        let result = self.store.get(&path).await.map_err(|e| classify(e, &key))?;
        let size = result.meta.size;
        let stream = result
            .into_stream()
            .map_err(move |e| classify(e, &key))
            .boxed();
        Ok((size, stream))
    }

    /// The whole object, if it is at most `max` bytes.
    #[tracing::instrument(name = "storage", target = "conveyor_trace", skip_all, fields(otel.name = "storage read", otel.kind = "client", conveyor.storage.operation = "read"))]
    pub async fn read_all(&self, key: &ObjectKey, max: u64) -> Result<Bytes, StorageError> {
        let (path, key) = self.location(key)?;
        let result = self.store.get(&path).await.map_err(|e| classify(e, &key))?;
        if result.meta.size > max {
            return Err(StorageError::TooLarge);
        }
        result.bytes().await.map_err(|e| classify(e, &key))
    }

    /// The first `n` bytes (fewer if the object is shorter), with one range request.
    #[tracing::instrument(name = "storage", target = "conveyor_trace", skip_all, fields(otel.name = "storage read", otel.kind = "client", conveyor.storage.operation = "read"))]
    pub async fn read_head(&self, key: &ObjectKey, n: usize) -> Result<Bytes, StorageError> {
        let (path, name) = self.location(key)?;
        if n == 0 {
            return match self.size(key).await? {
                Some(_) => Ok(Bytes::new()),
                None => Err(StorageError::NotFound(name)),
            };
        }
        let options = GetOptions::new().with_range(Some(GetRange::Bounded(0..n as u64)));
        match self.store.get_opts(&path, options).await {
            Ok(result) => result.bytes().await.map_err(|e| classify(e, &name)),
            // A range cannot start inside an empty object: ask whether that is why.
            Err(error) => match classify(error, &name) {
                StorageError::Unavailable(message) => match self.size(key).await? {
                    Some(0) => Ok(Bytes::new()),
                    _ => Err(StorageError::Unavailable(message)),
                },
                other => Err(other),
            },
        }
    }

    /// The object's size, or `None` when there is none.
    #[tracing::instrument(name = "storage", target = "conveyor_trace", skip_all, fields(otel.name = "storage head", otel.kind = "client", conveyor.storage.operation = "head"))]
    pub async fn size(&self, key: &ObjectKey) -> Result<Option<u64>, StorageError> {
        let (path, key) = self.location(key)?;
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(error) => match classify(error, &key) {
                StorageError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Copies `from` to `to`, replacing what is at `to` (server-side on S3, a hard link
    /// locally).
    #[tracing::instrument(name = "storage", target = "conveyor_trace", skip_all, fields(otel.name = "storage copy", otel.kind = "client", conveyor.storage.operation = "copy"))]
    pub async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> Result<(), StorageError> {
        let (source, from) = self.location(from)?;
        let (target, _) = self.location(to)?;
        self.store
            .copy(&source, &target)
            .await
            .map_err(|e| classify(e, &from))
    }

    /// Deletes the object; deleting a missing object is fine (idempotent).
    #[tracing::instrument(name = "storage", target = "conveyor_trace", skip_all, fields(otel.name = "storage delete", otel.kind = "client", conveyor.storage.operation = "delete"))]
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        let (path, key) = self.location(key)?;
        match self.store.delete(&path).await {
            Ok(()) => Ok(()),
            Err(error) => match classify(error, &key) {
                StorageError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }
}
