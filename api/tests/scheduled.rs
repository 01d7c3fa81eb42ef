//! Scheduled sends through the api, the dispatcher and the reconciler (real PostgreSQL
//! and Redis; the end-to-end delivery is in worker/tests/scheduled.rs): `send_at`
//! validation, where a scheduled job waits (the queue's delayed set, never a ready
//! lane), that nothing pushes it early, and that a claim refuses it before its time.

mod common;

use std::time::Duration;

use common::{TestApp, problem, spawn_app, spawn_app_with, test_config};
use serde_json::{Value, json};
use shared::db::jobs;
use shared::domain::{JobStatus, Role};
use shared::maintenance::dispatcher::Dispatcher;
use shared::queue::{Queue, QueueName};
use sqlx::PgPool;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).expect("formats")
}

/// An hour from now, in whole seconds (as PostgreSQL and Redis keep it exactly).
fn in_an_hour() -> OffsetDateTime {
    (OffsetDateTime::now_utc() + time::Duration::hours(1))
        .replace_nanosecond(0)
        .expect("0 ns is valid")
}

fn email_at(send_at: &str) -> Value {
    json!({"to": ["later@example.org"], "subject": "Later", "text": "Hi", "send_at": send_at})
}

async fn post(app: &TestApp, token: &str, path: &str, body: &Value) -> reqwest::Response {
    app.post_json_authed(path, body, token).await
}

async fn accepted(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
    response.json().await.expect("json")
}

/// (priority lane, fair lane, delayed set) of the emails queue.
async fn depths(app: &TestApp) -> (u64, u64, u64) {
    Queue::new(app.state.redis.clone(), QueueName::Emails)
        .lane_depths()
        .await
        .expect("depths")
}

/// Schedules an email an hour ahead; returns the 202 body.
async fn email_in_an_hour(app: &TestApp, token: &str) -> Value {
    let at = rfc3339(in_an_hour());
    accepted(post(app, token, "/api/v1/emails", &email_at(&at)).await).await
}

async fn job_of(app: &TestApp, request: &str) -> (Uuid, Option<OffsetDateTime>) {
    sqlx::query_as("SELECT id, run_after FROM jobs WHERE request_id = $1")
        .bind(Uuid::parse_str(request).expect("uuid"))
        .fetch_one(&app.state.pool)
        .await
        .expect("the job")
}

