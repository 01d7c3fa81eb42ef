//! The job runtime in process (no binaries): every queue goes through the same
//! producer, executor, completer and maintenance; these tests drive it through the
//! shared harness and check what PostgreSQL, Redis and the metrics say afterwards.

use std::time::{Duration, Instant, SystemTime};

use harness::app::{TestApp, spawn_app_with, test_config};
use harness::system::{Smtp, header};
use harness::{eventually, free_port};
use shared::db::jobs::{self, ClaimedJob};
use shared::domain::{JobStatus, RequestStatus};
use shared::jobs::CanaryJob;
use shared::maintenance::dispatcher::Dispatcher;
use shared::maintenance::retention::Pruner;
use shared::queue::{Queue, QueueName};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;
use worker::completer::{self, Report, Verdict};
use worker::handler::{Handler, Outcome};
use worker::runtime::Runtime;

async fn app(pool: PgPool, overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_with(pool, test_config(overrides), None).await
}

async fn owner(app: &TestApp) -> Uuid {
    app.create_account(shared::domain::Role::User).await.0
}

async fn request_row(app: &TestApp, id: Uuid) -> shared::db::requests::RequestRow {
    shared::db::requests::find(&app.state.pool, id, None)
        .await
        .expect("query")
        .expect("request exists")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn canary_jobs_travel_the_whole_pipeline(pool: PgPool) {
    let app = app(pool, &[]).await;
    let owner = owner(&app).await;
    let request = app.submit_canaries(owner, 25).await;
    app.run_pending_jobs().await;
    let row = request_row(&app, request).await;
    assert_eq!(row.status, RequestStatus::Succeeded);
    assert_eq!((row.total, row.succeeded, row.failed), (25, 25, 0));
    assert!(row.finished_at.is_some());
    let metrics = shared::telemetry::prometheus().render();
    assert!(
        metrics.contains(r#"conveyor_jobs_finished_total{queue="canary",outcome="succeeded"}"#),
        "{metrics}"
    );
    // Nothing is left in Redis: every id was acknowledged.
    let (ready, delayed) = Queue::new(app.state.redis.clone(), QueueName::Canary)
        .depth()
        .await
        .expect("depth");
    assert_eq!((ready, delayed), (0, 0));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_email_run_in_process_reaches_the_smtp_server(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &[]).await;
    let url = format!("smtp://127.0.0.1:{}", smtp.port);
    let app = app(pool, &[("SMTP_URL", &url)]).await;
    let (_, session) = app.register_user().await;
    let accepted = app
        .send_email(&session.access_token, "dora@example.org", "In process")
        .await;
    app.run_pending_jobs().await;
    let messages = smtp.wait_for_messages(1, Duration::from_secs(10)).await;
    assert_eq!(header(&messages[0], "Subject"), Some("In process"));
    let id: Uuid = accepted["id"].as_str().expect("id").parse().expect("uuid");
    assert_eq!(request_row(&app, id).await.status, RequestStatus::Succeeded);
}

/// Panics on every attempt.
struct Panics;
impl Handler for Panics {
    type Job = CanaryJob;
    async fn handle(&self, _job: &ClaimedJob, _payload: CanaryJob) -> Outcome {
        panic!("the widget exploded")
    }
}

/// Never finishes within the queue's timeout.
struct Hangs;
impl Handler for Hangs {
    type Job = CanaryJob;
    async fn handle(&self, _job: &ClaimedJob, _payload: CanaryJob) -> Outcome {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Outcome::Succeeded
    }
}

fn quick_retries() -> [(&'static str, &'static str); 4] {
    [
        ("CANARY_MAX_ATTEMPTS", "2"),
        ("CANARY_RETRY_BASE_MS", "10"),
        ("CANARY_RETRY_CAP_MS", "20"),
        ("CANARY_TIMEOUT_SECS", "1"),
    ]
}

async fn run_with<H: Handler>(app: &TestApp, handler: H) {
    let config = app.state.config.clone();
    let mut runtime = Runtime::new(
        config.clone(),
        app.state.pool.clone(),
        app.state.redis.clone(),
    );
    runtime.queue(handler, config.queues.canary);
    app.run_until_idle(runtime).await;
}

async fn the_only_job(app: &TestApp, request: Uuid) -> (JobStatus, i32, Option<String>) {
    sqlx::query_as("SELECT status, attempt, last_error FROM jobs WHERE request_id = $1")
        .bind(request)
        .fetch_one(&app.state.pool)
        .await
        .expect("one job")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_panicking_handler_is_retried_then_dead_with_its_message(pool: PgPool) {
    let app = app(pool, &quick_retries()).await;
    let request = app.submit_canaries(owner(&app).await, 1).await;
    run_with(&app, Panics).await;
    let (status, attempts, error) = the_only_job(&app, request).await;
    assert_eq!(status, JobStatus::Dead);
    assert_eq!(attempts, 2, "retried once, not dead at the first panic");
    assert_eq!(
        error.as_deref(),
        Some("the handler panicked: the widget exploded (after 2 attempts)")
    );
    assert_eq!(
        request_row(&app, request).await.status,
        RequestStatus::Failed
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_job_past_its_timeout_is_retried_then_dead(pool: PgPool) {
    let app = app(pool, &quick_retries()).await;
    let request = app.submit_canaries(owner(&app).await, 1).await;
    let started = Instant::now();
    run_with(&app, Hangs).await;
    let (status, attempts, error) = the_only_job(&app, request).await;
    assert_eq!(status, JobStatus::Dead);
    assert_eq!(attempts, 2);
    assert_eq!(
        error.as_deref(),
        Some("the job timed out after 1 s (after 2 attempts)")
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// Claims every queued canary job of the database for `worker`.
async fn claim_all(app: &TestApp, worker: &str) -> Vec<ClaimedJob> {
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM jobs ORDER BY id")
        .fetch_all(&app.state.pool)
        .await
        .expect("ids");
    jobs::claim(&app.state.pool, &ids, worker, OffsetDateTime::now_utc())
        .await
        .expect("claim")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_write_reports_what_it_changed_and_a_repeat_changes_nothing(pool: PgPool) {
    let app = app(pool, &[]).await;
    let request = app.submit_canaries(owner(&app).await, 3).await;
    let claimed = claim_all(&app, "w1").await;
    assert_eq!(claimed.len(), 3);
    let verdicts = [
        Verdict::Succeeded,
        Verdict::Retry {
            error: "busy".into(),
            at: SystemTime::now() + Duration::from_secs(60),
        },
        Verdict::Dead {
            error: "broken".into(),
        },
    ];
    let batch: Vec<Report> = claimed
        .iter()
        .zip(verdicts)
        .map(|(job, verdict)| {
            Report::new(
                QueueName::Canary,
                job.id,
                job.request_id,
                verdict,
                Instant::now(),
            )
        })
        .collect();
    let committed = completer::write(&app.state.pool, &app.state.config.queues, &batch)
        .await
        .expect("write");
    assert_eq!(committed.outcome_of(&claimed[0].id), Some("succeeded"));
    assert_eq!(committed.outcome_of(&claimed[1].id), Some("retried"));
    assert_eq!(committed.outcome_of(&claimed[2].id), Some("dead"));
    assert_eq!(committed.requests.len(), 1);
    let row = &committed.requests[0];
    assert_eq!((row.id, row.succeeded, row.failed), (request, 1, 1));
    assert_eq!(
        row.status,
        RequestStatus::Running,
        "started by the claim; one job is still to retry"
    );

    // The same batch again (a retried write after its commit went through): nothing
    // changes, so no metric, event or retry would follow.
    let again = completer::write(&app.state.pool, &app.state.config.queues, &batch)
        .await
        .expect("write");
    assert!(
        claimed
            .iter()
            .all(|job| again.outcome_of(&job.id).is_none())
    );
    assert!(again.requests.is_empty());
    let row = request_row(&app, request).await;
    assert_eq!((row.succeeded, row.failed), (1, 1), "counted once");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn handed_back_jobs_are_queued_again_and_dispatched(pool: PgPool) {
    let app = app(pool, &[]).await;
    let request = app.submit_canaries(owner(&app).await, 2).await;
    let claimed = claim_all(&app, "leaving-worker").await;
    let ids: Vec<Uuid> = claimed.iter().map(|j| j.id).collect();
    assert_eq!(
        jobs::heartbeat(&app.state.pool, &ids, "another-worker")
            .await
            .expect("beat"),
        0,
        "only the claimant's heartbeat counts"
    );
    assert_eq!(
        jobs::heartbeat(&app.state.pool, &ids, "leaving-worker")
            .await
            .expect("beat"),
        2
    );
    assert_eq!(
        jobs::hand_back(&app.state.pool, &ids, "leaving-worker")
            .await
            .expect("hand back"),
        2
    );
    for id in &ids {
        assert_eq!(
            jobs::status(&app.state.pool, *id).await.expect("status"),
            Some(JobStatus::Queued)
        );
    }
    let summary = jobs::summary(&app.state.pool, request)
        .await
        .expect("summary");
    assert_eq!(
        (summary.queued, summary.attempts),
        (2, 0),
        "the attempt is not counted"
    );
    let round = Dispatcher::new(
        app.state.pool.clone(),
        app.state.redis.clone(),
        Duration::from_secs(60),
    )
    .round()
    .await
    .expect("round");
    assert_eq!(round.dispatched, 2);
    assert_eq!(round.backlog, 0);
    app.run_pending_jobs().await;
    assert_eq!(
        request_row(&app, request).await.status,
        RequestStatus::Succeeded
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_pruner_deletes_finished_requests_past_retention_only(pool: PgPool) {
    let app = app(pool, &[]).await;
    let owner = owner(&app).await;
    let old = app.submit_canaries(owner, 2).await;
    let recent = app.submit_canaries(owner, 1).await;
    app.run_pending_jobs().await;
    let unfinished = app.submit_canaries(owner, 1).await;
    sqlx::query("UPDATE requests SET finished_at = now() - interval '40 days', created_at = now() - interval '40 days' WHERE id = $1")
        .bind(old)
        .execute(&app.state.pool)
        .await
        .expect("age the request");
    let pruner = Pruner::new(
        app.state.pool.clone(),
        app.state.redis.clone(),
        Duration::from_secs(30 * 86_400),
        Duration::from_secs(7 * 86_400),
    );
    let pruned = pruner.round().await.expect("prune");
    assert_eq!(pruned.requests, 1);
    let find = |id| shared::db::requests::find(&app.state.pool, id, None);
    assert!(find(old).await.expect("query").is_none());
    assert!(find(recent).await.expect("query").is_some());
    assert!(find(unfinished).await.expect("query").is_some());
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE request_id = $1")
        .bind(old)
        .fetch_one(&app.state.pool)
        .await
        .expect("count");
    assert_eq!(left, 0, "the jobs went with their request");
    assert_eq!(pruner.round().await.expect("prune").requests, 0);
}

/// A job given back to the queue a moment before its dead worker's heartbeat is stale
/// (the reaper acts on the consumer's expiry, the claim on the row's) is scheduled for
/// when it can be claimed, not dropped as a duplicate: it runs without the reconciler.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_job_given_back_before_its_heartbeat_is_stale_runs_once_it_is(pool: PgPool) {
    let app = app(
        pool,
        &[
            ("JOB_HEARTBEAT_TIMEOUT_MS", "1500"),
            ("REDELIVERY_TIMEOUT_SECS", "600"),
        ],
    )
    .await;
    let owner = owner(&app).await;
    let request = app.submit_canaries(owner, 1).await;
    let id: Uuid = sqlx::query_scalar("SELECT id FROM jobs WHERE request_id = $1")
        .bind(request)
        .fetch_one(&app.state.pool)
        .await
        .expect("job");
    // A worker claimed it and died at once: its heartbeat is fresh for 1.5 s more.
    let stale_before = OffsetDateTime::now_utc() - Duration::from_secs(60);
    let claimed = jobs::claim(&app.state.pool, &[id], "dead-worker", stale_before)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    // The reaper gives its id back now, before the row's heartbeat is stale.
    Queue::new(app.state.redis.clone(), QueueName::Canary)
        .push(&[id.to_string()])
        .await
        .expect("push");
    let worker = app.start_worker_for(&[QueueName::Canary]);
    let (status, attempt) = eventually(Duration::from_secs(20), "the job runs again", || {
        let pool = app.state.pool.clone();
        async move {
            let (status, attempt): (String, i32) =
                sqlx::query_as("SELECT status, attempt FROM jobs WHERE id = $1")
                    .bind(id)
                    .fetch_one(&pool)
                    .await
                    .expect("job");
            (status == "succeeded").then_some((status, attempt))
        }
    })
    .await;
    worker.stop().await;
    assert_eq!((status.as_str(), attempt), ("succeeded", 2));
}

/// Jobs of no request: past the retention they go; succeeded chores (a sample every
/// 5 s) go after a day, while a dead chore stays for the retention like any job.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_pruner_keeps_succeeded_chores_a_day_and_other_unowned_jobs_the_retention(
    pool: PgPool,
) {
    let app = app(pool, &[]).await;
    let job = |queue: &'static str, status: &'static str, age: &'static str| {
        let pool = app.state.pool.clone();
        async move {
            sqlx::query_scalar::<_, Uuid>(
                "INSERT INTO jobs (id, queue, payload, max_attempts, status, finished_at) \
                 VALUES ($1, $2, '{}'::jsonb, 3, $3, now() - $4::interval) RETURNING id",
            )
            .bind(Uuid::now_v7())
            .bind(queue)
            .bind(status)
            .bind(age)
            .fetch_one(&pool)
            .await
            .expect("a finished job")
        }
    };
    let old_sample = job("chores", "succeeded", "25 hours").await;
    let new_sample = job("chores", "succeeded", "1 hour").await;
    let dead_chore = job("chores", "dead", "25 hours").await;
    let delivery = job("webhooks", "succeeded", "25 hours").await;
    let expired = job("webhooks", "dead", "31 days").await;
    let pruner = Pruner::new(
        app.state.pool.clone(),
        app.state.redis.clone(),
        Duration::from_secs(30 * 86_400),
        Duration::from_secs(7 * 86_400),
    );
    assert_eq!(pruner.round().await.expect("prune").jobs, 2);
    let left: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM jobs ORDER BY id")
        .fetch_all(&app.state.pool)
        .await
        .expect("jobs");
    assert_eq!(left, vec![new_sample, dead_chore, delivery]);
    assert!(!left.contains(&old_sample) && !left.contains(&expired));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_registered_handler_replaces_the_default_for_its_queue(pool: PgPool) {
    let app = app(pool, &[]).await;
    let config = app.state.config.clone();
    let mut runtime = Runtime::with_queues(
        config.clone(),
        app.state.pool.clone(),
        app.state.redis.clone(),
    )
    .expect("runtime");
    assert_eq!(
        runtime.queue_names(),
        QueueName::ALL.to_vec(),
        "every queue has its handler"
    );
    runtime.queue(Panics, config.queues.canary);
    assert_eq!(
        runtime.queue_names(),
        QueueName::ALL.to_vec(),
        "every queue has its handler"
    );
}

/// The worker's connections plan every statement for its parameters: a plan cached
/// while `jobs` held a few rows (sequential scans) must not be used once a campaign
/// has added 100,000 — with the generic plan this claim ran for minutes.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_claim_after_jobs_grew_from_a_few_rows_uses_a_plan_for_the_many(pool: PgPool) {
    let database_url = harness::database_url_of(&pool).await;
    let config = test_config(&[
        ("DATABASE_URL", database_url.as_str()),
        ("DATABASE_MAX_CONNECTIONS", "1"),
    ]);
    let app = spawn_app_with(pool.clone(), test_config(&[]), None).await;
    let (owner, _) = app.create_account(shared::domain::Role::Promoter).await;
    let worker_pool = shared::db::worker_pool(&config).expect("pool");
    let mode: String = sqlx::query_scalar("SHOW plan_cache_mode")
        .fetch_one(&worker_pool)
        .await
        .expect("show");
    assert_eq!(mode, "force_custom_plan");
    let stale = OffsetDateTime::now_utc() - Duration::from_secs(60);
    // Ten claims on a tiny table: PostgreSQL would cache a generic plan from here.
    for _ in 0..10 {
        let request = app.submit_canaries(owner, 1).await;
        let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM jobs WHERE request_id = $1")
            .bind(request)
            .fetch_all(&pool)
            .await
            .expect("ids");
        let claimed = jobs::claim(&worker_pool, &ids, "w", stale)
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1);
    }
    let big = app.submit_canaries(owner, 100_000).await;
    let ids: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM jobs WHERE request_id = $1 ORDER BY id LIMIT 32")
            .bind(big)
            .fetch_all(&pool)
            .await
            .expect("ids");
    let claimed = tokio::time::timeout(
        Duration::from_secs(60),
        jobs::claim(&worker_pool, &ids, "w", stale),
    )
    .await
    .expect("the claim finishes (a generic plan takes minutes)")
    .expect("claim");
    assert_eq!(claimed.len(), 32);
    // The test database is dropped after the test: no connection may be left on it.
    worker_pool.close().await;
}

/// The runtime hands tests signals: a test awaits the completer's record of a job
/// instead of polling the database.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_completer_signals_each_outcome_it_recorded(pool: PgPool) {
    let app = app(pool, &quick_retries()).await;
    let owner = owner(&app).await;
    let request = app.submit_canaries(owner, 1).await;
    let job: Uuid = sqlx::query_scalar("SELECT id FROM jobs WHERE request_id = $1")
        .bind(request)
        .fetch_one(&app.state.pool)
        .await
        .expect("job");
    let mut worker = harness::app::RunningWorker::start(
        Runtime::with_queues(
            app.state.config.clone(),
            app.state.pool.clone(),
            app.state.redis.clone(),
        )
        .expect("runtime"),
    );
    assert_eq!(
        worker.job_recorded(job, Duration::from_secs(30)).await,
        "succeeded"
    );
    worker.stop().await;
    assert_eq!(
        request_row(&app, request).await.status,
        RequestStatus::Succeeded
    );
}
