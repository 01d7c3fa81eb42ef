//! The storage interface against both real backends: the local file system (a temp
//! dir) and an S3-compatible server (moto). Every scenario runs on both.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use shared::storage::{Area, ObjectKey, PART_SIZE, S3Settings, Storage, StorageError, confine};
use testkit::s3::MotoS3;

/// One backend with its own empty storage; cleaned up on drop.
enum Backend {
    Local { storage: Storage, root: PathBuf },
    S3 { storage: Storage, moto: Box<MotoS3> },
}

impl Backend {
    fn local() -> Backend {
        let root = std::env::temp_dir().join(format!(
            "conveyor-storage-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let url = format!("file://{}", root.display());
        let storage = Storage::from_url(&url, &S3Settings::default()).expect("local storage");
        Backend::Local { storage, root }
    }

    async fn s3() -> Backend {
        let moto = MotoS3::start().await;
        let storage = Storage::from_url(&moto.url(), &moto.settings()).expect("s3 storage");
        Backend::S3 {
            storage,
            moto: Box::new(moto),
        }
    }

    fn storage(&self) -> &Storage {
        match self {
            Backend::Local { storage, .. } | Backend::S3 { storage, .. } => storage,
        }
    }

    /// What the backend holds beyond finished objects' names: every file under the
    /// root, or every key and unfinished multipart upload in the bucket.
    async fn everything(&self) -> Vec<String> {
        match self {
            Backend::Local { root, .. } => files_under(root),
            Backend::S3 { moto, .. } => {
                let mut all = moto.keys().await;
                all.extend(
                    moto.pending_uploads()
                        .await
                        .into_iter()
                        .map(|key| format!("unfinished upload of {key}")),
                );
                all
            }
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Backend::Local { root, .. } = self {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path.display().to_string());
        }
    }
    files
}

fn key(area: Area) -> ObjectKey {
    ObjectKey::new(area, uuid::Uuid::new_v4())
}

/// `len` bytes of deterministic noise, in chunks of `chunk` bytes.
fn noise(len: usize, chunk: usize) -> Vec<Bytes> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect();
    bytes.chunks(chunk).map(Bytes::copy_from_slice).collect()
}

fn sha256<'a>(chunks: impl IntoIterator<Item = &'a Bytes>) -> Vec<u8> {
    let mut hasher = Sha256::new();
    for chunk in chunks {
        hasher.update(chunk);
    }
    hasher.finalize().to_vec()
}

async fn put(storage: &Storage, key: &ObjectKey, chunks: &[Bytes]) {
    let mut writer = storage.writer(key).await.expect("writer");
    for chunk in chunks {
        writer.write(chunk.clone()).await.expect("write");
    }
    writer.finish().await.expect("finish");
}

// ---- scenarios -------------------------------------------------------------------

async fn a_large_object_written_in_chunks_reads_back_identical(backend: Backend) {
    let storage = backend.storage();
    let key = key(Area::Staging);
    let chunks = noise(12 * 1024 * 1024, 64 * 1024 + 3);
    put(storage, &key, &chunks).await;

    let (size, stream) = storage.read_stream(&key).await.expect("read");
    assert_eq!(size, 12 * 1024 * 1024);
    let read: Vec<Bytes> = stream.try_collect().await.expect("stream");
    assert_eq!(sha256(&read), sha256(&chunks));
    assert_eq!(storage.size(&key).await.expect("size"), Some(size));

    let all = storage.read_all(&key, size).await.expect("read_all");
    assert_eq!(sha256([&all]), sha256(&chunks));
    assert!(matches!(
        storage.read_all(&key, size - 1).await,
        Err(StorageError::TooLarge)
    ));
}

async fn a_small_object_round_trips(backend: Backend) {
    let storage = backend.storage();
    let key = key(Area::Stored);
    put(
        storage,
        &key,
        &[Bytes::from_static(b"hello, "), Bytes::from_static(b"world")],
    )
    .await;
    assert_eq!(
        storage.read_all(&key, 1024).await.expect("read"),
        Bytes::from_static(b"hello, world")
    );
    let empty = self::key(Area::Stored);
    put(storage, &empty, &[]).await;
    assert_eq!(storage.size(&empty).await.expect("size"), Some(0));
    assert!(storage.read_all(&empty, 0).await.expect("read").is_empty());
}

async fn read_head_returns_the_first_bytes(backend: Backend) {
    let storage = backend.storage();
    let key = key(Area::Staging);
    let chunks = noise(PART_SIZE + 100, 1024 * 1024);
    put(storage, &key, &chunks).await;
    let head = storage.read_head(&key, 4096).await.expect("head");
    assert_eq!(head.as_ref(), &chunks[0][..4096]);

    let short = self::key(Area::Staging);
    put(storage, &short, &[Bytes::from_static(b"%PDF-1.7")]).await;
    assert_eq!(
        storage.read_head(&short, 4096).await.expect("head"),
        "%PDF-1.7"
    );
    assert_eq!(storage.read_head(&short, 0).await.expect("head"), "");

    let empty = self::key(Area::Staging);
    put(storage, &empty, &[]).await;
    assert_eq!(storage.read_head(&empty, 4096).await.expect("head"), "");
}

async fn copy_then_delete_moves_an_object(backend: Backend) {
    let storage = backend.storage();
    let staged = key(Area::Staging);
    let stored = staged.in_area(Area::Stored);
    put(storage, &staged, &[Bytes::from_static(b"payload")]).await;

    storage.copy(&staged, &stored).await.expect("copy");
    assert_eq!(storage.size(&staged).await.expect("size"), Some(7));
    storage.delete(&staged).await.expect("delete");

    assert_eq!(storage.size(&staged).await.expect("size"), None);
    assert_eq!(storage.read_all(&stored, 7).await.expect("read"), "payload");
}

