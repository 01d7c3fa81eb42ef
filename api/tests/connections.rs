//! Connection limits through real sockets: the api served in-process by
//! `api::server::serve` (both listeners, as the binary serves them) with 1–2 s
//! timeouts, driven by raw TCP clients that misbehave.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api::AppState;
use common::test_config;
use shared::redis::Redis;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

/// The api and ops listeners of one in-process server, stopped when dropped.
struct Served {
    api: SocketAddr,
    ops: SocketAddr,
    server: JoinHandle<std::io::Result<()>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Served {
    async fn start(pool: PgPool, overrides: &[(&str, &str)]) -> Served {
        let prometheus = shared::telemetry::prometheus();
        let config = test_config(overrides);
        let redis = Redis::connect_lazy(&config).expect("redis url parses");
        let state = AppState::new(Arc::new(config.config), Arc::new(config.auth), pool, redis)
            .expect("state builds");
        let api = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
        let ops = TcpListener::bind("127.0.0.1:0").await.expect("bind ops");
        let (api_addr, ops_addr) = (
            api.local_addr().expect("api addr"),
            ops.local_addr().expect("ops addr"),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let server = tokio::spawn(api::server::serve(state, prometheus, api, ops, shutdown));
        Served {
            api: api_addr,
            ops: ops_addr,
            server,
            stop: Some(stop),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A client that opened a connection and sent half a request line.
async fn half_open(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"GET /health/li").await.expect("write");
    stream
}

/// Sends `GET path` on `stream`, keeping it alive, and returns the status after
/// reading the whole response.
async fn get(stream: &mut TcpStream, path: &str) -> u16 {
    let request = format!("GET {path} HTTP/1.1\r\nHost: conveyor.test\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut chunk).await.expect("read response");
        assert!(n > 0, "the connection closed before a response");
        received.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a content-length");
    while received.len() < head_end + length {
        let n = stream.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "the connection closed mid-body");
        received.extend_from_slice(&chunk[..n]);
    }
    status
}

/// `GET path` on a fresh connection, answered within `within`.
async fn fresh_get(addr: SocketAddr, path: &str, within: Duration) -> u16 {
    timeout(within, async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        get(&mut stream, path).await
    })
    .await
    .unwrap_or_else(|_| panic!("GET {path} on {addr} was not answered within {within:?}"))
}

/// Waits (at most `within`) for the server to close `stream`; returns how long that took.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Duration {
    let start = Instant::now();
    let mut chunk = [0u8; 1024];
    let closed = timeout(within, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the connection is still open after {within:?}"
    );
    start.elapsed()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_client_that_never_finishes_its_head_is_disconnected_after_the_header_timeout(
    pool: PgPool,
) {
    let served = Served::start(pool, &[("HTTP_HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let mut on_api = half_open(served.api).await;
    let mut on_ops = half_open(served.ops).await;
    // While they hang, both listeners keep answering.
    let second = Duration::from_secs(1);
    assert_eq!(fresh_get(served.api, "/health/live", second).await, 200);
    assert_eq!(fresh_get(served.ops, "/health/live", second).await, 200);
    let api_closed = closed_within(&mut on_api, Duration::from_secs(5)).await;
    closed_within(&mut on_ops, Duration::from_secs(5)).await;
    assert!(
        api_closed >= Duration::from_millis(700),
        "closed after {api_closed:?}, before the timeout"
    );
    assert_eq!(fresh_get(served.api, "/health/live", second).await, 200);
    assert!(
        counted(
            served.ops,
            "conveyor_http_connections_timed_out_total{reason=\"header_timeout\"}"
        )
        .await
            >= 1.0,
        "the close is counted"
    );
}

/// A sample's value in the ops listener's `/metrics` (0 when absent).
async fn counted(ops: SocketAddr, series: &str) -> f64 {
    let text = reqwest::get(format!("http://{ops}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout(pool: PgPool) {
    let served = Served::start(
        pool,
        &[
            ("HTTP_HEADER_READ_TIMEOUT_SECS", "1"),
            ("HTTP_IDLE_TIMEOUT_SECS", "2"),
        ],
    )
    .await;
    let mut stream = TcpStream::connect(served.api).await.expect("connect");
    assert_eq!(get(&mut stream, "/health/live").await, 200);
    // Idle longer than the header timeout: the idle timeout, not that one, applies.
    harness::wait_out(
        Duration::from_millis(1500),
        "idle past the header timeout, within the idle timeout",
    )
    .await;
    assert_eq!(get(&mut stream, "/health/live").await, 200);
    let closed = closed_within(&mut stream, Duration::from_secs(5)).await;
    assert!(
        closed >= Duration::from_millis(1700),
        "closed after {closed:?}, before the idle timeout"
    );
    assert_eq!(
        counted(
            served.ops,
            "conveyor_http_connections_timed_out_total{reason=\"idle_timeout\"}"
        )
        .await,
        1.0
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn half_open_connections_past_the_cap_delay_a_fresh_request_but_never_stop_it(pool: PgPool) {
    const CAP: usize = 20;
    let served = Served::start(
        pool,
        &[
            ("HTTP_HEADER_READ_TIMEOUT_SECS", "1"),
            ("HTTP_MAX_CONNECTIONS", &CAP.to_string()),
        ],
    )
    .await;
    let mut hanging = Vec::new();
    for _ in 0..CAP + 50 {
        hanging.push(half_open(served.api).await);
    }
    let start = Instant::now();
    let fresh = tokio::spawn(fresh_get(
        served.api,
        "/health/live",
        Duration::from_secs(15),
    ));
    // The ops listener has its own cap: probes answer while the api is full.
    assert_eq!(
        fresh_get(served.ops, "/health/live", Duration::from_secs(1)).await,
        200
    );
    assert_eq!(fresh.await.expect("the client task"), 200);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "answered after {waited:?}: the cap did not hold"
    );
    assert!(!served.server.is_finished(), "the server stopped");
    assert_eq!(
        fresh_get(served.api, "/health/live", Duration::from_secs(1)).await,
        200
    );
    drop(hanging);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn shutdown_closes_idle_connections_without_waiting_for_their_timeout(pool: PgPool) {
    let mut served = Served::start(pool, &[("HTTP_IDLE_TIMEOUT_SECS", "60")]).await;
    let mut idle = TcpStream::connect(served.api).await.expect("connect");
    assert_eq!(get(&mut idle, "/health/live").await, 200);
    let _ = served.stop.take().expect("not stopped yet").send(());
    closed_within(&mut idle, Duration::from_secs(5)).await;
    let server = &mut served.server;
    let result = timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns once drained")
        .expect("the server task");
    assert!(result.is_ok(), "{result:?}");
    assert!(
        TcpStream::connect(served.api).await.is_err(),
        "still accepting"
    );
}

/// The incident itself, on the real binary: with 128 descriptors and a cap above that,
/// 200 half-open connections make `accept` fail with EMFILE; the api backs off instead
/// of spinning or exiting, and answers again once the header timeout frees slots.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_binary_outlives_running_out_of_file_descriptors(pool: PgPool) {
    use harness::system::{
        KEY, Process, binary, database_url_of, free_port, redis_url, scratch_dir,
    };
    let (api_port, ops_port) = (free_port(), free_port());
    let dir = scratch_dir("connections");
    let log = dir.join("api.log");
    let file = std::fs::File::create(&log).expect("log file");
    let mut command = tokio::process::Command::new("sh");
    command
        .args(["-c", "ulimit -n 128 && exec \"$0\""])
        .arg(binary("api"))
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs([
            ("APP_ENV", "test".to_owned()),
            ("RUST_LOG", "info,sqlx=warn".to_owned()),
            ("DATABASE_URL", database_url_of(&pool).await),
            ("REDIS_URL", redis_url()),
            (
                "REDIS_PREFIX",
                format!("e2e-{}", uuid::Uuid::new_v4().simple()),
            ),
            ("API_ADDR", format!("127.0.0.1:{api_port}")),
            ("METRICS_ADDR", format!("127.0.0.1:{ops_port}")),
            ("JWT_SIGNING_KEY", KEY.to_owned()),
            ("PII_KEY", KEY.to_owned()),
            ("BLIND_INDEX_KEY", KEY.to_owned()),
            ("HTTP_HEADER_READ_TIMEOUT_SECS", "1".to_owned()),
            ("HTTP_MAX_CONNECTIONS", "1000".to_owned()),
        ])
        .stdout(file.try_clone().expect("log handle"))
        .stderr(file)
        .kill_on_drop(true);
    let mut api = Process {
        child: command.spawn().expect("the api starts"),
        log,
    };
    let api_addr: SocketAddr = ([127, 0, 0, 1], api_port).into();
    harness::system::wait_for_port(api_port).await;
    assert_eq!(
        fresh_get(api_addr, "/health/live", Duration::from_secs(5)).await,
        200
    );

    let mut hanging = Vec::new();
    for _ in 0..200 {
        hanging.push(half_open(api_addr).await);
    }
    assert_eq!(
        fresh_get(api_addr, "/health/live", Duration::from_secs(20)).await,
        200,
    );
    assert!(
        api.child.try_wait().expect("wait").is_none(),
        "the api exited: {}",
        api.log_text()
    );
    let log = api.log_text();
    let backoffs = log.matches("accept failed; backing off").count();
    assert!(backoffs > 0, "accept never failed: {log}");
    // A spinning loop would log thousands of lines a second.
    assert!(backoffs < 300, "{backoffs} accept failures logged");
    drop(hanging);
}
