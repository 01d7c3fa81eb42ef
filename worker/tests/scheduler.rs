//! The scheduler role: periodic jobs enqueued once per tick however many workers race
//! for it, missed ticks run once, paused schedules enqueue nothing, and the chores it
//! enqueues run on the runtime like any job.

use std::time::Duration;

use harness::app::{RunningWorker, TestApp, spawn_app_with, test_config};
use harness::eventually;
use shared::db::schedules;
use shared::jobs::schedule::{Chore, ChoreJob, Every};
use shared::jobs::{CanaryJob, NewJob};
use shared::queue::QueueName;
use sqlx::PgPool;
use time::OffsetDateTime;
use worker::runtime::Runtime;
use worker::scheduler::Scheduler;

async fn app(pool: PgPool, overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_with(pool, test_config(overrides), None).await
}

/// A scheduler as a worker would have it, with one schedule.
fn scheduler(app: &TestApp, name: &str, every: Every) -> Scheduler {
    let mut scheduler = Scheduler::new(
        app.state.config.clone(),
        app.state.pool.clone(),
        app.state.redis.clone(),
    );
    scheduler.schedule(name, every, NewJob::of(&CanaryJob {}).expect("job"));
    scheduler
}

/// Makes `name` due now, as if its tick had just passed; returns that tick.
async fn make_due(app: &TestApp, name: &str) -> OffsetDateTime {
    sqlx::query_scalar(
        "UPDATE schedules SET next_run_at = date_trunc('second', now()) - interval '1 second' \
         WHERE name = $1 RETURNING next_run_at",
    )
    .bind(name)
    .fetch_one(&app.state.pool)
    .await
    .expect("made due")
}

