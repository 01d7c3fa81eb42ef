//! Metrics that tell the truth, read from the real binaries' `/metrics`: a fresh
//! worker and a fresh api list every series dashboards and alerts use at zero before
//! any job ran (so `increase()` sees the first event), the first dead job of a worker
//! that never failed counts, process metrics are there, and the sampled queue gauges
//! show the latest sample (a job on the `chores` queue) on every worker, and 0 — never
//! a stale value — once no sample is taken.

mod common;

use std::time::{Duration, Instant};

use common::{Process, Smtp, System, binary, free_port, wait_for_port};
use harness::app::{spawn_app_with, test_config};
use shared::db::jobs::{self, Failure};
use shared::domain::Role;
use shared::queue::QueueName;
use shared::telemetry::label;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::process::Command;
use uuid::Uuid;

const LONG: Duration = Duration::from_secs(60);

fn env<'a>(system: &'a System, key: &str) -> &'a str {
    system
        .env
        .iter()
        .find_map(|(k, v)| (k == key).then_some(v.as_str()))
        .unwrap_or_else(|| panic!("{key} is set for the system"))
}

/// A worker with the system's environment (and `extra`) on a metrics port of the
/// test's choosing; returns it and its `/metrics` URL.
async fn start_worker(system: &System, extra: &[(&str, &str)]) -> (Process, String) {
    let port = free_port();
    let log = system
        .dir()
        .join(format!("worker-{}.log", uuid::Uuid::new_v4().simple()));
    let file = std::fs::File::create(&log).expect("log file");
    let mut command = Command::new(binary("worker"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(system.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("WORKER_METRICS_ADDR", format!("127.0.0.1:{port}"))
        .envs(extra.iter().copied())
        .current_dir(system.dir())
        .stdout(file.try_clone().expect("log handle"))
        .stderr(file)
        .kill_on_drop(true);
    let child = command.spawn().expect("worker starts");
    wait_for_port(port).await;
    (
        Process { child, log },
        format!("http://127.0.0.1:{port}/metrics"),
    )
}

async fn scrape(system: &System, url: &str) -> String {
    system
        .client
        .get(url)
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body")
}

/// The value of the series `series` (name and labels exactly as rendered).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.parse().ok()
    })
}

/// Polls `url` until `check` holds for its text; returns that text.
async fn until(system: &System, url: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
    harness::eventually(Duration::from_secs(30), what, || async {
        let text = scrape(system, url).await;
        check(&text).then_some(text)
    })
    .await
}

