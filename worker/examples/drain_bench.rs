//! Queue benchmark (run by `bench/queue-drain`): on a scratch database and Redis
//! prefix, measures
//! 1. the bare transport: N consumers draining 50,000 ids (fetch + ack, no-op);
//! 2. the worker's runtime — the very `Runtime` the worker binary runs (producer,
//!    executor, completer, maintenance), with only the `canary` queue registered —
//!    draining 50,000 pre-enqueued canary jobs, PostgreSQL bookkeeping on;
//! 3. pick-up latency: from `LPUSH` to an idle consumer's blocking fetch returning.
//!
//! Prints figures, and the runtime's drain as one JSON line (`RESULT {...}`) for the
//! script to compare; asserts nothing about speed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::db::requests::NewRequest;
use shared::domain::RequestKind;
use shared::jobs::{CanaryJob, NewJob};
use shared::queue::{Queue, QueueName};
use shared::redis::Redis;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;
use worker::handlers::canary::Canary;
use worker::runtime::Runtime;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let jobs_total: usize = env("JOBS", "50000").parse()?;
    let concurrency: usize = env("CONCURRENCY", "50").parse()?;
    let consumers: usize = env("CONSUMERS", "4").parse()?;
    let server = env(
        "BENCH_DATABASE_SERVER",
        "postgres://postgres@127.0.0.1:5432",
    );
    let redis_url = env("REDIS_URL", "redis://127.0.0.1:6379");
    let database = "conveyor_bench_queue";

    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{server}/postgres"))
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {database}"
    )))
    .execute(&admin)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&admin)
        .await?;
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .connect(&format!("{server}/{database}"))
        .await?;
    shared::db::migrate(&pool).await?;
    let prefix = format!("bench-{}", Uuid::new_v4().simple());
    let redis = Redis::connect_lazy_to(&redis_url, &prefix)?;
    println!(
        "jobs={jobs_total} concurrency={concurrency} consumers={consumers} cores={}",
        num_cpus()
    );

    // 1. Bare transport.
    let queue = Queue::new(redis.clone(), QueueName::Scans);
    let ids: Vec<String> = (0..jobs_total)
        .map(|_| Uuid::now_v7().to_string())
        .collect();
    queue.push(&ids).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..consumers {
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            let mut consumer = queue
                .consumer(&format!("bench-{n}"), Duration::from_millis(200))
                .await?;
            let mut done = 0usize;
            loop {
                let batch = consumer.fetch(concurrency).await?;
                if batch.is_empty() {
                    return Ok::<usize, redis::RedisError>(done);
                }
                consumer.in_flight().ack(&batch).await?;
                done += batch.len();
            }
        }));
    }
    let mut drained = 0;
    for task in tasks {
        drained += task.await??;
    }
    let elapsed = started.elapsed().saturating_sub(Duration::from_millis(200));
    println!(
        "transport only:        {drained} ids in {:.2} s = {:.0} jobs/s",
        elapsed.as_secs_f64(),
        drained as f64 / elapsed.as_secs_f64()
    );

    // 2. The worker's runtime, canary queue only, jobs pre-enqueued.
    let user = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO users (id, email_ciphertext, email_index, password_hash) VALUES ($1, '\\x00', $2, 'x')",
    )
    .bind(user)
    .bind(user.as_bytes().to_vec())
    .execute(&pool)
    .await?;
    let database_url = format!("{server}/{database}");
    let config = Arc::new(shared::Config::from_lookup(|key| match key {
        "APP_ENV" => Some("test".to_owned()),
        "DATABASE_URL" => Some(database_url.clone()),
        "REDIS_URL" => Some(redis_url.clone()),
        "REDIS_PREFIX" => Some(prefix.clone()),
        "CANARY_CONCURRENCY" => Some(concurrency.to_string()),
        _ => None,
    })?);
    let request = Uuid::now_v7();
    let canaries = (0..jobs_total)
        .map(|_| NewJob::of(&CanaryJob {}))
        .collect::<Result<Vec<_>, _>>()?;
    let mut conn = pool.acquire().await?;
    let (_, enqueued) = shared::jobs::enqueue_with_request(
        &mut conn,
        &config.queues,
        &NewRequest {
            id: request,
            owner_id: user,
            kind: RequestKind::Canary,
            name: Some("bench"),
            correlation_id: None,
            content: None,
            total: i32::try_from(jobs_total)?,
            send_at: None,
            callback_url: None,
        },
        canaries,
    )
    .await?;
    drop(conn);
    let job_ids: Vec<Uuid> = enqueued.ids().collect();
    let strings: Vec<String> = job_ids.iter().map(Uuid::to_string).collect();
    Queue::new(redis.clone(), QueueName::Canary)
        .push(&strings)
        .await?;

    let mut runtime = Runtime::new(config.clone(), shared::db::pool(&config)?, redis.clone());
    runtime.queue(Canary, config.queues.canary);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let worker = tokio::spawn(runtime.run(None, async move {
        let _ = stop_rx.await;
    }));
    let succeeded = loop {
        let (succeeded, finished): (i32, bool) =
            sqlx::query_as("SELECT succeeded, finished_at IS NOT NULL FROM requests WHERE id = $1")
                .bind(request)
                .fetch_one(&pool)
                .await?;
        if finished {
            break succeeded;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let elapsed = started.elapsed();
    let _ = stop_tx.send(());
    worker.await??;
    let rate = f64::from(succeeded) / elapsed.as_secs_f64();
    println!(
        "worker runtime (canary): {succeeded} jobs succeeded in {:.2} s = {rate:.0} jobs/s (concurrency {concurrency}, PostgreSQL bookkeeping on)",
        elapsed.as_secs_f64(),
    );
    println!(
        "RESULT {{\"name\":\"conveyor\",\"jobs\":{succeeded},\"concurrency\":{concurrency},\"seconds\":{:.3},\"jobs_per_sec\":{rate:.0}}}",
        elapsed.as_secs_f64()
    );

    // 3. Pick-up latency of an idle consumer.
    let rounds: usize = env("LATENCY_ROUNDS", "1000").parse()?;
    let mut consumer = queue.consumer("latency", Duration::from_secs(5)).await?;
    let pusher = queue.clone();
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let (tx, rx) = tokio::sync::oneshot::channel::<Instant>();
        let pusher = pusher.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let at = Instant::now();
            let _ = pusher.push(&["latency-probe"]).await;
            let _ = tx.send(at);
        });
        let got = consumer.fetch(1).await?;
        let now = Instant::now();
        let pushed_at = rx.await?;
        consumer.in_flight().ack(&got).await?;
        samples.push(now.duration_since(pushed_at));
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "pick-up latency:       p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {rounds} idle pick-ups",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3
    );

    let mut conn = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await?;
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(keys)
            .query_async::<()>(&mut conn)
            .await?;
    }
    pool.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {database}"
    )))
    .execute(&admin)
    .await?;
    Ok(())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