async fn deleting_a_missing_object_is_ok(backend: Backend) {
    let storage = backend.storage();
    storage
        .delete(&key(Area::Quarantine))
        .await
        .expect("idempotent");
    let key = key(Area::Stored);
    put(storage, &key, &[Bytes::from_static(b"x")]).await;
    storage.delete(&key).await.expect("delete");
    storage.delete(&key).await.expect("twice");
}

async fn an_aborted_upload_leaves_nothing_behind(backend: Backend) {
    let storage = backend.storage();
    let key = key(Area::Staging);
    let mut writer = storage.writer(&key).await.expect("writer");
    for chunk in noise(PART_SIZE + PART_SIZE / 2, 512 * 1024) {
        writer.write(chunk).await.expect("write");
    }
    assert!(
        !backend.everything().await.is_empty(),
        "a part is under way"
    );
    writer.abort().await.expect("abort");

    assert_eq!(storage.size(&key).await.expect("size"), None);
    assert_eq!(backend.everything().await, Vec::<String>::new());
}

async fn a_dropped_writer_leaves_nothing_behind(backend: Backend) {
    let storage = backend.storage();
    let mut writer = storage.writer(&key(Area::Staging)).await.expect("writer");
    for chunk in noise(PART_SIZE + 1, 1024 * 1024) {
        writer.write(chunk).await.expect("write");
    }
    drop(writer);
    testkit::eventually(Duration::from_secs(10), "the upload is aborted", || async {
        backend.everything().await.is_empty().then_some(())
    })
    .await;
}

async fn missing_objects_are_not_found(backend: Backend) {
    let storage = backend.storage();
    let missing = key(Area::Stored);
    let not_found = |result: Result<(), StorageError>| {
        assert!(
            matches!(&result, Err(StorageError::NotFound(k)) if *k == missing.as_path()),
            "{result:?}"
        );
    };
    not_found(storage.read_stream(&missing).await.map(drop));
    not_found(storage.read_all(&missing, 10).await.map(drop));
    not_found(storage.read_head(&missing, 10).await.map(drop));
    not_found(storage.read_head(&missing, 0).await.map(drop));
    not_found(storage.copy(&missing, &key(Area::Stored)).await);
    assert_eq!(storage.size(&missing).await.expect("size"), None);
}

async fn a_reachable_storage_is_ready(backend: Backend) {
    backend.storage().check().await.expect("ready");
}

/// Each scenario as two tests, `local::<scenario>` and `s3::<scenario>`.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::Backend::local()).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::Backend::s3().await).await;
                }
            )*
        }
    };
}

on_both_backends!(
    a_large_object_written_in_chunks_reads_back_identical,
    a_small_object_round_trips,
    read_head_returns_the_first_bytes,
    copy_then_delete_moves_an_object,
    deleting_a_missing_object_is_ok,
    an_aborted_upload_leaves_nothing_behind,
    a_dropped_writer_leaves_nothing_behind,
    missing_objects_are_not_found,
    a_reachable_storage_is_ready,
);

// ---- backend-specific ------------------------------------------------------------

#[tokio::test]
async fn local_objects_live_under_the_root_at_their_key() {
    let backend = Backend::local();
    let Backend::Local { root, storage } = &backend else {
        unreachable!("a local backend")
    };
    let key = key(Area::Stored);
    put(storage, &key, &[Bytes::from_static(b"on disk")]).await;
    let file =
        confine(&std::fs::canonicalize(root).expect("root"), &key.as_path()).expect("confined");
    assert_eq!(std::fs::read(file).expect("the object's file"), b"on disk");
    assert_eq!(files_under(root).len(), 1);
}

#[tokio::test]
async fn a_local_storage_without_its_root_is_not_ready() {
    let backend = Backend::local();
    let Backend::Local { root, storage } = &backend else {
        unreachable!("a local backend")
    };
    std::fs::remove_dir_all(root).expect("remove the root");
    assert!(matches!(
        storage.check().await,
        Err(StorageError::Config(_))
    ));
}

#[tokio::test]
async fn s3_objects_live_under_the_url_prefix() {
    let backend = Backend::s3().await;
    let Backend::S3 { storage, moto } = &backend else {
        unreachable!("an s3 backend")
    };
    let key = key(Area::Quarantine);
    put(storage, &key, &[Bytes::from_static(b"x")]).await;
    assert_eq!(
        moto.keys().await,
        vec![format!("{}/{}", MotoS3::PREFIX, key.as_path())]
    );
}

#[tokio::test]
async fn a_missing_bucket_is_a_configuration_error() {
    let moto = MotoS3::start().await;
    let storage = Storage::from_url("s3://no-such-bucket", &moto.settings()).expect("storage");
    let result = storage.check().await;
    assert!(matches!(result, Err(StorageError::Config(_))), "{result:?}");
}

#[tokio::test]
async fn s3_behind_a_closed_port_is_unavailable() {
    let endpoint = format!("http://127.0.0.1:{}", testkit::free_port());
    let settings = S3Settings::local_server(&endpoint, "key", "secret");
    let storage = Storage::from_url("s3://bucket", &settings).expect("storage");
    let started = std::time::Instant::now();
    let result = storage.check().await;
    assert!(
        matches!(result, Err(StorageError::Unavailable(_))),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let key = key(Area::Stored);
    assert!(matches!(
        storage.size(&key).await,
        Err(StorageError::Unavailable(_))
    ));
}
