//! Migrations apply cleanly to an empty database, twice, and through the `api
//! migrate` command.

mod common;

use sqlx::PgPool;

async fn applied(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .expect("migrations table")
}

#[sqlx::test(migrations = false)]
async fn migrations_apply_to_an_empty_database_and_are_idempotent(pool: PgPool) {
    shared::db::migrate(&pool).await.expect("first run");
    let expected = i64::try_from(
        shared::db::MIGRATOR
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .count(),
    )
    .expect("count fits");
    assert_eq!(applied(&pool).await, expected);
    shared::db::migrate(&pool)
        .await
        .expect("second run is a no-op");
    assert_eq!(applied(&pool).await, expected);
}

#[sqlx::test(migrations = false)]
async fn migrations_revert_and_reapply(pool: PgPool) {
    shared::db::migrate(&pool).await.expect("up");
    shared::db::MIGRATOR
        .undo(&pool, 0)
        .await
        .expect("down to nothing");
    assert_eq!(applied(&pool).await, 0);
    shared::db::migrate(&pool).await.expect("up again");
    assert!(applied(&pool).await > 0);
}

#[sqlx::test(migrations = false)]
async fn api_migrate_command_migrates_and_exits_zero(pool: PgPool) {
    let url = common::database_url_of(&pool).await;
    for _ in 0..2 {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_api"))
            .arg("migrate")
            .env_clear()
            .env("APP_ENV", "test")
            .env("DATABASE_URL", &url)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(std::env::temp_dir())
            .output()
            .await
            .expect("api runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert!(applied(&pool).await > 0);
}

/// The migration to the one runtime carries every webhook delivery over as a job of
/// the `webhooks` queue (pending ones queued or waiting for their retry, finished ones
/// with their outcome) and a running bulk operation as its job; reverting it gives the
/// deliveries their states back.
#[sqlx::test(migrations = false)]
async fn deliveries_and_running_operations_are_carried_over_as_jobs_and_back(pool: PgPool) {
    const BEFORE: i64 = 20261124000013;
    shared::db::MIGRATOR
        .run_to(BEFORE, &pool)
        .await
        .expect("up to the webhooks' own loop");
    let owner = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO users (id, email_ciphertext, email_index, password_hash) VALUES ($1, '\\x00', $2, 'x')",
    )
    .bind(owner)
    .bind(owner.as_bytes().to_vec())
    .execute(&pool)
    .await
    .expect("user");
    // (delivery status, attempts, retry in the future?, expected job status)
    let cases = [
        ("pending", 0, false, "queued"),
        ("pending", 2, true, "retrying"),
        ("delivered", 1, false, "succeeded"),
        ("dead", 10, false, "dead"),
    ];
    let mut deliveries = Vec::new();
    for (status, attempts, later, _) in cases {
        let request = uuid::Uuid::now_v7();
        sqlx::query(
            "INSERT INTO requests (id, owner_id, kind, total, callback_url) \
             VALUES ($1, $2, 'email', 1, 'https://example.org/hook')",
        )
        .bind(request)
        .bind(owner)
        .execute(&pool)
        .await
        .expect("request");
        // Finished: the old trigger records its delivery.
        sqlx::query(
            "UPDATE requests SET status = 'succeeded', succeeded = 1, finished_at = now() WHERE id = $1",
        )
        .bind(request)
        .execute(&pool)
        .await
        .expect("finished");
        let delivery: uuid::Uuid = sqlx::query_scalar(
            "UPDATE webhook_deliveries SET status = $2, attempts = $3, \
                 next_attempt_at = now() + CASE WHEN $4 THEN interval '1 hour' ELSE interval '0' END, \
                 last_error = CASE WHEN $2 = 'dead' THEN 'the receiver answered 500' END, \
                 delivered_at = CASE WHEN $2 = 'delivered' THEN now() END \
             WHERE request_id = $1 RETURNING id",
        )
        .bind(request)
        .bind(status)
        .bind(attempts)
        .bind(later)
        .fetch_one(&pool)
        .await
        .expect("the trigger made the delivery");
        deliveries.push((request, delivery));
    }
    let operation = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO admin_operations (id, kind, actor, queue, job_status, total, runner) \
         VALUES ($1, 'bulk_retry', 'cli:tester', 'canary', 'dead', 0, 'a process')",
    )
    .bind(operation)
    .execute(&pool)
    .await
    .expect("operation");

    shared::db::migrate(&pool)
        .await
        .expect("up to the one runtime");
    for ((request, delivery), (_, attempts, later, expected)) in deliveries.iter().zip(cases) {
        let (queue, status, attempt, payload, request_id): (
            String,
            String,
            i32,
            serde_json::Value,
            Option<uuid::Uuid>,
        ) = sqlx::query_as(
            "SELECT queue, status, attempt, payload, request_id FROM jobs WHERE id = $1",
        )
        .bind(delivery)
        .fetch_one(&pool)
        .await
        .expect("the delivery's job");
        assert_eq!(
            (queue.as_str(), status.as_str(), attempt),
            ("webhooks", expected, attempts)
        );
        assert_eq!(payload["delivery_id"], delivery.to_string());
        assert_eq!(request_id, None, "a delivery is counted on no request");
        let state = shared::db::webhooks::state_of(&pool, *request)
            .await
            .expect("state")
            .expect("a delivery");
        let shown = match expected {
            "succeeded" => "delivered",
            "dead" => "dead",
            _ => "pending",
        };
        assert_eq!((state.status.as_str(), state.attempts), (shown, attempts));
        if later {
            let due: bool = sqlx::query_scalar("SELECT run_after > now() FROM jobs WHERE id = $1")
                .bind(delivery)
                .fetch_one(&pool)
                .await
                .expect("due");
            assert!(due, "a delivery waiting for its retry still waits");
        }
    }
    let (queue, status): (String, String) =
        sqlx::query_as("SELECT queue, status FROM jobs WHERE id = $1")
            .bind(operation)
            .fetch_one(&pool)
            .await
            .expect("the operation's job");
    assert_eq!((queue.as_str(), status.as_str()), ("operations", "queued"));

    shared::db::MIGRATOR
        .undo(&pool, BEFORE)
        .await
        .expect("back to the webhooks' own loop");
    let states: Vec<(String, i32)> = sqlx::query_as(
        "SELECT d.status, d.attempts FROM webhook_deliveries d \
         JOIN requests r ON r.id = d.request_id ORDER BY r.id",
    )
    .fetch_all(&pool)
    .await
    .expect("deliveries");
    let expected: Vec<(String, i32)> = cases
        .iter()
        .map(|(status, attempts, ..)| ((*status).to_owned(), *attempts))
        .collect();
    assert_eq!(states, expected);
}
