//! The operators' queue admin API and its command line: only admins with a 2FA login;
//! queue counts; job listings; retry (one, or a queue's in batches as an operation)
//! and discard of failed jobs; pause and resume; canaries; the audit log of it all.

mod common;

use std::time::Duration;

use common::{PASSWORD, TestApp, eventually, problem, spawn_app, spawn_app_with, test_config};
use serde_json::{Value, json};
use shared::domain::{JobStatus, RequestStatus, Role};
use shared::queue::{QueueName, pause};
use sqlx::PgPool;
use testkit::KEY;
use testkit::system::Smtp;
use uuid::Uuid;

const LONG: Duration = Duration::from_secs(60);

async fn json_of(response: reqwest::Response, status: u16) -> Value {
    let code = response.status().as_u16();
    let body: Value = response.json().await.expect("json body");
    assert_eq!(code, status, "{body}");
    body
}

async fn get_json(app: &TestApp, path: &str, token: &str) -> Value {
    json_of(app.get_authed(path, token).await, 200).await
}

async fn post_json(app: &TestApp, path: &str, token: &str, status: u16) -> Value {
    json_of(app.post_authed(path, token).await, status).await
}

async fn request_row(app: &TestApp, id: Uuid) -> shared::db::requests::RequestRow {
    shared::db::requests::find(&app.state.pool, id, None)
        .await
        .expect("query")
        .expect("the request")
}

async fn job_ids(app: &TestApp, request: Uuid) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT id FROM jobs WHERE request_id = $1 ORDER BY id")
        .bind(request)
        .fetch_all(&app.state.pool)
        .await
        .expect("jobs")
}

async fn audit(app: &TestApp, token: &str) -> Vec<Value> {
    let page = get_json(app, "/api/v1/admin/audit?limit=100", token).await;
    page["items"].as_array().expect("items").clone()
}

fn queue<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| q["queue"] == name)
        .expect("the queue is listed")
}

/// `count` canary jobs of a new user's request, all dead with `error`.
async fn dead_canaries(app: &TestApp, count: usize, error: &str) -> Uuid {
    let (owner, _) = app.create_account(Role::User).await;
    let request = app.submit_canaries(owner, count).await;
    let buried = app.bury_queued(QueueName::Canary, error).await;
    assert_eq!(buried.len(), count);
    request
}

