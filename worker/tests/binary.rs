//! The real `worker` binary: health and metrics on its own listener, graceful exit on
//! SIGTERM, one-line configuration errors.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn worker(vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_worker"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in vars {
        command.env(key, value);
    }
    command
}

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Polls `url` until it answers `status`, within a deadline.
async fn wait_for(client: &reqwest::Client, url: &str, status: u16) -> reqwest::Response {
    harness::eventually(Duration::from_secs(20), "the expected answer", || async {
        client
            .get(url)
            .send()
            .await
            .ok()
            .filter(|response| response.status().as_u16() == status)
    })
    .await
}

async fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().expect("running").to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(sent.success());
    tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits within the grace period")
        .expect("wait works")
}

#[tokio::test]
async fn serves_health_and_metrics_and_exits_zero_on_sigterm() {
    let port = free_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    let db = database_url();
    let redis = redis_url();
    let mut child = worker(&[
        ("APP_ENV", "test"),
        ("DATABASE_URL", &db),
        ("REDIS_URL", &redis),
        ("WORKER_METRICS_ADDR", &addr),
    ])
    .spawn()
    .expect("worker starts");
    let client = reqwest::Client::new();
    let ready = wait_for(&client, &format!("http://{addr}/health/ready"), 200).await;
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    wait_for(&client, &format!("http://{addr}/health/live"), 200).await;
    let metrics = wait_for(&client, &format!("http://{addr}/metrics"), 200)
        .await
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"conveyor_dependency_up{service="worker",dependency="postgres"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"conveyor_build_info{service="worker""#),
        "{metrics}"
    );
    // Every rule a verdict can name is a series before its first match, so the first
    // infected upload is an increase (the inspectors' and the signatures in rules/).
    for rule in [
        "Conveyor.Test.EICAR",
        "Conveyor.Pdf.AutoJavaScript",
        "Conveyor.Archive.Bomb",
        "Conveyor.Image.EmbeddedScript",
    ] {
        let series = format!("conveyor_scan_rule_matches_total{{rule=\"{rule}\"}} 0");
        assert!(
            metrics.lines().any(|line| line == series),
            "{series} in {metrics}"
        );
    }
    let status = terminate(&mut child).await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn readiness_is_503_when_redis_is_unreachable() {
    let addr = format!("127.0.0.1:{}", free_port());
    let dead_redis = format!("redis://127.0.0.1:{}", free_port());
    let db = database_url();
    let mut child = worker(&[
        ("APP_ENV", "test"),
        ("DATABASE_URL", &db),
        ("REDIS_URL", &dead_redis),
        ("HEALTH_TIMEOUT_MS", "300"),
        ("WORKER_METRICS_ADDR", &addr),
    ])
    .spawn()
    .expect("worker starts");
    let client = reqwest::Client::new();
    let response = wait_for(&client, &format!("http://{addr}/health/ready"), 503).await;
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["code"], "dependency_unavailable");
    assert!(
        body["detail"].as_str().is_some_and(|d| d.contains("redis")),
        "{body}"
    );
    assert_eq!(terminate(&mut child).await.code(), Some(0));
}

#[tokio::test]
async fn a_configuration_error_is_one_line_and_exit_2() {
    let output = worker(&[("APP_ENV", "production")])
        .output()
        .await
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    // PII_KEY is the first key it needs (then BLIND_INDEX_KEY, for the suppression
    // list, and PUBLIC_URL, for unsubscribe links).
    assert!(stderr.contains("PII_KEY is required"), "{stderr}");
}

#[tokio::test]
async fn a_failed_consumer_makes_readiness_503_naming_it() {
    let url = database_url();
    let redis = redis_url();
    let config = shared::Config::from_lookup(|key| match key {
        "APP_ENV" => Some("test".to_owned()),
        "DATABASE_URL" => Some(url.clone()),
        "REDIS_URL" => Some(redis.clone()),
        _ => None,
    })
    .expect("config");
    let pool = shared::db::pool(&config).expect("pool");
    let redis = shared::redis::Redis::connect_lazy(&config).expect("redis");
    let worker = worker::runtime::Runtime::new(std::sync::Arc::new(config), pool, redis);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = worker.ops_router(shared::telemetry::prometheus());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/health/ready");
    assert_eq!(client.get(&url).send().await.expect("sent").status(), 200);
    worker.flag.fail("the emails consumer stopped".to_owned());
    let response = client.get(&url).send().await.expect("sent");
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["code"], "dependency_unavailable");
    assert_eq!(body["detail"], "the emails consumer stopped");
}
