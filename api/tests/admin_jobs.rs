//! Operators acting on failed jobs: retry (one, or a queue's in chunks as an operation
//! run by the workers) and discard.

mod admin_support;
mod common;

use admin_support::*;
use common::{PASSWORD, problem, spawn_app, spawn_app_with, test_config};
use harness::system::Smtp;
use serde_json::{Value, json};
use shared::domain::{JobStatus, RequestStatus, Role};
use shared::queue::QueueName;
use sqlx::PgPool;
use uuid::Uuid;

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_job_dead_from_an_smtp_550_is_retried_after_the_cause_is_fixed_and_succeeds(
    pool: PgPool,
) {
    let mut smtp = Smtp::start(harness::free_port(), &["--reject", "nobody"]).await;
    let url = format!("smtp://127.0.0.1:{}", smtp.port);
    let app = spawn_app_with(pool, test_config(&[("SMTP_URL", &url)]), None).await;
    let admin = app.admin_with_2fa().await;
    let (_, session) = app.signed_in_user().await;
    let accepted = app
        .send_email(
            &session.access_token,
            "nobody@example.org",
            "Bounce, then not",
        )
        .await;
    let request: Uuid = accepted["id"].as_str().expect("id").parse().expect("uuid");
    app.run_pending_jobs().await;
    assert_eq!(
        request_row(&app, request).await.status,
        RequestStatus::Failed
    );

    let page = get_json(
        &app,
        &format!("/api/v1/admin/jobs?queue=emails&status=dead&request_id={request}"),
        &admin,
    )
    .await;
    let dead = &page["items"][0];
    assert_eq!(
        dead["attempt"], 1,
        "a permanent error is not retried: {dead}"
    );
    assert!(
        dead["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("550")),
        "{dead}"
    );
    assert!(dead.get("payload").is_none(), "no payload: {dead}");
    let queues = get_json(&app, "/api/v1/admin/queues", &admin).await;
    assert_eq!(queue(&queues, "emails")["dead"], 1, "{queues}");

    // The refusal put the address on the sender's suppression list; the cause is
    // fixed (the server accepts the recipient now) and an admin takes it off.
    let (user_id,): (Uuid,) = sqlx::query_as("SELECT owner_id FROM requests WHERE id = $1")
        .bind(request)
        .fetch_one(&app.state.pool)
        .await
        .expect("owner");
    let listed = get_json(
        &app,
        &format!("/api/v1/suppressions?owner={user_id}&address=nobody@example.org"),
        &admin,
    )
    .await;
    assert_eq!(listed["items"][0]["reason"], "bounce", "{listed}");
    let entry = listed["items"][0]["id"].as_str().expect("entry id");
    let removed = app
        .client
        .delete(app.url(&format!("/api/v1/suppressions/{entry}?owner={user_id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("sent");
    assert_eq!(removed.status(), 204);
    smtp.stop().await;
    smtp.restart(&[]).await;
    let id = dead["id"].as_str().expect("job id");
    let retried = post_json(&app, &format!("/api/v1/admin/jobs/{id}/retry"), &admin, 200).await;
    assert_eq!(retried["status"], "queued", "{retried}");
    assert_eq!(retried["attempt"], 0);
    assert!(retried["last_error"].is_null() && retried["finished_at"].is_null());
    let reopened = request_row(&app, request).await;
    assert_eq!(reopened.status, RequestStatus::Queued);
    assert_eq!((reopened.failed, reopened.finished_at), (0, None));

    app.run_pending_jobs().await;
    let messages = smtp.wait_for_messages(1, LONG).await;
    assert!(messages[0].contains("Bounce, then not"));
    let job = get_json(&app, &format!("/api/v1/admin/jobs/{id}"), &admin).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempt"], 1);
    let done = request_row(&app, request).await;
    assert_eq!(done.status, RequestStatus::Succeeded);
    assert_eq!((done.succeeded, done.failed), (1, 0));
    assert!(done.finished_at.is_some());
    let queues = get_json(&app, "/api/v1/admin/queues", &admin).await;
    let emails = queue(&queues, "emails");
    assert_eq!(
        (
            emails["dead"].as_i64(),
            emails["succeeded_last_hour"].as_i64()
        ),
        (Some(0), Some(1))
    );

    let rows = audit(&app, &admin).await;
    assert_eq!(rows[0]["action"], "retry");
    assert_eq!(rows[0]["target"], format!("job:{id}"));
    assert_eq!(rows[0]["details"]["was"], "dead");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn only_dead_or_cancelled_jobs_are_retried_and_unknown_ones_are_404(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_with_2fa().await;
    let (owner, _) = app.create_account(Role::User).await;
    let request = app.submit_canaries(owner, 1).await;
    let id = job_ids(&app, request).await[0];
    let path = format!("/api/v1/admin/jobs/{id}/retry");
    let body = problem(app.post_authed(&path, &admin).await, 409, "conflict").await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("queued")),
        "{body}"
    );
    app.run_pending_jobs().await;
    problem(app.post_authed(&path, &admin).await, 409, "conflict").await;
    let unknown = format!("/api/v1/admin/jobs/{}/retry", Uuid::now_v7());
    problem(app.post_authed(&unknown, &admin).await, 404, "not_found").await;
    problem(
        app.get_authed(&format!("/api/v1/admin/jobs/{}", Uuid::now_v7()), &admin)
            .await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(
        shared::db::jobs::status(&app.state.pool, id)
            .await
            .expect("status"),
        Some(JobStatus::Succeeded)
    );
    assert!(
        audit(&app, &admin).await.is_empty(),
        "a refused action is not audited"
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_retried_cancelled_job_reopens_its_request_with_corrected_counts(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_with_2fa().await;
    let (owner, email) = app.create_account(Role::User).await;
    let request = app.submit_canaries(owner, 3).await;
    let session = app.login(&email, PASSWORD).await;
    let cancelled = app
        .post_authed(
            &format!("/api/v1/requests/{request}/cancel"),
            &session.access_token,
        )
        .await;
    assert_eq!(cancelled.status(), 200);
    let row = request_row(&app, request).await;
    assert_eq!((row.status, row.cancelled), (RequestStatus::Cancelled, 3));

    let id = job_ids(&app, request).await[1];
    post_json(&app, &format!("/api/v1/admin/jobs/{id}/retry"), &admin, 200).await;
    let row = request_row(&app, request).await;
    assert_eq!(row.cancelled, 2);
    assert_eq!(row.status, RequestStatus::Running, "two jobs have ended");
    assert!(row.finished_at.is_none());

    app.run_pending_jobs().await;
    let row = request_row(&app, request).await;
    assert_eq!((row.succeeded, row.cancelled), (1, 2));
    assert_eq!(row.status, RequestStatus::PartiallyFailed);
    assert!(row.finished_at.is_some(), "closed again by the completer");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_bulk_retry_runs_in_batches_with_progress_until_done(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_with_2fa().await;
    let request = dead_canaries(&app, 2500, "boom").await;
    assert_eq!(
        request_row(&app, request).await.status,
        RequestStatus::Failed
    );

    let response = app
        .client
        .post(app.url("/api/v1/admin/jobs/retry"))
        .bearer_auth(&admin)
        .header("x-request-id", "bulk-retry-1")
        .json(&json!({"queue": "canary", "status": "dead"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let started: Value = response.json().await.expect("json");
    assert_eq!(
        location,
        format!(
            "/api/v1/admin/operations/{}",
            started["id"].as_str().expect("id")
        )
    );
    assert_eq!(started["total"], 2500);
    assert_eq!(
        (started["queue"].as_str(), started["status"].as_str()),
        (Some("canary"), Some("dead"))
    );

    let finished = operation_finished(&app, &location, &admin).await;
    assert_eq!(finished["state"], "done", "{finished}");
    assert_eq!(
        (finished["done"].as_i64(), finished["total"].as_i64()),
        (Some(2500), Some(2500))
    );
    assert!(finished["finished_at"].is_string());
    let row = request_row(&app, request).await;
    assert_eq!((row.failed, row.status), (0, RequestStatus::Queued));

    let rows = audit(&app, &admin).await;
    assert_eq!(rows.len(), 1, "one audit row for the whole operation");
    assert_eq!(rows[0]["action"], "bulk_retry");
    assert_eq!(rows[0]["target"], "queue:canary");
    assert_eq!(rows[0]["request_id"], "bulk-retry-1");
    assert_eq!(rows[0]["details"]["operation_id"], started["id"]);
    assert_eq!(rows[0]["details"]["total"], 2500);

    app.run_pending_jobs().await;
    let row = request_row(&app, request).await;
    assert_eq!(
        (row.status, row.succeeded),
        (RequestStatus::Succeeded, 2500)
    );

    // Another bulk retry finds nothing left; a bulk retry of queued jobs is refused.
    let again = app
        .post_json_authed(
            "/api/v1/admin/jobs/retry",
            &json!({"queue": "canary", "status": "dead"}),
            &admin,
        )
        .await;
    let again = json_of(again, 202).await;
    assert_eq!(again["total"], 0);
    let refused = app
        .post_json_authed(
            "/api/v1/admin/jobs/retry",
            &json!({"queue": "canary", "status": "queued"}),
            &admin,
        )
        .await;
    problem(refused, 422, "validation_failed").await;
    problem(
        app.get_authed(
            &format!("/api/v1/admin/operations/{}", Uuid::now_v7()),
            &admin,
        )
        .await,
        404,
        "not_found",
    )
    .await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_bulk_retry_leaves_jobs_that_died_after_it_began(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_with_2fa().await;
    let before = dead_canaries(&app, 3, "first").await;
    let operator = api::services::operations::Operator::cli("tester", None);
    let started = api::services::operations::start_bulk_retry(
        &app.state,
        &operator,
        QueueName::Canary,
        api::services::operations::RetryableStatus::Dead,
    )
    .await
    .expect("started");
    assert_eq!(started.total, 3);
    // A job that dies after the operation began (as a retried one failing again would).
    let after = dead_canaries(&app, 1, "later").await;
    let done = operation_finished(&app, &started.location, &admin).await;
    assert_eq!(
        (done["done"].as_i64(), done["total"].as_i64()),
        (Some(3), Some(3))
    );
    assert_eq!(request_row(&app, before).await.failed, 0);
    let later = job_ids(&app, after).await[0];
    assert_eq!(
        shared::db::jobs::status(&app.state.pool, later)
            .await
            .expect("status"),
        Some(JobStatus::Dead)
    );
    let view = get_json(&app, &started.location, &admin).await;
    assert_eq!(view["state"], "done");
    assert_eq!(view["actor"], "cli:tester");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_bulk_retry_whose_worker_died_is_resumed_by_another_and_finished(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_with_2fa().await;
    dead_canaries(&app, 1200, "boom").await;
    let operator = api::services::operations::Operator::cli("tester", None);
    let started = api::services::operations::start_bulk_retry(
        &app.state,
        &operator,
        QueueName::Canary,
        api::services::operations::RetryableStatus::Dead,
    )
    .await
    .expect("started");
    // Its job was claimed by a worker that died before the first chunk committed:
    // running, its heartbeat long stopped, its id back in Redis (the reaper returns a
    // dead consumer's in-flight ids).
    sqlx::query(
        "UPDATE jobs SET status = 'running', attempt = 1, claimed_by = 'a worker that died', \
         started_at = now() - interval '5 minutes', heartbeat_at = now() - interval '5 minutes' \
         WHERE id = $1",
    )
    .bind(started.id)
    .execute(&app.state.pool)
    .await
    .expect("stalled");
    shared::queue::Queue::new(app.state.redis.clone(), QueueName::Operations)
        .push(&[started.id.to_string()])
        .await
        .expect("pushed");
    let finished = operation_finished(&app, &started.location, &admin).await;
    assert_eq!(finished["state"], "done", "{finished}");
    assert_eq!(
        (finished["done"].as_i64(), finished["resumed"].as_i64()),
        (Some(1200), Some(1))
    );
    let job = get_json(&app, &format!("/api/v1/admin/jobs/{}", started.id), &admin).await;
    assert_eq!(
        (
            job["queue"].as_str(),
            job["status"].as_str(),
            job["attempt"].as_i64()
        ),
        (Some("operations"), Some("succeeded"), Some(2)),
        "the operation is a job like any other: {job}"
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_discarded_job_is_kept_counted_apart_and_never_retried(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_with_2fa().await;
    let request = dead_canaries(&app, 2, "boom").await;
    let ids = job_ids(&app, request).await;
    let discarded = post_json(
        &app,
        &format!("/api/v1/admin/jobs/{}/discard", ids[0]),
        &admin,
        200,
    )
    .await;
    assert_eq!(discarded["status"], "dead");
    assert!(discarded["discarded_at"].is_string(), "{discarded}");
    assert!(
        discarded["discarded_by"]
            .as_str()
            .is_some_and(|by| by.starts_with("admin:")),
        "{discarded}"
    );
    let queues = get_json(&app, "/api/v1/admin/queues", &admin).await;
    let canary = queue(&queues, "canary");
    assert_eq!(
        (canary["dead"].as_i64(), canary["discarded"].as_i64()),
        (Some(1), Some(1)),
        "{canary}"
    );

    let again = format!("/api/v1/admin/jobs/{}/discard", ids[0]);
    problem(app.post_authed(&again, &admin).await, 409, "conflict").await;
    let retry = format!("/api/v1/admin/jobs/{}/retry", ids[0]);
    let body = problem(app.post_authed(&retry, &admin).await, 409, "conflict").await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("discarded")),
        "{body}"
    );
    let (owner, _) = app.create_account(Role::User).await;
    let queued = job_ids(&app, app.submit_canaries(owner, 1).await).await[0];
    let not_dead = format!("/api/v1/admin/jobs/{queued}/discard");
    problem(app.post_authed(&not_dead, &admin).await, 409, "conflict").await;

    // A bulk retry takes the other dead job only.
    let started = app
        .post_json_authed(
            "/api/v1/admin/jobs/retry",
            &json!({"queue": "canary", "status": "dead"}),
            &admin,
        )
        .await;
    let started = json_of(started, 202).await;
    assert_eq!(started["total"], 1);
    let location = started["location"].as_str().expect("location").to_owned();
    let finished = operation_finished(&app, &location, &admin).await;
    assert_eq!(finished["done"], 1);
    let listed = get_json(
        &app,
        "/api/v1/admin/jobs?status=dead&discarded=true",
        &admin,
    )
    .await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["items"][0]["id"], ids[0].to_string());
    let row = request_row(&app, request).await;
    assert_eq!(
        row.failed, 1,
        "a discarded job still counts as failed on its request"
    );

    let rows = audit(&app, &admin).await;
    let discards: Vec<&Value> = rows.iter().filter(|r| r["action"] == "discard").collect();
    assert_eq!(discards.len(), 1);
    assert_eq!(discards[0]["target"], format!("job:{}", ids[0]));
}