fn series_count(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn every_series_is_at_zero_from_the_start_and_the_first_dead_job_counts(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &["--reject", "nobody"]).await;
    let mut system = System::new(&pool, smtp.port, &[]).await;
    system.start_api().await;
    let api = format!("http://{}/metrics", env(&system, "METRICS_ADDR"));
    // No scheduler: no chore runs, so every count below is this test's own jobs'.
    let (_worker, worker) = start_worker(&system, &[("SCHEDULER_ENABLED", "false")]).await;

    let fresh = until(&system, &worker, "consumers up", |text| {
        QueueName::ALL.iter().all(|q| {
            value(
                text,
                &format!(r#"conveyor_worker_consumer_up{{queue="{q}"}}"#),
            ) == Some(1.0)
        })
    })
    .await;
    for &queue in QueueName::ALL {
        for outcome in label::JOB_OUTCOMES {
            let series =
                format!(r#"conveyor_jobs_finished_total{{queue="{queue}",outcome="{outcome}"}}"#);
            assert_eq!(value(&fresh, &series), Some(0.0), "{series}\n{fresh}");
        }
        for series in [
            format!(r#"conveyor_jobs_started_total{{queue="{queue}"}}"#),
            format!(r#"conveyor_jobs_timed_out_total{{queue="{queue}"}}"#),
            format!(r#"conveyor_queue_latency_seconds_count{{queue="{queue}"}}"#),
            format!(r#"conveyor_queue_paused{{queue="{queue}"}}"#),
        ] {
            assert_eq!(value(&fresh, &series), Some(0.0), "{series}\n{fresh}");
        }
    }
    for outcome in label::EMAIL_OUTCOMES {
        let series = format!(r#"conveyor_emails_total{{outcome="{outcome}"}}"#);
        assert_eq!(value(&fresh, &series), Some(0.0), "{series}");
    }
    let fresh_api = scrape(&system, &api).await;
    for &queue in QueueName::ALL {
        let series = format!(r#"conveyor_jobs_enqueued_total{{queue="{queue}"}}"#);
        assert_eq!(
            value(&fresh_api, &series),
            Some(0.0),
            "{series}\n{fresh_api}"
        );
    }
    for action in label::ADMIN_ACTIONS {
        let series = format!(r#"conveyor_admin_actions_total{{action="{action}"}}"#);
        assert_eq!(value(&fresh_api, &series), Some(0.0), "{series}");
    }
    for text in [&fresh, &fresh_api] {
        assert!(value(text, "process_resident_memory_bytes").is_some_and(|v| v > 0.0));
        assert!(value(text, "process_open_fds").is_some_and(|v| v > 0.0));
        assert!(value(text, "process_start_time_seconds").is_some_and(|v| v > 1.7e9));
        assert!(value(text, "process_cpu_seconds_total").is_some());
    }
    eprintln!(
        "fresh worker /metrics: {} bytes, {} series; fresh api /metrics: {} bytes, {} series",
        fresh.len(),
        series_count(&fresh),
        fresh_api.len(),
        series_count(&fresh_api)
    );

    let id = system.send_email("nobody@example.org", "Bounce").await;
    let request = system.wait_finished(&id, LONG).await;
    assert_eq!(request["status"], "failed", "{request}");
    let after = until(&system, &worker, "the dead job counted", |text| {
        value(
            text,
            r#"conveyor_jobs_finished_total{queue="emails",outcome="dead"}"#,
        ) == Some(1.0)
    })
    .await;
    for (series, expected) in [
        (r#"conveyor_jobs_started_total{queue="emails"}"#, 1.0),
        (r#"conveyor_emails_total{outcome="rejected"}"#, 1.0),
        (
            r#"conveyor_queue_latency_seconds_count{queue="emails"}"#,
            1.0,
        ),
        (
            r#"conveyor_jobs_finished_total{queue="emails",outcome="succeeded"}"#,
            0.0,
        ),
    ] {
        assert_eq!(value(&after, series), Some(expected), "{series}\n{after}");
    }
    let api_after = scrape(&system, &api).await;
    assert_eq!(
        value(
            &api_after,
            r#"conveyor_jobs_enqueued_total{queue="emails"}"#
        ),
        Some(1.0)
    );
    // No worker runs the scheduler, so no sample was taken: the sampled gauges read 0
    // although a job is dead, never a value nobody measured.
    for series in [
        r#"conveyor_queue_jobs{queue="emails",state="dead"}"#,
        r#"conveyor_workers_alive{queue="emails"}"#,
    ] {
        assert_eq!(value(&after, series), Some(0.0), "{series}\n{after}");
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn queue_gauges_show_the_latest_sample_on_every_worker_and_zero_once_none_is_taken(
    pool: PgPool,
) {
    let smtp = Smtp::start(free_port(), &["--reject", "nobody"]).await;
    let mut system = System::new(&pool, smtp.port, &[]).await;
    system.start_api().await;
    let id = system.send_email("nobody@example.org", "Bounce").await;
    // Only the first runs the scheduler; both run the chores queue.
    let (sampling, sampling_url) = start_worker(&system, &[]).await;
    let (other, other_url) = start_worker(&system, &[("SCHEDULER_ENABLED", "false")]).await;
    let request = system.wait_finished(&id, LONG).await;
    assert_eq!(request["status"], "failed", "{request}");

    let dead = r#"conveyor_queue_jobs{queue="emails",state="dead"}"#;
    let alive = r#"conveyor_workers_alive{queue="emails"}"#;
    for url in [&sampling_url, &other_url] {
        until(&system, url, "the same sample on each worker", |text| {
            value(text, dead) == Some(1.0) && value(text, alive) == Some(2.0)
        })
        .await;
    }
    let status = sampling.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");
    let stopped = Instant::now();
    // Nobody samples now: the stored sample is shown until it is too old, then 0.
    until(
        &system,
        &other_url,
        "the gauges at 0 once no sample is kept",
        |text| value(text, dead) == Some(0.0) && value(text, alive) == Some(0.0),
    )
    .await;
    let zeroed = stopped.elapsed();
    // A scheduler again: the samples resume, wherever the chore runs.
    let (_again, _) = start_worker(&system, &[]).await;
    until(&system, &other_url, "sampling resumed", |text| {
        value(text, dead) == Some(1.0) && value(text, alive) == Some(2.0)
    })
    .await;
    drop(other);
    eprintln!("the sampled gauges read 0 {zeroed:?} after the only scheduler stopped");
}

/// A job's creation time and heartbeat, as PostgreSQL has them.
async fn times(pool: &PgPool, id: Uuid) -> (OffsetDateTime, Option<OffsetDateTime>) {
    sqlx::query_as("SELECT created_at, heartbeat_at FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("job")
}

async fn canary_sample(pool: &PgPool) -> jobs::QueueSample {
    jobs::sample_queues(pool)
        .await
        .expect("sample")
        .into_iter()
        .find(|s| s.queue == QueueName::Canary)
        .expect("canary jobs")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn queue_latency_starts_when_a_job_became_runnable_and_counts_follow_each_state(
    pool: PgPool,
) {
    let app = spawn_app_with(
        pool.clone(),
        test_config(&[("CANARY_MAX_ATTEMPTS", "3")]),
        None,
    )
    .await;
    let owner = app.create_account(Role::User).await.0;
    let request = app.submit_canaries(owner, 3).await;
    let ids: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM jobs WHERE request_id = $1 ORDER BY id")
            .bind(request)
            .fetch_all(&pool)
            .await
            .expect("ids");
    let sample = canary_sample(&pool).await;
    assert_eq!(
        (sample.queued, sample.running, sample.retrying, sample.dead),
        (3, 0, 0, 0)
    );
    assert!(
        sample.oldest_queued_secs.is_some_and(|age| age >= 0.0),
        "{sample:?}"
    );

    // A first attempt became runnable when it was committed.
    let stale_before = OffsetDateTime::now_utc() - Duration::from_secs(30);
    let claimed = jobs::claim(&pool, &ids, "w1", stale_before)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 3);
    for job in &claimed {
        assert_eq!(job.runnable_at, times(&pool, job.id).await.0, "{job:?}");
    }
    let sample = canary_sample(&pool).await;
    assert_eq!(
        (sample.queued, sample.running, sample.oldest_queued_secs),
        (0, 3, None)
    );

    // A retry became runnable when it fell due; one job dies.
    let due = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("whole second")
        - Duration::from_secs(2);
    let failure = |id, retry_at| Failure {
        id,
        error: "busy".into(),
        retry_at,
    };
    let mut conn = pool.acquire().await.expect("connection");
    let retried = jobs::schedule_retry(&mut conn, &[failure(ids[0], Some(due))]).await;
    assert_eq!(retried.expect("retry"), vec![ids[0]]);
    let dead = jobs::bury(&mut conn, &[&failure(ids[1], None)])
        .await
        .expect("bury");
    assert_eq!(dead, vec![ids[1]]);
    drop(conn);
    let sample = canary_sample(&pool).await;
    assert_eq!(
        (sample.queued, sample.running, sample.retrying, sample.dead),
        (0, 1, 1, 1)
    );
    let again = jobs::claim(&pool, &ids[..1], "w1", stale_before)
        .await
        .expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].runnable_at, due);

    // A running job reclaimed from a dead worker became runnable when its heartbeat
    // went stale.
    sqlx::query("UPDATE jobs SET heartbeat_at = now() - interval '60 seconds' WHERE id = $1")
        .bind(ids[2])
        .execute(&pool)
        .await
        .expect("an old heartbeat");
    let heartbeat = times(&pool, ids[2]).await.1.expect("heartbeat");
    let stale_before = OffsetDateTime::now_utc() - Duration::from_secs(30);
    let reclaimed = jobs::claim(&pool, &ids[2..], "w2", stale_before)
        .await
        .expect("claim");
    assert_eq!(reclaimed.len(), 1);
    let went_stale = heartbeat + Duration::from_secs(30);
    let off = (reclaimed[0].runnable_at - went_stale).abs();
    assert!(
        off < time::Duration::seconds(2),
        "{:?} vs {went_stale}",
        reclaimed[0].runnable_at
    );
}
