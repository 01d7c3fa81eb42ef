//! The low layer of Conveyor's test harness: the real services a test talks to, with
//! no part of the api or the worker in it, so `shared`'s own tests use it too.
//! PostgreSQL (a database per `#[sqlx::test]`, [`database_url_of`]), Redis
//! ([`redis_url`], [`redis_cluster_urls`]), a real SMTP server ([`smtp`]), clamd
//! ([`clamd`]), S3 ([`s3`], moto), an independent DKIM verifier ([`dkim`]), file
//! fixtures ([`fixtures`]) and the processes they run in ([`process`]).
//! The high layer, `harness`, serves the api and runs the worker on top of this one.
//! Nothing here sleeps for a fixed time to wait for something: [`eventually`] polls a
//! condition with a deadline, and [`wait_out`] names the waits that prove an absence.

pub mod clamd;
pub mod dkim;
pub mod fixtures;
pub mod otlp;
pub mod process;
pub mod proxy;
pub mod s3;
pub mod smtp;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sqlx::PgPool;

/// A password every test account uses (strong by the zxcvbn policy).
pub const PASSWORD: &str = "velvet-harbour-quantum-lantern-42";
/// A fixed 32-byte key (base64) for tests that configure keys explicitly.
pub const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// The Redis server the tests use (`REDIS_URL`, default the local one).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The seed URLs (comma-separated, as `REDIS_CLUSTER_URLS` takes them) of the Redis
/// Cluster the cluster tests use: `REDIS_CLUSTER_TEST_URLS`, which `scripts/test`
/// sets after starting a 3-node cluster on loopback (`ensure_redis_cluster` in
/// `scripts/services`). `None` when unset: the caller skips, and says so.
pub fn redis_cluster_urls() -> Option<String> {
    let urls = std::env::var("REDIS_CLUSTER_TEST_URLS")
        .ok()
        .filter(|urls| !urls.trim().is_empty());
    if urls.is_none() {
        eprintln!(
            "skipped: REDIS_CLUSTER_TEST_URLS is not set. scripts/test starts a Redis Cluster \
             and sets it; by hand: `source scripts/services; ensure_redis_cluster`, then run \
             the tests in that shell"
        );
    }
    urls
}

/// The URL of the database `pool` is connected to (one per `#[sqlx::test]`).
pub async fn database_url_of(pool: &PgPool) -> String {
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(pool)
        .await
        .expect("name");
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for #[sqlx::test]");
    let mut url = url::Url::parse(&base).expect("DATABASE_URL parses");
    url.set_path(&database);
    url.to_string()
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

/// Lets `period` pass on purpose, and says why: to prove that something does **not**
/// happen within it (a duplicate is not sent, a cancelled send stays unsent), or that
/// a timeout has not elapsed yet. Never to wait for something to happen: poll for that
/// with [`eventually`].
pub async fn wait_out(period: Duration, why: &'static str) {
    debug_assert!(!why.is_empty(), "a bounded wait says why it is needed");
    tokio::time::sleep(period).await;
}

/// Proves that something does **not** happen for `period`: polls `check` every
/// `pause` and panics with `what` the first time it fails. A bounded wait like
/// [`wait_out`], that also fails as soon as the thing happens.
pub async fn holds_for<F, Fut>(period: Duration, pause: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + period;
    while Instant::now() < until {
        assert!(check().await, "{what}");
        tokio::time::sleep(pause).await;
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `within`; the
/// pause between polls grows from 5 ms to 100 ms.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(
        within,
        what,
        Duration::from_millis(5),
        Duration::from_millis(100),
        check,
    )
    .await
}

/// [`eventually`] at a steady `pause`, for a test that also measures *when* the
/// condition came true (to within `pause`).
pub async fn eventually_every<T, F, Fut>(
    pause: Duration,
    within: Duration,
    what: &str,
    check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(within, what, pause, pause, check).await
}

async fn poll<T, F, Fut>(
    within: Duration,
    what: &str,
    first: Duration,
    most: Duration,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    let mut pause = first;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(most);
    }
}
