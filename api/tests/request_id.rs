//! `x-request-id`: generated or propagated, echoed, and quoted in error bodies.

mod common;

use common::{problem, spawn_app};
use sqlx::PgPool;

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_client_request_id_is_echoed_and_quoted_in_errors(pool: PgPool) {
    let app = spawn_app(pool).await;
    let response = app
        .client
        .get(app.url("/api/v1/missing"))
        .header("x-request-id", "client-abc-123")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.headers()["x-request-id"], "client-abc-123");
    let body = problem(response, 404, "not_found").await;
    assert_eq!(body["request_id"], "client-abc-123");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_missing_request_id_is_generated_as_a_uuid(pool: PgPool) {
    let app = spawn_app(pool).await;
    let first = app.get("/api/v1").await;
    let second = app.get("/api/v1").await;
    let id = |r: &reqwest::Response| {
        r.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_owned()
    };
    let (a, b) = (id(&first), id(&second));
    assert!(uuid::Uuid::parse_str(&a).is_ok(), "{a}");
    assert_ne!(a, b);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_unsafe_request_id_is_replaced(pool: PgPool) {
    let app = spawn_app(pool).await;
    let response = app
        .client
        .get(app.url("/api/v1"))
        .header("x-request-id", "evil\tid with spaces")
        .send()
        .await
        .expect("sent");
    let echoed = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(uuid::Uuid::parse_str(&echoed).is_ok(), "{echoed}");
}
