//! The central error handling: every error the api can answer is problem+json.

mod common;

use std::time::Duration;

use api::error::ApiError;
use api::extract::ApiJson;
use axum::Router;
use axum::routing::{get, post};
use common::{problem, spawn_app, spawn_app_with, test_config};
use serde::Deserialize;
use sqlx::PgPool;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // only deserialized
struct Greeting {
    name: String,
    times: u8,
}

async fn echo(ApiJson(body): ApiJson<Greeting>) -> Result<String, ApiError> {
    Ok(body.name.repeat(body.times.into()))
}

async fn explode() -> &'static str {
    panic!("secret-internal-detail");
}

async fn dawdle() -> &'static str {
    tokio::time::sleep(Duration::from_secs(5)).await;
    "late"
}

fn test_routes() -> Router<api::AppState> {
    Router::new()
        .route("/test/echo", post(echo))
        .route("/test/panic", get(explode))
        .route("/test/slow", get(dawdle))
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn unknown_route_is_problem_404(pool: PgPool) {
    let app = spawn_app(pool).await;
    let body = problem(app.get("/api/v1/nothing-here").await, 404, "not_found").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("/api/v1/nothing-here")
    );
    problem(app.get("/elsewhere").await, 404, "not_found").await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn wrong_method_is_problem_405_with_allow(pool: PgPool) {
    let app = spawn_app(pool).await;
    let response = app
        .client
        .delete(app.url("/api/v1"))
        .send()
        .await
        .expect("sent");
    let allow = response
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert!(allow.is_some_and(|a| a.contains("GET")));
    problem(response, 405, "method_not_allowed").await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn malformed_json_is_400_validation_failed(pool: PgPool) {
    let app = spawn_app_with(pool, test_config(&[]), Some(test_routes())).await;
    let response = app
        .client
        .post(app.url("/api/v1/test/echo"))
        .header("content-type", "application/json")
        .body("{\"name\": \"a\",")
        .send()
        .await
        .expect("sent");
    let body = problem(response, 400, "validation_failed").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("not valid JSON"),
        "{body}"
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn mistyped_missing_or_unknown_fields_are_422_naming_the_field(pool: PgPool) {
    let app = spawn_app_with(pool, test_config(&[]), Some(test_routes())).await;
    for (body, field) in [
        (serde_json::json!({"name": "a", "times": "twice"}), "times"),
        (
            serde_json::json!({"name": "a", "times": 1, "role": "admin"}),
            "role",
        ),
        (serde_json::json!({"times": 1}), "name"),
    ] {
        let response = app
            .client
            .post(app.url("/api/v1/test/echo"))
            .json(&body)
            .send()
            .await
            .expect("sent");
        let problem = problem(response, 422, "validation_failed").await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let ok = app
        .client
        .post(app.url("/api/v1/test/echo"))
        .json(&serde_json::json!({"name": "ab", "times": 2}))
        .send()
        .await
        .expect("sent");
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.expect("body"), "abab");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn json_without_content_type_is_415(pool: PgPool) {
    let app = spawn_app_with(pool, test_config(&[]), Some(test_routes())).await;
    let response = app
        .client
        .post(app.url("/api/v1/test/echo"))
        .header("content-type", "text/plain")
        .body("{\"name\":\"a\",\"times\":1}")
        .send()
        .await
        .expect("sent");
    problem(response, 415, "unsupported_media_type").await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn body_over_the_limit_is_413(pool: PgPool) {
    let config = test_config(&[("BODY_LIMIT_BYTES", "1024")]);
    let app = spawn_app_with(pool, config, Some(test_routes())).await;
    let big = serde_json::json!({"name": "x".repeat(4096), "times": 1});
    let response = app
        .client
        .post(app.url("/api/v1/test/echo"))
        .json(&big)
        .send()
        .await
        .expect("sent");
    problem(response, 413, "payload_too_large").await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn panic_is_problem_500_without_internals(pool: PgPool) {
    let app = spawn_app_with(pool, test_config(&[]), Some(test_routes())).await;
    let response = app.get("/api/v1/test/panic").await;
    let body = problem(response, 500, "internal").await;
    assert!(
        !body.to_string().contains("secret-internal-detail"),
        "{body}"
    );
    // The server survives the panic.
    assert_eq!(app.get("/health/live").await.status(), 200);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn slow_handler_is_408_request_timeout(pool: PgPool) {
    let config = test_config(&[("REQUEST_TIMEOUT_SECS", "1")]);
    let app = spawn_app_with(pool, config, Some(test_routes())).await;
    problem(app.get("/api/v1/test/slow").await, 408, "request_timeout").await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn responses_carry_security_headers(pool: PgPool) {
    let app = spawn_app(pool).await;
    let response = app.get("/api/v1").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(response.headers()["x-frame-options"], "DENY");
}