async fn jobs_of(app: &TestApp, name: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT unique_key FROM jobs WHERE unique_key LIKE $1 ORDER BY unique_key")
        .bind(format!("schedule:{name}:%"))
        .fetch_all(&app.state.pool)
        .await
        .expect("jobs")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn three_workers_racing_for_each_tick_enqueue_it_once(pool: PgPool) {
    let app = app(pool, &[]).await;
    let name = "race";
    let workers: Vec<Scheduler> = (0..3)
        .map(|_| scheduler(&app, name, Every::Interval(Duration::from_secs(3600))))
        .collect();
    for worker in &workers {
        worker.register().await.expect("registered");
    }
    // The same tick made due again and again (as if the row had been rolled back):
    // each round one worker takes the row (the others skip it, locked), and only the
    // first round makes the tick's job (its unique key holds it once).
    let first = make_due(&app, name).await;
    for round in 0..10 {
        let due = make_due(&app, name).await;
        let ticked = futures::future::join_all(workers.iter().map(Scheduler::tick)).await;
        let taken: Vec<_> = ticked.into_iter().flat_map(|t| t.expect("tick")).collect();
        assert_eq!(taken.len(), 1, "round {round}: one worker took the tick");
        assert_eq!(taken[0].tick, due);
        if due == first {
            assert_eq!(taken[0].job_id.is_some(), round == 0, "round {round}");
        }
    }
    assert!(!jobs_of(&app, name).await.is_empty());
    let keys = jobs_of(&app, name).await;
    let mut unique = keys.clone();
    unique.dedup();
    assert_eq!(keys, unique, "one job per tick");
    let row = schedules::list(&app.state.pool)
        .await
        .expect("list")
        .into_iter()
        .find(|s| s.name == name)
        .expect("registered");
    assert!(
        row.next_run_at > OffsetDateTime::now_utc(),
        "next tick ahead"
    );
    assert_eq!(row.missed, 0);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn three_running_workers_enqueue_every_tick_exactly_once(pool: PgPool) {
    let app = app(pool, &[("SCHEDULER_ENABLED", "true")]).await;
    let name = "every_second";
    let runtimes: Vec<RunningWorker> = (0..3)
        .map(|_| {
            let mut runtime = Runtime::new(
                app.state.config.clone(),
                app.state.pool.clone(),
                app.state.redis.clone(),
            );
            runtime.queue(
                worker::handlers::canary::Canary,
                app.state.config.queues.canary,
            );
            runtime.scheduler.schedule(
                name,
                Every::Interval(Duration::from_secs(1)),
                NewJob::of(&CanaryJob {}).expect("job"),
            );
            RunningWorker::start(runtime)
        })
        .collect();
    // Ticks are seconds of the clock: wait (with a deadline) until four have passed.
    eventually(Duration::from_secs(30), "four ticks enqueued", || {
        let app = &app;
        async move { (jobs_of(app, name).await.len() >= 4).then_some(()) }
    })
    .await;
    for runtime in runtimes {
        runtime.stop().await;
    }
    let keys = jobs_of(&app, name).await;
    let seconds: Vec<i64> = keys
        .iter()
        .map(|k| {
            k.rsplit(':')
                .next()
                .and_then(|s| s.parse().ok())
                .expect("tick")
        })
        .collect();
    let mut sorted = seconds.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), seconds.len(), "no tick twice: {keys:?}");
    // Every tick between the first and the last was enqueued once, or — when no
    // scheduler looked within its second (a loaded machine) — counted missed, never
    // enqueued twice.
    let missed: i64 = sqlx::query_scalar("SELECT missed FROM schedules WHERE name = $1")
        .bind(name)
        .fetch_one(&app.state.pool)
        .await
        .expect("row");
    let span = sorted.last().copied().unwrap_or(0) - sorted.first().copied().unwrap_or(0) + 1;
    let enqueued = i64::try_from(sorted.len()).expect("count");
    assert!(
        enqueued <= span && enqueued + missed >= span,
        "each tick once: {keys:?}, {missed} missed"
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn ticks_missed_during_downtime_run_once(pool: PgPool) {
    let app = app(pool, &[]).await;
    let name = "hourly_chore";
    let worker = scheduler(&app, name, Every::Interval(Duration::from_secs(60)));
    worker.register().await.expect("registered");
    // Every worker was down for about an hour.
    sqlx::query(
        "UPDATE schedules SET next_run_at = date_trunc('minute', now()) - interval '60 minutes' \
         WHERE name = $1",
    )
    .bind(name)
    .execute(&app.state.pool)
    .await
    .expect("downtime");
    let ticked = worker.tick().await.expect("tick");
    assert_eq!(ticked.len(), 1);
    assert_eq!(
        ticked[0].missed, 60,
        "the hour's other ticks are counted missed"
    );
    assert_eq!(jobs_of(&app, name).await.len(), 1, "run once, not 61 times");
    assert!(
        worker.tick().await.expect("tick").is_empty(),
        "nothing due now"
    );
    let row = schedules::list(&app.state.pool)
        .await
        .expect("list")
        .into_iter()
        .find(|s| s.name == name)
        .expect("row");
    assert_eq!(row.missed, 60);
    assert!(row.next_run_at > OffsetDateTime::now_utc());
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_paused_schedule_enqueues_nothing_until_resumed(pool: PgPool) {
    let app = app(pool, &[]).await;
    let name = "pausable";
    let worker = scheduler(&app, name, Every::Interval(Duration::from_secs(3600)));
    worker.register().await.expect("registered");
    schedules::set_paused(&app.state.pool, name, Some("cli:tester"))
        .await
        .expect("paused")
        .expect("exists");
    make_due(&app, name).await;
    assert!(worker.tick().await.expect("tick").is_empty());
    assert!(jobs_of(&app, name).await.is_empty());
    schedules::set_paused(&app.state.pool, name, None)
        .await
        .expect("resumed")
        .expect("exists");
    assert_eq!(worker.tick().await.expect("tick").len(), 1);
    assert_eq!(jobs_of(&app, name).await.len(), 1);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_chores_are_schedules_whose_jobs_run_on_the_runtime(pool: PgPool) {
    let app = app(pool, &[]).await;
    let runtime = Runtime::with_queues(
        app.state.config.clone(),
        app.state.pool.clone(),
        app.state.redis.clone(),
    )
    .expect("runtime");
    let scheduler = runtime.scheduler.clone();
    scheduler.register().await.expect("registered");
    for chore in Chore::ALL {
        make_due(&app, chore.name()).await;
    }
    let ticked = scheduler.tick().await.expect("tick");
    assert_eq!(ticked.len(), Chore::ALL.len());
    app.run_until_idle(runtime).await;
    let statuses: Vec<(String, String)> =
        sqlx::query_as("SELECT payload->>'chore', status FROM jobs WHERE queue = $1 ORDER BY 1")
            .bind(QueueName::Chores)
            .fetch_all(&app.state.pool)
            .await
            .expect("jobs");
    assert_eq!(
        statuses,
        vec![
            (
                "cleanup_unverified_accounts".to_owned(),
                "succeeded".to_owned()
            ),
            ("prune_retention".to_owned(), "succeeded".to_owned()),
            ("sample_queues".to_owned(), "succeeded".to_owned()),
        ]
    );
    // The sample is stored for every worker's /metrics, with this run's chores in it.
    let sample = shared::maintenance::sample::Sample::latest(&app.state.redis)
        .await
        .expect("redis")
        .expect("a stored sample");
    let chores = sample
        .queues
        .iter()
        .find(|q| q.queue == "chores")
        .expect("the chores queue");
    // Itself, and whichever other chores of the tick were running beside it: the
    // queue's concurrency is 2, but a finished job's row stays `running` until the
    // completer's next batch records it, so a third can already have been claimed.
    assert!(
        (1..=3).contains(&chores.jobs[2]),
        "the sample counted itself running: {sample:?}"
    );
    assert_eq!(
        chores.workers_alive, 1,
        "this runtime's consumer: {sample:?}"
    );
    let payload: ChoreJob =
        serde_json::from_value(serde_json::json!({"chore": "prune_retention"})).expect("payload");
    assert_eq!(payload.chore, Chore::PruneRetention);
}
