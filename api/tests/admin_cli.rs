//! The operators' command line (`api queues|jobs|schedules|canary …`): the same
//! services and the same audit rows as the admin API.

mod admin_support;
mod common;

use admin_support::*;
use common::{TestApp, spawn_app_with, test_config};
use harness::KEY;
use serde_json::Value;
use shared::domain::RequestStatus;
use shared::queue::{QueueName, pause};
use sqlx::PgPool;
use uuid::Uuid;

/// Runs `api <args>` as an operator would (`OPERATOR=tester`), against this test's
/// database and Redis prefix. Async: an in-process worker keeps running meanwhile.
async fn cli(app: &TestApp, url: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_api"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("APP_ENV", "test")
        .env("DATABASE_URL", url)
        .env("REDIS_URL", harness::redis_url())
        .env("REDIS_PREFIX", app.state.redis.prefix())
        .env("PII_KEY", KEY)
        .env("BLIND_INDEX_KEY", KEY)
        .env("OPERATOR", "tester")
        .current_dir(std::env::temp_dir())
        .output()
        .await
        .expect("api runs")
}

fn succeeded(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

async fn cli_json(app: &TestApp, url: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    serde_json::from_str(&succeeded(&cli(app, url, &args).await)).expect("json output")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_command_line_does_the_same_and_writes_the_same_audit_rows(pool: PgPool) {
    let url = common::database_url_of(&pool).await;
    let config = test_config(&[("PII_KEY", KEY), ("BLIND_INDEX_KEY", KEY)]);
    let app = spawn_app_with(pool, config, None).await;
    let admin = app.admin_with_2fa().await;
    let request = dead_canaries(&app, 4, "boom").await;
    let ids = job_ids(&app, request).await;

    let out = succeeded(&cli(&app, &url, &["queues", "pause", "emails"]).await);
    assert_eq!(out.trim(), "queue emails is paused");
    assert!(
        pause::paused(&app.state.redis)
            .await
            .expect("redis")
            .contains(&QueueName::Emails)
    );
    let list = cli_json(&app, &url, &["queues", "list"]).await;
    assert_eq!(queue(&list, "emails")["paused"], true);
    assert_eq!(queue(&list, "canary")["dead"], 4);
    let table = succeeded(&cli(&app, &url, &["queues", "list"]).await);
    assert!(
        table.starts_with("QUEUE") && table.contains("canary"),
        "{table}"
    );
    succeeded(&cli(&app, &url, &["queues", "resume", "emails"]).await);
    assert!(
        pause::paused(&app.state.redis)
            .await
            .expect("redis")
            .is_empty()
    );

    let dead = cli_json(
        &app,
        &url,
        &["jobs", "list", "--queue", "canary", "--status", "dead"],
    )
    .await;
    assert_eq!(dead["items"].as_array().map(Vec::len), Some(4));
    let table = succeeded(&cli(&app, &url, &["jobs", "list", "--status", "dead"]).await);
    assert!(
        table.contains("boom") && table.contains(&ids[0].to_string()),
        "{table}"
    );

    let one = ids[0].to_string();
    let retried = cli_json(&app, &url, &["jobs", "retry", "--id", &one]).await;
    assert_eq!(
        (retried["status"].as_str(), retried["attempt"].as_i64()),
        (Some("queued"), Some(0))
    );
    let again = cli(&app, &url, &["jobs", "retry", "--id", &one]).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("only dead or cancelled"));
    let unknown = cli(
        &app,
        &url,
        &["jobs", "retry", "--id", &Uuid::now_v7().to_string()],
    )
    .await;
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no such job"));

    let other = ids[1].to_string();
    let out = succeeded(&cli(&app, &url, &["jobs", "discard", "--id", &other]).await);
    assert!(out.contains("discarded"), "{out}");

    // A bulk retry is run by the workers (the operations queue only here: the jobs it
    // sends back stay queued); the command follows it to its end.
    let operations = app.start_worker_for(&[QueueName::Operations]);
    let out = succeeded(
        &cli(
            &app,
            &url,
            &["jobs", "retry", "--queue", "canary", "--status", "dead"],
        )
        .await,
    );
    assert!(out.contains("done: 2 of 2"), "{out}");
    let finished = cli_json(
        &app,
        &url,
        &["jobs", "retry", "--queue", "canary", "--status", "dead"],
    )
    .await;
    assert_eq!(
        (finished["state"].as_str(), finished["total"].as_i64()),
        (Some("done"), Some(0))
    );
    operations.stop().await;

    let accepted = cli_json(&app, &url, &["canary", "--count", "3"]).await;
    assert_eq!(accepted["total"], 3);
    app.run_pending_jobs().await;
    let row = request_row(&app, request).await;
    assert_eq!(
        (row.succeeded, row.failed),
        (3, 1),
        "the discarded job stays failed"
    );
    let canary: Uuid = accepted["id"].as_str().expect("id").parse().expect("uuid");
    assert_eq!(
        request_row(&app, canary).await.status,
        RequestStatus::Succeeded
    );
    let worker = app.start_worker();
    let waited = succeeded(&cli(&app, &url, &["canary", "--count", "2", "--wait", "60"]).await);
    assert!(waited.contains("succeeded: 2 of 2 succeeded"), "{waited}");
    worker.stop().await;
    let bad = cli(&app, &url, &["canary", "--count", "0"]).await;
    assert_eq!(bad.status.code(), Some(1));

    let rows = audit(&app, &admin).await;
    let mut actions: Vec<&str> = rows
        .iter()
        .map(|r| r["action"].as_str().unwrap_or_default())
        .collect();
    actions.reverse();
    assert_eq!(
        actions,
        [
            "pause",
            "resume",
            "retry",
            "discard",
            "bulk_retry",
            "bulk_retry",
            "canary",
            "canary"
        ]
    );
    for row in &rows {
        assert_eq!(row["actor"], "cli:tester", "{row}");
        assert!(row["actor_id"].is_null());
        assert!(
            row["request_id"]
                .as_str()
                .is_some_and(|id| id.parse::<Uuid>().is_ok()),
            "{row}"
        );
    }
    assert_eq!(rows.last().expect("first")["target"], "queue:emails");
}
