//! An operator's pause across worker processes: two real `worker` binaries stop
//! taking a paused queue (jobs wait in PostgreSQL and in the ready list) and take it
//! again on resume.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Smtp, System, free_port};
use redis::AsyncCommands as _;
use shared::queue::pause::{pause, resume};
use shared::queue::{Queue, QueueName};
use shared::redis::Redis;
use sqlx::PgPool;

const LONG: Duration = Duration::from_secs(60);

fn env<'a>(system: &'a System, key: &str) -> &'a str {
    system
        .env
        .iter()
        .find_map(|(k, v)| (k == key).then_some(v.as_str()))
        .unwrap_or_else(|| panic!("{key} is set for the system"))
}

/// The `/metrics` address a worker logged at start (JSON logs).
fn metrics_addr(log: &str) -> Option<String> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["message"] == "worker started")
        .and_then(|line| line["metrics"].as_str().map(str::to_owned))
}

/// Each worker's `/metrics` URL, once it has logged it.
async fn metrics_urls(system: &System) -> Vec<String> {
    harness::eventually(
        Duration::from_secs(20),
        "every worker logs its metrics address",
        || async {
            let addrs: Option<Vec<String>> = system
                .workers
                .iter()
                .map(|w| metrics_addr(&w.log_text()))
                .collect();
            addrs.map(|addrs| {
                addrs
                    .iter()
                    .map(|a| format!("http://{a}/metrics"))
                    .collect()
            })
        },
    )
    .await
}

/// Polls until every worker's `/metrics` has `line`; returns how long that took.
async fn until_every_worker_shows(system: &System, urls: &[String], line: &str) -> Duration {
    let started = Instant::now();
    let what = format!("every worker shows `{line}`");
    harness::eventually_every(
        Duration::from_millis(20),
        Duration::from_secs(15),
        &what,
        || async {
            for url in urls {
                let text = match system.client.get(url).send().await {
                    Ok(response) => response.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                if !text.lines().any(|l| l == line) {
                    return None;
                }
            }
            Some(started.elapsed())
        },
    )
    .await
}

/// The emails jobs that have left `queued` or counted an attempt.
async fn started_jobs(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE queue = 'emails' AND (status <> 'queued' OR attempt > 0)",
    )
    .fetch_one(pool)
    .await
    .expect("count")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_paused_queue_is_left_alone_by_every_worker_until_it_is_resumed(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &[]).await;
    let mut system = System::new(&pool, smtp.port, &[("LOG_FORMAT", "json")]).await;
    system.start_api().await;
    system.start_worker().await;
    system.start_worker().await;
    let urls = metrics_urls(&system).await;
    let redis = Redis::connect_lazy_to(env(&system, "REDIS_URL"), env(&system, "REDIS_PREFIX"))
        .expect("redis url");
    let paused_line = r#"conveyor_queue_paused{queue="emails"} 1"#;
    let running_line = r#"conveyor_queue_paused{queue="emails"} 0"#;
    until_every_worker_shows(&system, &urls, running_line).await;

    assert!(pause(&redis, QueueName::Emails).await.expect("pause"));
    let pause_latency = until_every_worker_shows(&system, &urls, paused_line).await;
    eprintln!("pause seen by both workers after {pause_latency:?}");
    assert!(pause_latency < Duration::from_secs(5), "{pause_latency:?}");

    // Submissions are still accepted; the jobs wait in PostgreSQL and in Redis.
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(
            system
                .send_email(&format!("rcpt{n}@example.org"), &format!("Paused {n}"))
                .await,
        );
    }
    let jobs: BTreeSet<String> =
        sqlx::query_scalar::<_, uuid::Uuid>("SELECT id FROM jobs WHERE queue = 'emails'")
            .fetch_all(&pool)
            .await
            .expect("jobs")
            .iter()
            .map(uuid::Uuid::to_string)
            .collect();
    assert_eq!(jobs.len(), 20);
    let ready_key = Queue::new(redis.clone(), QueueName::Emails).ready_key();
    // For 3 s nothing starts, while the 20 jobs wait in the ready list.
    let accumulated = std::cell::Cell::new(false);
    harness::holds_for(
        Duration::from_secs(3),
        Duration::from_millis(100),
        "a job started while paused",
        || async {
            // A duplicate push (the dispatcher racing the api's own) may add an id twice.
            let waiting: BTreeSet<String> = redis
                .connection()
                .lrange(&ready_key, 0, -1)
                .await
                .expect("lrange");
            accumulated.set(accumulated.get() || waiting.is_superset(&jobs));
            started_jobs(&pool).await == 0
        },
    )
    .await;
    assert!(
        accumulated.get(),
        "the 20 jobs never all waited in the ready list"
    );
    assert!(smtp.messages().is_empty());

    assert!(resume(&redis, QueueName::Emails).await.expect("resume"));
    let resumed = Instant::now();
    harness::eventually_every(
        Duration::from_millis(20),
        Duration::from_secs(10),
        "a job starts after resume",
        || async { (started_jobs(&pool).await > 0).then_some(()) },
    )
    .await;
    eprintln!("first job started {:?} after resume", resumed.elapsed());
    for id in &ids {
        let request = system.wait_finished(id, LONG).await;
        assert_eq!(request["status"], "succeeded", "{request}");
    }
    assert_eq!(smtp.wait_for_messages(20, LONG).await.len(), 20);
    until_every_worker_shows(&system, &urls, running_line).await;
}
