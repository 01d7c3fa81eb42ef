//! Helpers of the operators' test suites (`admin_ops.rs`, `admin_jobs.rs`,
//! `admin_cli.rs`); each suite uses some of them.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::Value;
use shared::domain::Role;
use shared::queue::QueueName;
use uuid::Uuid;

use crate::common::{TestApp, eventually};

pub const LONG: Duration = Duration::from_secs(60);

pub async fn json_of(response: reqwest::Response, status: u16) -> Value {
    let code = response.status().as_u16();
    let body: Value = response.json().await.expect("json body");
    assert_eq!(code, status, "{body}");
    body
}

pub async fn get_json(app: &TestApp, path: &str, token: &str) -> Value {
    json_of(app.get_authed(path, token).await, 200).await
}

pub async fn post_json(app: &TestApp, path: &str, token: &str, status: u16) -> Value {
    json_of(app.post_authed(path, token).await, status).await
}

pub async fn request_row(app: &TestApp, id: Uuid) -> shared::db::requests::RequestRow {
    shared::db::requests::find(&app.state.pool, id, None)
        .await
        .expect("query")
        .expect("the request")
}

pub async fn job_ids(app: &TestApp, request: Uuid) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT id FROM jobs WHERE request_id = $1 ORDER BY id")
        .bind(request)
        .fetch_all(&app.state.pool)
        .await
        .expect("jobs")
}

pub async fn audit(app: &TestApp, token: &str) -> Vec<Value> {
    let page = get_json(app, "/api/v1/admin/audit?limit=100", token).await;
    page["items"].as_array().expect("items").clone()
}

pub fn queue<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| q["queue"] == name)
        .expect("the queue is listed")
}

/// `count` canary jobs of a new user's request, all dead with `error`.
pub async fn dead_canaries(app: &TestApp, count: usize, error: &str) -> Uuid {
    let (owner, _) = app.create_account(Role::User).await;
    let request = app.submit_canaries(owner, count).await;
    let buried = app.bury_queued(QueueName::Canary, error).await;
    assert_eq!(buried.len(), count);
    request
}

/// Runs the `operations` queue (only: the jobs an operation sends back stay queued)
/// until the operation at `location` has ended; its view.
pub async fn operation_finished(app: &TestApp, location: &str, token: &str) -> Value {
    let worker = app.start_worker_for(&[QueueName::Operations]);
    let path = location.to_owned();
    let view = eventually(LONG, "the operation ends", || {
        let path = path.clone();
        async move {
            let view = get_json(app, &path, token).await;
            (view["state"] != "running").then_some(view)
        }
    })
    .await;
    worker.stop().await;
    view
}
