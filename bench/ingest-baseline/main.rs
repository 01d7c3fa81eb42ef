//! The baseline of `api_ingest_*` in `scripts/bench` (built as the `ingest_baseline`
//! example of the api crate): a bare axum endpoint, `POST /api/v1/emails`, that parses
//! the JSON body, does one parameterised PostgreSQL INSERT into a scratch table and
//! answers 202 with a small JSON body. No authentication, rate limiting, validation,
//! encryption, quota or Redis: what is left is the floor any ingest endpoint on this
//! stack pays (HTTP, JSON, one round trip to PostgreSQL).
//!
//! Environment: `DATABASE_URL` (a scratch database; the table `bench_ingest` is
//! created there), `BASELINE_ADDR` (default `127.0.0.1:8090`),
//! `DATABASE_MAX_CONNECTIONS` (default 10, the api's default pool size). Stops on
//! SIGTERM or SIGINT.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::signal::unix::{SignalKind, signal};
use uuid::Uuid;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL")?;
    let addr = std::env::var("BASELINE_ADDR").unwrap_or_else(|_| "127.0.0.1:8090".to_owned());
    let pool_size: u32 = std::env::var("DATABASE_MAX_CONNECTIONS")
        .unwrap_or_else(|_| "10".to_owned())
        .parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(pool_size)
        .connect(&url)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_ingest (\
             id uuid PRIMARY KEY, \
             payload jsonb NOT NULL, \
             created_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&pool)
    .await?;
    let app = Router::new()
        .route("/api/v1/emails", post(ingest))
        .with_state(pool);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("ingest-baseline: listening on {addr} (pool {pool_size})");
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
        .await?;
    Ok(())
}

async fn ingest(State(pool): State<PgPool>, body: Bytes) -> Response {
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let id = Uuid::now_v7();
    let inserted = sqlx::query("INSERT INTO bench_ingest (id, payload) VALUES ($1, $2)")
        .bind(id)
        .bind(sqlx::types::Json(&payload))
        .execute(&pool)
        .await;
    match inserted {
        Ok(_) => (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({
                "id": id,
                "status": "queued",
                "location": format!("/api/v1/requests/{id}"),
            })),
        )
            .into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
