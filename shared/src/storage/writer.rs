//! Streaming writes with bounded memory: an object smaller than one part goes up in a
//! single PUT; a larger one becomes a multipart upload of fixed-size parts with at most
//! a couple of parts in flight.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayloadMut, WriteMultipart};

use super::{StorageError, classify};

/// The size of every part but the last: S3's minimum, and what `WriteMultipart`
/// buffers before it starts a part.
pub const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts uploading at once. With the part being filled this bounds a writer's memory
/// at about `(PARTS_IN_FLIGHT + 1) * PART_SIZE`, whatever the object's size.
pub const PARTS_IN_FLIGHT: usize = 2;

/// An object being written. Nothing is visible under the key until [`finish`]
/// succeeds; [`abort`] (or dropping the writer) discards what was written.
///
/// [`finish`]: ObjectWriter::finish
/// [`abort`]: ObjectWriter::abort
pub struct ObjectWriter {
    store: Arc<dyn ObjectStore>,
    path: Path,
    key: String,
    state: State,
}

enum State {
    /// Less than one part so far, held in memory.
    Buffering(PutPayloadMut),
    Uploading(WriteMultipart),
    Closed,
}

impl ObjectWriter {
    pub(super) fn new(store: Arc<dyn ObjectStore>, path: Path, key: String) -> ObjectWriter {
        ObjectWriter {
            store,
            path,
            key,
            state: State::Buffering(PutPayloadMut::new()),
        }
    }

    /// Appends `chunk`; waits while too many parts are still uploading.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        match &mut self.state {
            State::Buffering(buffer) if buffer.content_length() + chunk.len() < PART_SIZE => {
                buffer.push(chunk);
            }
            State::Buffering(buffer) => {
                let buffered = std::mem::take(buffer).freeze();
                let upload = self
                    .store
                    .put_multipart(&self.path)
                    .await
                    .map_err(|e| classify(e, &self.key))?;
                let mut multipart = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
                for bytes in buffered {
                    multipart.put(bytes);
                }
                multipart.put(chunk);
                self.state = State::Uploading(multipart);
            }
            State::Uploading(multipart) => {
                multipart
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| classify(e, &self.key))?;
                multipart.put(chunk);
            }
            State::Closed => {
                return Err(StorageError::Unavailable(format!(
                    "{}: the writer is closed",
                    self.key
                )));
            }
        }
        Ok(())
    }

    /// Uploads what is left and makes the object visible, atomically.
    #[tracing::instrument(name = "storage", target = "conveyor_trace", skip_all, fields(otel.name = "storage write", otel.kind = "client", conveyor.storage.operation = "write"))]
    pub async fn finish(mut self) -> Result<(), StorageError> {
        let result = match std::mem::replace(&mut self.state, State::Closed) {
            State::Buffering(buffer) => self.store.put(&self.path, buffer.freeze()).await.map(drop),
            // On failure `finish` aborts the multipart upload itself.
            State::Uploading(multipart) => multipart.finish().await.map(drop),
            State::Closed => Ok(()),
        };
        result.map_err(|e| classify(e, &self.key))
    }

    /// Discards the object: aborts the multipart upload (its parts are deleted) or
    /// removes the local staging file. An object already under the key is untouched.
    pub async fn abort(mut self) -> Result<(), StorageError> {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Buffering(_) | State::Closed => Ok(()),
            State::Uploading(multipart) => {
                multipart.abort().await.map_err(|e| classify(e, &self.key))
            }
        }
    }
}

impl Drop for ObjectWriter {
    /// A writer dropped mid-upload (a client that went away) aborts in the background,
    /// so S3 keeps no orphaned parts. A bucket lifecycle rule for incomplete multipart
    /// uploads still covers a process that dies first.
    fn drop(&mut self) {
        let State::Uploading(multipart) = std::mem::replace(&mut self.state, State::Closed) else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let key = std::mem::take(&mut self.key);
            runtime.spawn(async move {
                if let Err(error) = multipart.abort().await {
                    tracing::warn!(%key, %error, "aborting an abandoned upload failed");
                }
            });
        }
    }
}

impl fmt::Debug for ObjectWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Buffering(_) => "buffering",
            State::Uploading(_) => "uploading",
            State::Closed => "closed",
        };
        f.debug_struct("ObjectWriter")
            .field("key", &self.key)
            .field("state", &state)
            .finish()
    }
}