/// Polls an operation until it leaves `running`.
/// Runs the `operations` queue (only: the jobs an operation sends back stay queued)
/// until the operation at `location` has ended; its view.
async fn operation_finished(app: &TestApp, location: &str, token: &str) -> Value {
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

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn users_promoters_and_admins_without_2fa_get_403_on_every_admin_route(pool: PgPool) {
    let app = spawn_app(pool).await;
    let id = Uuid::now_v7();
    let routes: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/api/v1/admin/queues".into(), None),
        ("POST", "/api/v1/admin/queues/emails/pause".into(), None),
        ("POST", "/api/v1/admin/queues/emails/resume".into(), None),
        ("GET", "/api/v1/admin/jobs".into(), None),
        ("GET", format!("/api/v1/admin/jobs/{id}"), None),
        ("POST", format!("/api/v1/admin/jobs/{id}/retry"), None),
        ("POST", format!("/api/v1/admin/jobs/{id}/discard"), None),
        (
            "POST",
            "/api/v1/admin/jobs/retry".into(),
            Some(json!({"queue": "emails", "status": "dead"})),
        ),
        ("GET", format!("/api/v1/admin/operations/{id}"), None),
        (
            "POST",
            "/api/v1/admin/canary".into(),
            Some(json!({"count": 1})),
        ),
        ("GET", "/api/v1/admin/audit".into(), None),
        (
            "PATCH",
            format!("/api/v1/admin/users/{id}"),
            Some(json!({"role": "user"})),
        ),
        ("POST", "/api/v1/admin/scans/rescan-all".into(), None),
    ];
    let mut callers = Vec::new();
    for (role, code) in [
        (Role::User, "forbidden"),
        (Role::Promoter, "forbidden"),
        (Role::Admin, "mfa_required"),
    ] {
        let (_, email) = app.create_account(role).await;
        callers.push((role, app.login(&email, PASSWORD).await.access_token, code));
    }
    for (role, token, code) in &callers {
        for (method, path, body) in &routes {
            let mut request = app
                .client
                .request(method.parse().expect("method"), app.url(path))
                .bearer_auth(token);
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.expect("sent");
            assert_eq!(response.status(), 403, "{role:?} {method} {path}");
            problem(response, 403, code).await;
        }
    }
    // Nothing happened: no pause, no request, no audit row.
    assert!(
        pause::paused(&app.state.redis)
            .await
            .expect("redis")
            .is_empty()
    );
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(&app.state.pool)
        .await
        .expect("count");
    assert_eq!(audited, 0);
    let requests: i64 = sqlx::query_scalar("SELECT count(*) FROM requests")
        .fetch_one(&app.state.pool)
        .await
        .expect("count");
    assert_eq!(requests, 0);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_job_dead_from_an_smtp_550_is_retried_after_the_cause_is_fixed_and_succeeds(
    pool: PgPool,
) {
    let mut smtp = Smtp::start(testkit::free_port(), &["--reject", "nobody"]).await;
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

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn pause_and_resume_switch_the_queue_in_redis_and_are_audited(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_with_2fa().await;
    let paused = post_json(&app, "/api/v1/admin/queues/emails/pause", &admin, 200).await;
    assert_eq!(
        paused,
        json!({"queue": "emails", "paused": true, "changed": true})
    );
    let set = pause::paused(&app.state.redis).await.expect("redis");
    assert_eq!(set.into_iter().collect::<Vec<_>>(), vec![QueueName::Emails]);
    let again = post_json(&app, "/api/v1/admin/queues/emails/pause", &admin, 200).await;
    assert_eq!(again["changed"], false);
    let queues = get_json(&app, "/api/v1/admin/queues", &admin).await;
    assert_eq!(queue(&queues, "emails")["paused"], true);
    assert_eq!(queue(&queues, "scans")["paused"], false);

    // Paused queues still accept submissions.
    let (_, session) = app.signed_in_user().await;
    app.send_email(&session.access_token, "someone@example.org", "Waits")
        .await;

    let resumed = post_json(&app, "/api/v1/admin/queues/emails/resume", &admin, 200).await;
    assert_eq!(
        resumed,
        json!({"queue": "emails", "paused": false, "changed": true})
    );
    assert!(
        pause::paused(&app.state.redis)
            .await
            .expect("redis")
            .is_empty()
    );
    let unknown = app
        .post_authed("/api/v1/admin/queues/nowhere/pause", &admin)
        .await;
    assert_eq!(unknown.status(), 400);

    let rows = audit(&app, &admin).await;
    let actions: Vec<(&str, &str, bool)> = rows
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or_default(),
                r["target"].as_str().unwrap_or_default(),
                r["details"]["changed"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            ("resume", "queue:emails", true),
            ("pause", "queue:emails", false),
            ("pause", "queue:emails", true),
        ],
        "newest first"
    );
    let metrics = shared::telemetry::prometheus().render();
    assert!(
        metrics.contains(r#"conveyor_admin_actions_total{action="pause"} 2"#),
        "{metrics}"
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn queues_report_counts_ages_and_live_workers(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_with_2fa().await;
    let empty = get_json(&app, "/api/v1/admin/queues", &admin).await;
    let names: Vec<&str> = empty["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .filter_map(|q| q["queue"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "emails",
            "uploads",
            "scans",
            "webhooks",
            "operations",
            "chores",
            "canary"
        ],
        "every queue, webhook deliveries, operations and chores too"
    );
    let canary = queue(&empty, "canary");
    assert_eq!(canary["queued"], 0);
    assert!(canary["oldest_queued_age_seconds"].is_null());
    assert_eq!(canary["workers_alive"], 0);

    dead_canaries(&app, 2, "boom").await;
    let (owner, _) = app.create_account(Role::User).await;
    app.submit_canaries(owner, 3).await;
    let counted = get_json(&app, "/api/v1/admin/queues", &admin).await;
    let canary = queue(&counted, "canary");
    assert_eq!(
        (canary["queued"].as_i64(), canary["dead"].as_i64()),
        (Some(3), Some(2)),
        "{canary}"
    );
    assert!(
        canary["oldest_queued_age_seconds"]
            .as_i64()
            .is_some_and(|s| s >= 0)
    );

    let worker = app.start_worker();
    let canary = eventually(
        LONG,
        "the worker is alive and drained the queue",
        || async {
            let list = get_json(&app, "/api/v1/admin/queues", &admin).await;
            let canary = queue(&list, "canary").clone();
            (canary["workers_alive"].as_u64() >= Some(1) && canary["succeeded_last_hour"] == 3)
                .then_some(canary)
        },
    )
    .await;
    assert_eq!(canary["queued"], 0);
    worker.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_canary_request_runs_through_the_pipeline_and_only_on_the_canary_queue(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_with_2fa().await;
    let response = app
        .post_json_authed("/api/v1/admin/canary", &json!({"count": 5}), &admin)
        .await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let accepted: Value = response.json().await.expect("json");
    assert_eq!(
        (accepted["kind"].as_str(), accepted["total"].as_i64()),
        (Some("canary"), Some(5))
    );
    assert_eq!(
        location,
        format!("/api/v1/requests/{}", accepted["id"].as_str().expect("id"))
    );
    app.run_pending_jobs().await;
    let request = get_json(&app, &location, &admin).await;
    assert_eq!(request["status"], "succeeded", "{request}");
    assert_eq!(request["jobs"]["succeeded"], 5);

    for body in [
        json!({"count": 1, "queue": "emails"}),
        json!({"count": 0}),
        json!({"count": 10001}),
        json!({"count": -1}),
        json!({"count": 1.5}),
        json!({"count": "3"}),
        json!({}),
    ] {
        let refused = app
            .post_json_authed("/api/v1/admin/canary", &body, &admin)
            .await;
        problem(refused, 422, "validation_failed").await;
    }
    for body in [
        json!({"count": 1, "queue": "canary"}),
        json!({"count": 2.0}),
    ] {
        let accepted = app
            .post_json_authed("/api/v1/admin/canary", &body, &admin)
            .await;
        assert_eq!(accepted.status(), 202, "{body}");
    }
    let rows = audit(&app, &admin).await;
    assert_eq!(rows.len(), 3, "only accepted canaries are audited");
    assert_eq!(rows[2]["action"], "canary");
    assert_eq!(
        rows[2]["target"],
        format!("request:{}", accepted["id"].as_str().expect("id"))
    );
    assert_eq!(rows[2]["details"], json!({"queue": "canary", "count": 5}));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn every_admin_action_is_audited_with_who_what_and_the_request_id(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_with_2fa().await;
    let me = get_json(&app, "/api/v1/me", &admin).await;
    let admin_id = me["id"].as_str().expect("id").to_owned();
    let (user_id, _) = app.create_account(Role::User).await;
    let request = dead_canaries(&app, 3, "boom").await;
    let ids = job_ids(&app, request).await;
    let calls: Vec<(&str, String, Option<Value>, u16)> = vec![
        (
            "PATCH",
            format!("/api/v1/admin/users/{user_id}"),
            Some(json!({"role": "promoter"})),
            200,
        ),
        ("POST", "/api/v1/admin/scans/rescan-all".into(), None, 202),
        (
            "POST",
            format!("/api/v1/admin/jobs/{}/retry", ids[0]),
            None,
            200,
        ),
        (
            "POST",
            format!("/api/v1/admin/jobs/{}/discard", ids[1]),
            None,
            200,
        ),
        (
            "POST",
            "/api/v1/admin/jobs/retry".into(),
            Some(json!({"queue": "canary", "status": "dead"})),
            202,
        ),
        (
            "POST",
            "/api/v1/admin/queues/uploads/pause".into(),
            None,
            200,
        ),
        (
            "POST",
            "/api/v1/admin/queues/uploads/resume".into(),
            None,
            200,
        ),
        (
            "POST",
            "/api/v1/admin/canary".into(),
            Some(json!({"count": 1})),
            202,
        ),
    ];
    for (i, (method, path, body, status)) in calls.iter().enumerate() {
        let mut call = app
            .client
            .request(method.parse().expect("method"), app.url(path))
            .bearer_auth(&admin)
            .header("x-request-id", format!("audit-{i}"));
        if let Some(body) = body {
            call = call.json(body);
        }
        let response = call.send().await.expect("sent");
        assert_eq!(response.status().as_u16(), *status, "{method} {path}");
    }
    let page = get_json(&app, "/api/v1/admin/audit?limit=3", &admin).await;
    let mut rows: Vec<Value> = page["items"].as_array().expect("items").clone();
    let mut cursor = page["next_cursor"].as_str().map(str::to_owned);
    while let Some(next) = cursor {
        let page = get_json(
            &app,
            &format!("/api/v1/admin/audit?limit=3&cursor={next}"),
            &admin,
        )
        .await;
        rows.extend(page["items"].as_array().expect("items").iter().cloned());
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    rows.reverse();
    let seen: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or_default(),
                r["request_id"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("role_change", "audit-0"),
            ("rescan_all", "audit-1"),
            ("retry", "audit-2"),
            ("discard", "audit-3"),
            ("bulk_retry", "audit-4"),
            ("pause", "audit-5"),
            ("resume", "audit-6"),
            ("canary", "audit-7"),
        ]
    );
    for row in &rows {
        assert_eq!(row["actor"], format!("admin:{admin_id}"), "{row}");
        assert_eq!(row["actor_id"], admin_id.as_str(), "{row}");
        assert!(row["created_at"].is_string());
    }
    assert_eq!(rows[0]["target"], format!("user:{user_id}"));
    assert_eq!(rows[0]["details"]["role"], "promoter");
    let metrics = shared::telemetry::prometheus().render();
    for action in [
        "role_change",
        "rescan_all",
        "retry",
        "discard",
        "bulk_retry",
        "pause",
        "resume",
        "canary",
    ] {
        assert!(
            metrics.contains(&format!(
                "conveyor_admin_actions_total{{action=\"{action}\"}} 1"
            )),
            "{action}: {metrics}"
        );
    }
    // The log is append-only.
    let changed = sqlx::query("UPDATE audit_log SET actor = 'someone else'")
        .execute(&app.state.pool)
        .await;
    assert!(changed.is_err());
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn jobs_are_listed_by_keyset_pages_with_filters_and_never_their_payloads(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app.admin_with_2fa().await;
    let dead = dead_canaries(&app, 2, "boom").await;
    let (owner, _) = app.create_account(Role::User).await;
    let queued = app.submit_canaries(owner, 5).await;

    let mut seen = std::collections::HashSet::new();
    let mut path = "/api/v1/admin/jobs?queue=canary&limit=3".to_owned();
    loop {
        let page = get_json(&app, &path, &admin).await;
        for item in page["items"].as_array().expect("items") {
            assert!(item.get("payload").is_none(), "{item}");
            assert!(
                seen.insert(item["id"].as_str().expect("id").to_owned()),
                "{item}"
            );
        }
        match page["next_cursor"].as_str() {
            Some(next) => path = format!("/api/v1/admin/jobs?queue=canary&limit=3&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7, "every job once");

    let of_request = get_json(
        &app,
        &format!("/api/v1/admin/jobs?request_id={queued}"),
        &admin,
    )
    .await;
    assert_eq!(of_request["items"].as_array().map(Vec::len), Some(5));
    let dead_ones = get_json(&app, "/api/v1/admin/jobs?status=dead", &admin).await;
    let items = dead_ones["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert!(
        items
            .iter()
            .all(|j| j["request_id"] == dead.to_string() && j["last_error"] == "boom")
    );
    assert!(dead_ones["next_cursor"].is_null());
    let none = get_json(&app, "/api/v1/admin/jobs?queue=emails", &admin).await;
    assert_eq!(none["items"], json!([]));

    for bad in [
        "status=lost",
        "queue=nowhere",
        "limit=0",
        "limit=101",
        "cursor=!!",
        "payload=1",
    ] {
        let response = app
            .get_authed(&format!("/api/v1/admin/jobs?{bad}"), &admin)
            .await;
        problem(response, 400, "validation_failed").await;
    }
}

#[test]
fn the_openapi_spec_documents_every_admin_route() {
    let spec: Value = serde_json::from_str(&api::openapi::json()).expect("the spec is JSON");
    for (path, method, statuses) in [
        ("/api/v1/admin/queues", "get", &["200", "403"][..]),
        (
            "/api/v1/admin/queues/{queue}/pause",
            "post",
            &["200", "400", "403", "503"],
        ),
        (
            "/api/v1/admin/queues/{queue}/resume",
            "post",
            &["200", "400", "403", "503"],
        ),
        ("/api/v1/admin/jobs", "get", &["200", "400", "403"]),
        ("/api/v1/admin/jobs/{id}", "get", &["200", "403", "404"]),
        (
            "/api/v1/admin/jobs/{id}/retry",
            "post",
            &["200", "403", "404", "409"],
        ),
        (
            "/api/v1/admin/jobs/{id}/discard",
            "post",
            &["200", "403", "404", "409"],
        ),
        ("/api/v1/admin/jobs/retry", "post", &["202", "403", "422"]),
        (
            "/api/v1/admin/operations/{id}",
            "get",
            &["200", "403", "404"],
        ),
        ("/api/v1/admin/canary", "post", &["202", "403", "422"]),
        ("/api/v1/admin/audit", "get", &["200", "400", "403"]),
        ("/api/v1/admin/schedules", "get", &["200", "403"]),
        (
            "/api/v1/admin/schedules/{name}/pause",
            "post",
            &["200", "403", "404"],
        ),
        (
            "/api/v1/admin/schedules/{name}/resume",
            "post",
            &["200", "403", "404"],
        ),
    ] {
        let operation = &spec["paths"][path][method];
        assert!(operation.is_object(), "{method} {path}");
        assert_eq!(operation["tags"][0], "admin");
        for status in statuses {
            assert!(
                operation["responses"][*status].is_object(),
                "{method} {path} {status}"
            );
        }
    }
    let schemas = &spec["components"]["schemas"];
    for name in [
        "QueueList",
        "QueueView",
        "JobPage",
        "JobView",
        "OperationView",
        "AuditPage",
        "AuditEntry",
        "CanaryRequest",
        "BulkRetryRequest",
    ] {
        assert!(schemas[name].is_object(), "schema {name}");
    }
    assert_eq!(schemas["CanaryQueue"]["enum"], json!(["canary"]));
    assert_eq!(
        schemas["RetryableStatus"]["enum"],
        json!(["dead", "cancelled"])
    );
    assert!(schemas["JobView"]["properties"].get("payload").is_none());
}

// ------------------------------------------------------------------- command line

/// Runs `api <args>` as an operator would (`OPERATOR=tester`), against this test's
/// database and Redis prefix. Async: an in-process worker keeps running meanwhile.
async fn cli(app: &TestApp, url: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_api"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("APP_ENV", "test")
        .env("DATABASE_URL", url)
        .env("REDIS_URL", testkit::redis_url())
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