fn dispatcher(app: &TestApp) -> Dispatcher {
    Dispatcher::new(
        app.state.pool.clone(),
        app.state.redis.clone(),
        Duration::from_secs(3),
    )
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_send_at_past_or_within_a_second_sends_at_once(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, session) = app.signed_in_user().await;
    let now = OffsetDateTime::now_utc();
    for at in [
        now - time::Duration::hours(1),
        now + time::Duration::milliseconds(500),
    ] {
        let body = accepted(
            post(
                &app,
                &session.access_token,
                "/api/v1/emails",
                &email_at(&rfc3339(at)),
            )
            .await,
        )
        .await;
        assert!(body["send_at"].is_null(), "not scheduled: {body}");
        let id = body["id"].as_str().expect("id");
        assert_eq!(job_of(&app, id).await.1, None, "no run_after");
        let shown = app
            .get_authed(&format!("/api/v1/requests/{id}"), &session.access_token)
            .await;
        let shown: Value = shown.json().await.expect("json");
        assert!(shown["send_at"].is_null(), "{shown}");
    }
    assert_eq!(depths(&app).await, (2, 0, 0), "both are ready at once");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_send_at_too_far_ahead_or_not_rfc3339_is_refused(pool: PgPool) {
    let app = spawn_app_with(
        pool.clone(),
        test_config(&[("SEND_AT_MAX_AHEAD_SECS", "3600")]),
        None,
    )
    .await;
    let (_, promoter) = app.create_account(Role::Promoter).await;
    let token = app.login(&promoter, common::PASSWORD).await.access_token;
    let too_far = rfc3339(OffsetDateTime::now_utc() + time::Duration::minutes(61));
    for send_at in [
        too_far.as_str(),
        "tomorrow",
        "2030-01-31 09:00",
        "2030-01-31T09:00:00",
        "2030-02-30T09:00:00Z",
    ] {
        let response = post(&app, &token, "/api/v1/emails", &email_at(send_at)).await;
        let body = problem(response, 422, "validation_failed").await;
        assert_eq!(body["errors"][0]["field"], "send_at", "{send_at}: {body}");
        let campaign = json!({"name": "N", "subject": "S", "text": "T",
            "recipients": ["a@example.org"], "send_at": send_at});
        let response = post(&app, &token, "/api/v1/campaigns", &campaign).await;
        let body = problem(response, 422, "validation_failed").await;
        assert_eq!(body["errors"][0]["field"], "send_at", "{send_at}: {body}");
    }
    let response = post(
        &app,
        &token,
        "/api/v1/emails",
        &json!({"to": ["a@example.org"],
        "subject": "S", "text": "T", "send_at": 1_700_000_000}),
    )
    .await;
    problem(response, 422, "validation_failed").await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM requests")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(count, 0, "nothing was stored");
    // Just inside the limit is accepted.
    let inside = rfc3339(OffsetDateTime::now_utc() + time::Duration::minutes(59));
    accepted(post(&app, &token, "/api/v1/emails", &email_at(&inside)).await).await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_scheduled_send_waits_in_the_delayed_set_and_shows_its_time(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, promoter) = app.create_account(Role::Promoter).await;
    let token = app.login(&promoter, common::PASSWORD).await.access_token;
    let at = in_an_hour();
    let body = accepted(post(&app, &token, "/api/v1/emails", &email_at(&rfc3339(at))).await).await;
    let shown_at = OffsetDateTime::parse(body["send_at"].as_str().expect("send_at"), &Rfc3339)
        .expect("RFC 3339");
    assert_eq!(shown_at, at);
    let id = body["id"].as_str().expect("id");
    assert_eq!(
        job_of(&app, id).await.1,
        Some(shown_at),
        "run_after is send_at"
    );
    let campaign = json!({"name": "N", "subject": "S", "text": "T",
        "recipients": ["a@example.org", "b@example.org", "c@example.org"], "send_at": rfc3339(at)});
    accepted(post(&app, &token, "/api/v1/campaigns", &campaign).await).await;
    assert_eq!(
        depths(&app).await,
        (0, 0, 4),
        "all four wait for their time"
    );

    let detail: Value = app
        .get_authed(&format!("/api/v1/requests/{id}"), &token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(detail["status"], "queued");
    assert_eq!(detail["send_at"], body["send_at"], "{detail}");
    let page: Value = app
        .get_authed("/api/v1/requests", &token)
        .await
        .json()
        .await
        .expect("json");
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert!(
        items.iter().all(|r| r["send_at"] == body["send_at"]),
        "{page}"
    );

    // Cancelled before its time: nothing is left to run.
    let cancelled = app
        .post_authed(&format!("/api/v1/requests/{id}/cancel"), &token)
        .await;
    assert_eq!(cancelled.status(), 200);
    let cancelled: Value = cancelled.json().await.expect("json");
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let (job, _) = job_of(&app, id).await;
    assert_eq!(
        jobs::status(&app.state.pool, job).await.expect("status"),
        Some(JobStatus::Cancelled)
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_dispatcher_and_the_reconciler_never_push_a_scheduled_job_early(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let (_, session) = app.signed_in_user().await;
    let body = email_in_an_hour(&app, &session.access_token).await;
    let (job, _) = job_of(&app, body["id"].as_str().expect("id")).await;
    // A dispatcher has run on this Redis before (its marker is there): what Redis
    // loses below is one key, not everything.
    let round = dispatcher(&app).round().await.expect("round");
    assert_eq!(
        round.redelivered, 1,
        "the first round on a Redis takes nothing as kept"
    );
    let queue = Queue::new(app.state.redis.clone(), QueueName::Emails);
    let lose_it = || async {
        let mut conn = app.state.redis.connection();
        redis::cmd("DEL")
            .arg(queue.delayed_key())
            .query_async::<()>(&mut conn)
            .await
            .expect("del");
    };

    // Pushed a day ago and gone from Redis, but not due for an hour: not lost yet.
    lose_it().await;
    sqlx::query("UPDATE jobs SET dispatched_at = now() - interval '1 day' WHERE id = $1")
        .bind(job)
        .execute(&pool)
        .await
        .expect("update");
    let round = dispatcher(&app).round().await.expect("round");
    assert_eq!(round.redelivered, 0, "{round:?}");
    assert_eq!(depths(&app).await, (0, 0, 0));

    // Committed but never pushed: the dispatcher schedules it for its time.
    sqlx::query("UPDATE jobs SET dispatched_at = NULL WHERE id = $1")
        .bind(job)
        .execute(&pool)
        .await
        .expect("update");
    let round = dispatcher(&app).round().await.expect("round");
    assert_eq!((round.dispatched, round.redelivered), (1, 0), "{round:?}");
    assert_eq!(
        depths(&app).await,
        (0, 0, 1),
        "in the delayed set, not ready"
    );

    // Its time and the redelivery timeout have passed and Redis lost it: pushed now.
    lose_it().await;
    sqlx::query(
        "UPDATE jobs SET run_after = now() - interval '4 seconds', \
             dispatched_at = now() - interval '1 hour' WHERE id = $1",
    )
    .bind(job)
    .execute(&pool)
    .await
    .expect("update");
    let round = dispatcher(&app).round().await.expect("round");
    assert_eq!(round.redelivered, 1, "{round:?}");
    assert_eq!(depths(&app).await, (1, 0, 0));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn when_redis_loses_everything_the_next_round_pushes_every_waiting_job_again(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let (_, session) = app.signed_in_user().await;
    let token = &session.access_token;
    // A dispatcher has been running on this Redis (its marker is there).
    dispatcher(&app).round().await.expect("round");
    email_in_an_hour(&app, token).await;
    accepted(
        post(
            &app,
            token,
            "/api/v1/emails",
            &json!({"to": ["now@example.org"], "subject": "Now", "text": "Hi"}),
        )
        .await,
    )
    .await;
    assert_eq!(depths(&app).await, (1, 0, 1), "one ready, one delayed");

    // Redis restarted without persistence: every key of the prefix is gone (the
    // dispatcher's marker with them). Both were pushed a moment ago, far within the
    // redelivery timeout, yet the next round pushes both again at once, each where it
    // belongs.
    let mut conn = app.state.redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", app.state.redis.prefix()))
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert!(!keys.is_empty());
    redis::cmd("DEL")
        .arg(&keys)
        .query_async::<()>(&mut conn)
        .await
        .expect("del");
    assert_eq!(depths(&app).await, (0, 0, 0));
    let round = dispatcher(&app).round().await.expect("round");
    assert_eq!(round.redelivered, 2, "{round:?}");
    assert_eq!(
        depths(&app).await,
        (1, 0, 1),
        "the ready one ready, the scheduled one delayed"
    );

    // The marker is back: Redis is trusted again, nothing is pushed twice.
    let round = dispatcher(&app).round().await.expect("round");
    assert_eq!(round.redelivered, 0, "{round:?}");
    assert_eq!(depths(&app).await, (1, 0, 1));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_scheduled_job_pushed_early_is_not_started_and_goes_back_to_its_time(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let (_, session) = app.signed_in_user().await;
    let body = email_in_an_hour(&app, &session.access_token).await;
    let (job, run_after) = job_of(&app, body["id"].as_str().expect("id")).await;
    let stale_before = OffsetDateTime::now_utc();
    let claimed = jobs::claim(&pool, &[job], "test", stale_before)
        .await
        .expect("claim");
    assert!(claimed.is_empty(), "not claimable before its time");
    let early = jobs::not_yet_claimable(&pool, &[job], stale_before)
        .await
        .expect("not yet due");
    assert_eq!(early.len(), 1);
    assert_eq!(Some(early[0].run_after), run_after);

    // A stray push to the ready lane, with a worker running.
    let queue = Queue::new(app.state.redis.clone(), QueueName::Emails);
    let mut conn = app.state.redis.connection();
    redis::cmd("DEL")
        .arg(queue.delayed_key())
        .query_async::<()>(&mut conn)
        .await
        .expect("del");
    queue.push(&[job.to_string()]).await.expect("push");
    let worker = app.start_worker();
    harness::eventually(
        Duration::from_secs(10),
        "the early job waits in the delayed set",
        || async { (depths(&app).await == (0, 0, 1)).then_some(()) },
    )
    .await;
    worker.stop().await;
    let row = jobs::find(&pool, job).await.expect("find").expect("job");
    assert_eq!((row.status, row.attempt), (JobStatus::Queued, 0));
    assert_eq!(row.run_after, run_after);
    let mut conn = app.state.redis.connection();
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(queue.delayed_key())
        .arg(job.to_string())
        .query_async(&mut conn)
        .await
        .expect("zscore");
    let due_ms = (run_after.expect("run_after").unix_timestamp_nanos() / 1_000_000) as f64;
    assert_eq!(score, Some(due_ms), "scheduled again for its time");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_operators_retry_of_a_cancelled_scheduled_send_keeps_its_time(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let (_, session) = app.signed_in_user().await;
    let body = email_in_an_hour(&app, &session.access_token).await;
    let id = body["id"].as_str().expect("id");
    let (job, run_after) = job_of(&app, id).await;
    let cancelled = app
        .post_authed(
            &format!("/api/v1/requests/{id}/cancel"),
            &session.access_token,
        )
        .await;
    assert_eq!(cancelled.status(), 200);
    let mut conn = app.state.redis.connection();
    let queue = Queue::new(app.state.redis.clone(), QueueName::Emails);
    redis::cmd("DEL")
        .arg(queue.delayed_key())
        .query_async::<()>(&mut conn)
        .await
        .expect("del");

    let admin = app.admin_with_2fa().await;
    let retried = app
        .post_authed(&format!("/api/v1/admin/jobs/{job}/retry"), &admin)
        .await;
    assert_eq!(retried.status(), 200, "{:?}", retried.text().await);
    let row = jobs::find(&pool, job).await.expect("find").expect("job");
    assert_eq!(row.status, JobStatus::Queued);
    assert_eq!(row.run_after, run_after, "back to its schedule");
    assert_eq!(depths(&app).await, (0, 0, 1), "waiting for its time");
}
