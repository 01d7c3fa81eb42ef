//! The test harness: a real PostgreSQL database per test (from `#[sqlx::test]`), a
//! Redis key namespace per test, and the api's real router served on a random port.

#![allow(dead_code)] // each test binary uses its own part of the harness

use std::collections::HashMap;
use std::sync::Arc;

use api::AppState;
use axum::Router;
use shared::Config;
use shared::redis::Redis;
use sqlx::PgPool;

/// The Redis server the tests use (`REDIS_URL`, default the local one).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A test config: `APP_ENV=test`, a fresh Redis prefix, plus `overrides`.
pub fn test_config(overrides: &[(&str, &str)]) -> Config {
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let mut vars: HashMap<String, String> = HashMap::from([
        ("APP_ENV".to_owned(), "test".to_owned()),
        ("REDIS_URL".to_owned(), redis_url()),
        ("REDIS_PREFIX".to_owned(), prefix),
    ]);
    for (key, value) in overrides {
        vars.insert((*key).to_owned(), (*value).to_owned());
    }
    Config::from_lookup(|key| vars.get(key).cloned()).expect("test config is valid")
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub state: AppState,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }
}

/// Serves the api's real router on 127.0.0.1:0.
pub async fn spawn_app(pool: PgPool) -> TestApp {
    spawn_app_with(pool, test_config(&[]), None).await
}

/// Serves the api with `config`, and `extra` routes merged under `/api/v1` (for
/// behaviour no production route shows yet, such as a panicking handler).
pub async fn spawn_app_with(
    pool: PgPool,
    config: Config,
    extra: Option<Router<AppState>>,
) -> TestApp {
    // As the binary does first thing: metrics recorded before this are lost.
    shared::telemetry::prometheus();
    let redis = Redis::connect_lazy(&config).expect("redis url parses");
    let state = AppState::new(Arc::new(config), pool, redis);
    let mut api_v1 = api::routes::api_v1();
    if let Some(extra) = extra {
        api_v1 = api_v1.merge(extra);
    }
    let router = api::app::build(state.clone(), api_v1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a port");
    let address = format!("http://{}", listener.local_addr().expect("local addr"));
    tokio::spawn(async move {
        axum::serve(listener, router).await.expect("server runs");
    });
    let client = reqwest::Client::builder().build().expect("client builds");
    TestApp {
        address,
        client,
        state,
    }
}

/// Asserts a problem+json response and returns its body.
pub async fn problem(response: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let header_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: serde_json::Value = response.json().await.expect("problem body is JSON");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["type"], format!("urn:conveyor:problem:{code}"));
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert_eq!(
        body["request_id"].as_str().map(str::to_owned),
        header_id,
        "request_id matches header"
    );
    body
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}
