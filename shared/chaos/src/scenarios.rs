//! The scenarios. Each starts its own stack, drives load, injects one fault, waits out
//! a recovery window and reconciles. Lengths come from [`Scale`]: seconds in the
//! bounded form (`scripts/test`), minutes in the full one (`scripts/chaos`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use serde_json::json;
use tokio::io::AsyncReadExt;
use uuid::Uuid;

use crate::load::{Client, Kind, Load, Mix, Outcome, Submission};
use crate::reconcile::{Reconciliation, reconcile};
use crate::stack::Stack;
use crate::wait::{all_final, until};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    Bounded,
    Full,
}

impl Scale {
    /// `bounded` seconds in the bounded form, `full` in the full one.
    pub fn secs(self, bounded: f64, full: f64) -> Duration {
        Duration::from_secs_f64(match self {
            Scale::Bounded => bounded,
            Scale::Full => full,
        })
    }

    pub fn pick<T>(self, bounded: T, full: T) -> T {
        match self {
            Scale::Bounded => bounded,
            Scale::Full => full,
        }
    }
}

/// What one scenario did and saw.
pub struct Report {
    pub name: &'static str,
    pub fault: String,
    pub reconciliation: Reconciliation,
    /// Scenario figures, in order: (what, value).
    pub figures: Vec<(String, String)>,
    /// Scenario checks that failed (beyond the reconciliation's).
    pub failures: Vec<String>,
    pub peak_rss_api_mib: f64,
    pub peak_rss_worker_mib: f64,
    pub took: Duration,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.reconciliation.passed() && self.failures.is_empty()
    }
}

pub const ALL: &[&str] = &[
    "worker-kill",
    "redis-restart",
    "postgres-down",
    "smtp-down",
    "clamd-down",
    "rolling-deploy",
    "overload",
    "poison",
    "scheduled",
    "reporting-tx",
    "aged-table",
];

pub async fn run(name: String, scale: Scale) -> Result<Report> {
    let started = Instant::now();
    let mut report = match name.as_str() {
        "worker-kill" => worker_kill(scale).await,
        "redis-restart" => redis_restart(scale).await,
        "postgres-down" => postgres_down(scale).await,
        "smtp-down" => smtp_down(scale).await,
        "clamd-down" => clamd_down(scale).await,
        "rolling-deploy" => rolling_deploy(scale).await,
        "overload" => overload(scale).await,
        "poison" => poison(scale).await,
        "scheduled" => scheduled(scale).await,
        "reporting-tx" => reporting_tx(scale).await,
        "aged-table" => aged_table(scale).await,
        other => anyhow::bail!("no scenario {other}; there are: {}", ALL.join(", ")),
    }?;
    report.took = started.elapsed();
    Ok(report)
}

/// The scenario's figures and checks while it runs; [`Scenario::finish`] reconciles.
struct Scenario {
    name: &'static str,
    fault: String,
    epoch: Instant,
    figures: Vec<(String, String)>,
    failures: Vec<String>,
}

impl Scenario {
    fn new(name: &'static str, fault: String) -> Scenario {
        eprintln!("chaos: {name}: {fault}");
        Scenario {
            name,
            fault,
            epoch: Instant::now(),
            figures: Vec::new(),
            failures: Vec::new(),
        }
    }

    fn client(&self, stack: &Stack) -> Client {
        Client::new(
            &stack.system.base,
            &stack.system.token,
            &stack.clean_uploads,
            self.epoch,
        )
    }

    fn figure(&mut self, what: &str, value: impl std::fmt::Display) {
        self.figures.push((what.to_owned(), value.to_string()));
    }

    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.failures.push(what.into());
        }
    }

    async fn finish(
        self,
        stack: Stack,
        submissions: &[Submission],
        window: Duration,
    ) -> Result<Report> {
        let reconciliation = reconcile(&stack, submissions, window).await?;
        let report = Report {
            name: self.name,
            fault: self.fault,
            peak_rss_api_mib: stack.rss.peak_mib("api"),
            peak_rss_worker_mib: stack.rss.peak_mib("worker"),
            reconciliation,
            figures: self.figures,
            failures: self.failures,
            took: Duration::ZERO,
        };
        stack.finish().await?;
        Ok(report)
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn percentile(mut values: Vec<Duration>, p: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    values.sort();
    let rank = ((values.len() - 1) as f64 * p).round() as usize;
    values.get(rank).copied()
}

fn latency_summary(values: Vec<Duration>) -> String {
    match (
        percentile(values.clone(), 0.5),
        percentile(values.clone(), 0.99),
    ) {
        (Some(p50), Some(p99)) => format!(
            "p50 {:.1} ms, p99 {:.1} ms (n = {})",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            values.len()
        ),
        _ => "no samples".to_owned(),
    }
}

/// The database's clock, as seconds since the epoch.
async fn db_now(stack: &Stack) -> Result<f64> {
    Ok(
        sqlx::query_scalar("SELECT extract(epoch FROM clock_timestamp())::float8")
            .fetch_one(&stack.db)
            .await?,
    )
}

/// Submits `n` emails, 16 at a time; every submission.
async fn burst(client: &Client, n: usize) -> Vec<Submission> {
    futures::stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            async move { client.submit(Kind::Email, false, i as u32).await }
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// Workers SIGKILLed one after another under mixed load, with an SMTP server that
/// takes 0.2 s per message so kills land mid-send; a replacement starts after each.
async fn worker_kill(scale: Scale) -> Result<Report> {
    let every = scale.secs(4.0, 3.0);
    let length = scale.secs(16.0, 120.0);
    let mut scenario = Scenario::new(
        "worker-kill",
        format!(
            "a worker SIGKILLed every {} s for {} s under mixed load, SMTP answering DATA in 0.2 s",
            every.as_secs_f64(),
            length.as_secs()
        ),
    );
    let mut stack = Stack::start(3, &[], &["--delay", "0.2"]).await?;
    stack.seed_clean_uploads(3).await?;
    let load = Load::start(&scenario.client(&stack), 4, Some(20.0), Mix::MIXED);
    let mut recoveries = tokio::task::JoinSet::new();
    let mut orphans = 0usize;
    let mut mid_send = 0usize;
    let mut round = 0usize;
    while scenario.epoch.elapsed() + every < length {
        tokio::time::sleep(every).await;
        let victim = round % stack.system.workers.len();
        round += 1;
        let pid = stack.system.workers[victim].pid();
        let claimer = format!("worker-{pid}-%");
        let held: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT id, queue FROM jobs WHERE status = 'running' AND claimed_by LIKE $1",
        )
        .bind(&claimer)
        .fetch_all(&stack.db)
        .await?;
        stack.kill_worker(victim).await;
        let killed_at = Instant::now();
        orphans += held.len();
        mid_send += held.iter().filter(|(_, q)| q == "emails").count();
        let ids: Vec<Uuid> = held.into_iter().map(|(id, _)| id).collect();
        let db = stack.db.clone();
        if !ids.is_empty() {
            recoveries.spawn(async move {
                // Running again: every job the dead worker held is running under another
                // worker or finished.
                loop {
                    let waiting: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM jobs WHERE id = ANY($1) \
                         AND NOT (status IN ('succeeded', 'dead', 'cancelled') \
                                  OR (status = 'running' AND claimed_by NOT LIKE $2))",
                    )
                    .bind(&ids)
                    .bind(&claimer)
                    .fetch_one(&db)
                    .await
                    .unwrap_or(1);
                    if waiting == 0 {
                        return Some(killed_at.elapsed());
                    }
                    if killed_at.elapsed() > Duration::from_secs(120) {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
        stack.start_worker().await;
    }
    let submissions = load.stop().await;
    let mut times = Vec::new();
    let mut never = 0;
    while let Some(done) = recoveries.join_next().await {
        match done.ok().flatten() {
            Some(t) => times.push(t),
            None => never += 1,
        }
    }
    scenario.figure("workers SIGKILLed", round);
    scenario.figure(
        "jobs they held (emails: mid-send)",
        format!("{orphans} ({mid_send})"),
    );
    if let (Some(p50), Some(max)) = (percentile(times.clone(), 0.5), percentile(times, 1.0)) {
        scenario.figure(
            "SIGKILL → its jobs running again",
            format!("p50 {}, max {}", secs(p50), secs(max)),
        );
        scenario.check(
            max < Duration::from_secs(30),
            format!("a killed worker's jobs waited {} to run again", secs(max)),
        );
    }
    scenario.check(never == 0, format!("{never} kills' jobs never ran again"));
    scenario
        .finish(stack, &submissions, Duration::from_secs(120))
        .await
}

/// Redis killed (no persistence: every key and pushed id gone) with a backlog pushed
/// and no worker to take it, submissions during the outage, then Redis and the workers
/// back.
async fn redis_restart(scale: Scale) -> Result<Report> {
    let backlog = scale.pick(300, 3000);
    let outage = scale.secs(5.0, 30.0);
    let mut scenario = Scenario::new(
        "redis-restart",
        format!(
            "{backlog} emails pushed with no worker running, Redis killed (data lost) for {} s under mixed load, then Redis and 3 workers back",
            outage.as_secs()
        ),
    );
    let mut stack = Stack::start(3, &[], &[]).await?;
    stack.seed_clean_uploads(3).await?;
    while !stack.system.workers.is_empty() {
        stack.stop_worker(0).await;
    }
    let client = scenario.client(&stack);
    let mut submissions = burst(&client, backlog).await;
    // The dispatcher has pushed them (one tick).
    let db = stack.db.clone();
    until(Duration::from_secs(30), "the backlog is pushed", || {
        let db = db.clone();
        async move {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE status = 'queued' AND dispatched_at IS NULL",
            )
            .fetch_one(&db)
            .await
            .ok()?;
            (waiting == 0).then_some(())
        }
    })
    .await?;
    stack.redis.kill().await;
    let down_at = scenario.epoch.elapsed();
    let load = Load::start(&client, 4, Some(20.0), Mix::MIXED);
    tokio::time::sleep(outage).await;
    stack.redis.restart().await?;
    let up_at = scenario.epoch.elapsed();
    let back = Instant::now();
    for _ in 0..3 {
        stack.start_worker().await;
    }
    tokio::time::sleep(scale.secs(3.0, 10.0)).await;
    let during = load.stop().await;
    let outage_latency: Vec<Duration> = during
        .iter()
        .filter(|s| s.at >= down_at && s.at < up_at && s.accepted().is_some())
        .map(|s| s.latency)
        .collect();
    scenario.figure(
        "202s while Redis was down",
        latency_summary(outage_latency.clone()),
    );
    submissions.extend(during);
    let report = scenario
        .finish_with_drain(stack, &submissions, back)
        .await?;
    Ok(report)
}

impl Scenario {
    /// [`Scenario::finish`], adding how long after `since` (the fault's end) the last
    /// accepted request was final.
    async fn finish_with_drain(
        self,
        stack: Stack,
        submissions: &[Submission],
        since: Instant,
    ) -> Result<Report> {
        let waited = since.elapsed();
        let mut report = self
            .finish(stack, submissions, Duration::from_secs(180))
            .await?;
        // The load runs on for a while after the fault: both clocks are shown.
        let value = match report.reconciliation.drained_in {
            Some(d) => format!(
                "{} after the fault ended ({} after the load stopped)",
                secs(d + waited),
                secs(d)
            ),
            None => "never".to_owned(),
        };
        report
            .figures
            .push(("every accepted request final".to_owned(), value));
        Ok(report)
    }
}

/// The stack's connections to PostgreSQL cut (through the proxy) under mixed load.
async fn postgres_down(scale: Scale) -> Result<Report> {
    let outage = scale.secs(8.0, 60.0);
    let mut scenario = Scenario::new(
        "postgres-down",
        format!(
            "PostgreSQL unreachable for {} s (every connection of the stack cut at a proxy) under mixed load",
            outage.as_secs()
        ),
    );
    let mut stack = Stack::start(3, &[], &[]).await?;
    stack.seed_clean_uploads(3).await?;
    let client = scenario.client(&stack);
    let load = Load::start(&client, 4, Some(20.0), Mix::MIXED);
    tokio::time::sleep(scale.secs(3.0, 10.0)).await;
    stack.pg.cut().await;
    let down_at = scenario.epoch.elapsed();
    tokio::time::sleep(outage).await;
    stack.pg.restore().await;
    let up_at = scenario.epoch.elapsed();
    let back = Instant::now();
    // A client of its own asking as fast as it is answered: the first 202.
    let mut probe = Vec::new();
    let first_202 = loop {
        let submission = client.submit(Kind::Email, false, 0).await;
        let accepted = submission.accepted().is_some();
        probe.push(submission);
        if accepted {
            break Some(back.elapsed());
        }
        if back.elapsed() > Duration::from_secs(60) {
            break None;
        }
    };
    tokio::time::sleep(scale.secs(3.0, 10.0)).await;
    let mut submissions = load.stop().await;
    submissions.extend(probe);
    let during: Vec<&Submission> = submissions
        .iter()
        .filter(|s| s.at >= down_at && s.at < up_at)
        .collect();
    let refusals: Vec<Duration> = during
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Refused { status: 503, .. }))
        .map(|s| s.latency)
        .collect();
    let in_flight = refusals
        .iter()
        .filter(|t| **t > Duration::from_secs(1))
        .count();
    scenario.figure("503s while it was down", latency_summary(refusals));
    scenario.figure(
        "of them in flight at the cut (waited for a connection)",
        in_flight,
    );
    let without_retry_after = during
        .iter()
        .filter(|s| {
            matches!(
                s.outcome,
                Outcome::Refused {
                    retry_after: false,
                    ..
                }
            )
        })
        .count();
    scenario.check(
        without_retry_after == 0,
        format!("{without_retry_after} refusals during the outage without Retry-After"),
    );
    match first_202 {
        Some(t) => scenario.figure("first 202 after PostgreSQL returned", secs(t)),
        None => scenario.check(false, "no 202 within 60 s of PostgreSQL's return"),
    }
    scenario.finish_with_drain(stack, &submissions, back).await
}

/// The SMTP relay down with the production retry settings, under email load.
async fn smtp_down(scale: Scale) -> Result<Report> {
    let outage = scale.secs(20.0, 600.0);
    let scenario = Scenario::new(
        "smtp-down",
        format!(
            "the SMTP relay down for {} s with the production retry settings under email load",
            outage.as_secs()
        ),
    );
    let mut stack = Stack::start(3, &[], &[]).await?;
    let client = scenario.client(&stack);
    let mix = Mix {
        email: 9,
        campaign: 1,
        upload: 0,
        infected: 0,
        rescan: 0,
    };
    let load = Load::start(&client, 4, Some(scale.pick(10.0, 5.0)), mix);
    tokio::time::sleep(scale.secs(2.0, 10.0)).await;
    stack.smtp.stop().await;
    tokio::time::sleep(outage).await;
    stack.restart_smtp().await;
    let back = Instant::now();
    tokio::time::sleep(scale.secs(3.0, 10.0)).await;
    let submissions = load.stop().await;
    let report = scenario
        .finish_attempts(stack, &submissions, back, "emails")
        .await?;
    Ok(report)
}

impl Scenario {
    /// [`Scenario::finish_with_drain`] with the attempts the queue's jobs spent beyond
    /// their first, and no dead job of `queue` allowed.
    async fn finish_attempts(
        mut self,
        stack: Stack,
        submissions: &[Submission],
        back: Instant,
        queue: &str,
    ) -> Result<Report> {
        // Counted once everything is final, by the reconciliation's wait: read them
        // after, from the report, would need the database; wait here instead.
        let ids: Vec<Uuid> = submissions
            .iter()
            .filter_map(Submission::accepted)
            .collect();
        let _ = all_final(
            &stack.db,
            &ids,
            Duration::from_millis(100),
            Duration::from_secs(180),
            "every accepted request is final",
        )
        .await;
        let (jobs, extra, most): (i64, Option<i64>, Option<i32>) = sqlx::query_as(
            "SELECT count(*), sum(greatest(attempt - 1, 0)), max(attempt) FROM jobs WHERE queue = $1",
        )
        .bind(queue)
        .fetch_one(&stack.db)
        .await?;
        self.figure(
            &format!("{queue} attempts beyond the first"),
            format!(
                "{} over {jobs} jobs (most attempts of one: {})",
                extra.unwrap_or(0),
                most.unwrap_or(0)
            ),
        );
        self.finish_with_drain(stack, submissions, back).await
    }
}

/// clamd down under upload load: uploads wait `pending_scan`, verdicts come once it is
/// back.
async fn clamd_down(scale: Scale) -> Result<Report> {
    let outage = scale.secs(10.0, 60.0);
    let scenario = Scenario::new(
        "clamd-down",
        format!(
            "clamd down for {} s under upload and rescan load",
            outage.as_secs()
        ),
    );
    let mut stack = Stack::start(3, &[], &[]).await?;
    stack.seed_clean_uploads(3).await?;
    let client = scenario.client(&stack);
    let load = Load::start(&client, 2, Some(5.0), Mix::UPLOADS);
    tokio::time::sleep(scale.secs(2.0, 10.0)).await;
    stack.clamd.stop().await;
    tokio::time::sleep(outage).await;
    stack.clamd.start().await;
    let back = Instant::now();
    tokio::time::sleep(scale.secs(2.0, 10.0)).await;
    let submissions = load.stop().await;
    scenario
        .finish_attempts(stack, &submissions, back, "scans")
        .await
}

/// Every worker stopped (SIGTERM) and started again one after another, then the api,
/// under mixed load.
async fn rolling_deploy(scale: Scale) -> Result<Report> {
    let mut scenario = Scenario::new(
        "rolling-deploy",
        "each of 3 workers, then the api, stopped with SIGTERM and started again under mixed load"
            .to_owned(),
    );
    let mut stack = Stack::start(3, &[], &["--delay", "0.05"]).await?;
    stack.seed_clean_uploads(3).await?;
    let client = scenario.client(&stack);
    let load = Load::start(&client, 4, Some(20.0), Mix::MIXED);
    tokio::time::sleep(scale.secs(2.0, 10.0)).await;
    let mut exits = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let status = stack.stop_worker(0).await;
        exits.push((status, started.elapsed()));
        stack.start_worker().await;
        tokio::time::sleep(scale.secs(1.0, 5.0)).await;
    }
    let api_down = scenario.epoch.elapsed();
    stack.restart_api().await;
    let api_up = scenario.epoch.elapsed();
    let deployed = Instant::now();
    tokio::time::sleep(scale.secs(2.0, 10.0)).await;
    let submissions = load.stop().await;
    let failed = exits.iter().filter(|(s, _)| !s.success()).count();
    scenario.check(failed == 0, format!("{failed} workers did not exit 0"));
    let longest = exits.iter().map(|(_, t)| *t).max().unwrap_or_default();
    scenario.figure("longest worker stop (SIGTERM → exit 0)", secs(longest));
    scenario.figure("api restart (SIGTERM → answering)", secs(api_up - api_down));
    scenario
        .finish_with_drain(stack, &submissions, deployed)
        .await
}

/// As many clients as the api can take and more, unpaced; `/health/live` watched.
async fn overload(scale: Scale) -> Result<Report> {
    let clients = scale.pick(64, 256);
    let length = scale.secs(6.0, 30.0);
    let mut scenario = Scenario::new(
        "overload",
        format!(
            "{clients} clients submitting emails as fast as they are answered for {} s",
            length.as_secs()
        ),
    );
    let stack = Stack::start(3, &[], &[]).await?;
    let client = scenario.client(&stack);
    let load = Load::start(&client, clients, None, Mix::EMAILS);
    let http = reqwest::Client::new();
    let live = format!("{}/health/live", stack.system.base);
    let mut health = Vec::new();
    let mut unhealthy = 0;
    let until = Instant::now() + length;
    while Instant::now() < until {
        let started = Instant::now();
        match http.get(&live).timeout(Duration::from_secs(5)).send().await {
            Ok(r) if r.status().is_success() => health.push(started.elapsed()),
            _ => unhealthy += 1,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let submissions = load.stop().await;
    let accepted = submissions
        .iter()
        .filter(|s| s.accepted().is_some())
        .count();
    scenario.figure(
        "accepted per second",
        format!("{:.0}", accepted as f64 / length.as_secs_f64()),
    );
    let latencies: Vec<Duration> = submissions.iter().map(|s| s.latency).collect();
    scenario.figure("submission latency", latency_summary(latencies));
    scenario.figure("/health/live during it", latency_summary(health));
    scenario.check(
        unhealthy == 0,
        format!("/health/live failed {unhealthy} times"),
    );
    let bad: Vec<String> = submissions
        .iter()
        .filter_map(|s| match &s.outcome {
            Outcome::Refused {
                status,
                retry_after,
                code,
            } if (*status == 429 || *status == 503) && !retry_after => {
                Some(format!("{status} {code} without Retry-After"))
            }
            Outcome::Refused { status, code, .. } if *status >= 500 && *status != 503 => {
                Some(format!("{status} {code}"))
            }
            _ => None,
        })
        .collect();
    scenario.check(bad.is_empty(), format!("bad answers: {bad:?}"));
    scenario
        .finish_with_drain(stack, &submissions, Instant::now())
        .await
}

/// Poison among healthy load: jobs whose payload cannot be read, and webhooks to a
/// receiver that accepts connections and never answers.
async fn poison(scale: Scale) -> Result<Report> {
    let mut scenario = Scenario::new(
        "poison",
        "unreadable jobs and callbacks to a receiver that never answers, among mixed load"
            .to_owned(),
    );
    // The receiver: accepts, reads, never answers (each connection held until the end).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let hang = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            held.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
            }));
        }
    });
    let mut stack = Stack::start(
        3,
        &[
            ("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8"),
            ("WEBHOOK_TIMEOUT_SECS", "2"),
            ("WEBHOOK_MAX_ATTEMPTS", "2"),
            ("WEBHOOK_RETRY_BASE_MS", "200"),
        ],
        &[],
    )
    .await?;
    stack.seed_clean_uploads(3).await?;
    let poison_jobs = scale.pick(5, 50);
    let owner: Uuid = sqlx::query_scalar("SELECT id FROM users LIMIT 1")
        .fetch_one(&stack.db)
        .await?;
    let mut poisoned = Vec::new();
    for _ in 0..poison_jobs {
        let request = Uuid::now_v7();
        sqlx::query("INSERT INTO requests (id, owner_id, kind, total) VALUES ($1, $2, 'email', 1)")
            .bind(request)
            .bind(owner)
            .execute(&stack.db)
            .await?;
        sqlx::query(
            "INSERT INTO jobs (id, request_id, queue, payload, max_attempts) \
             VALUES ($1, $2, 'emails', '{\"poison\": true}', 5)",
        )
        .bind(Uuid::now_v7())
        .bind(request)
        .execute(&stack.db)
        .await?;
        poisoned.push(request);
    }
    let secret = stack
        .system
        .post("/api/v1/me/webhook-secret", &json!({}))
        .await;
    anyhow::ensure!(
        secret.status().is_success(),
        "a webhook secret: {}",
        secret.status()
    );
    let client = scenario.client(&stack);
    let load = Load::start(&client, 4, Some(20.0), Mix::MIXED);
    let hooks = scale.pick(5, 50);
    for i in 0..hooks {
        let response = stack
            .system
            .post(
                "/api/v1/emails",
                &json!({"to": [format!("hook-{i}@example.org")], "subject": "hooked", "text": "x",
                    "callback_url": format!("http://127.0.0.1:{port}/hook/{i}")}),
            )
            .await;
        scenario.check(
            response.status() == 202,
            format!("a callback email was refused: {}", response.status()),
        );
    }
    tokio::time::sleep(scale.secs(8.0, 30.0)).await;
    let submissions = load.stop().await;
    let db = stack.db.clone();
    // The receiver holds every connection: each callback times out, all end dead.
    let callbacks = hooks as i64;
    let poisoned_dead = until(
        Duration::from_secs(60),
        "the poison and the hanging callbacks end dead",
        || {
            let db = db.clone();
            let poisoned = poisoned.clone();
            async move {
                let (poison, hooks): (i64, i64) = sqlx::query_as(
                    "SELECT count(*) FILTER (WHERE request_id = ANY($1) AND status = 'dead' \
                                             AND last_error LIKE 'unreadable payload%'), \
                            count(*) FILTER (WHERE queue = 'webhooks' AND status = 'dead') \
                     FROM jobs",
                )
                .bind(&poisoned)
                .fetch_one(&db)
                .await
                .ok()?;
                (poison == poisoned.len() as i64 && hooks == callbacks).then_some((poison, hooks))
            }
        },
    )
    .await?;
    scenario.figure(
        "unreadable jobs dead at once / callbacks dead after their attempts",
        format!("{} / {}", poisoned_dead.0, poisoned_dead.1),
    );
    let attempts: Option<i32> =
        sqlx::query_scalar("SELECT max(attempt) FROM jobs WHERE request_id = ANY($1)")
            .bind(&poisoned)
            .fetch_one(&stack.db)
            .await?;
    scenario.check(
        attempts == Some(1),
        format!("an unreadable job was attempted {attempts:?} times"),
    );
    hang.abort();
    let mut report = scenario
        .finish(stack, &submissions, Duration::from_secs(120))
        .await?;
    // The dead webhooks are the poison's, expected: not a broken promise.
    report.reconciliation.dead.remove("webhooks");
    Ok(report)
}

/// Emails scheduled a few seconds ahead; every worker SIGKILLed just before they are
/// due and new ones started: each is sent on time (lateness measured).
async fn scheduled(scale: Scale) -> Result<Report> {
    let ahead = scale.secs(8.0, 60.0);
    let count = scale.pick(50, 500);
    let mut scenario = Scenario::new(
        "scheduled",
        format!(
            "{count} emails scheduled {} s ahead; every worker SIGKILLed 2 s before they are due and replaced",
            ahead.as_secs()
        ),
    );
    let mut stack = Stack::start(3, &[], &[]).await?;
    let (send_at, due): (String, f64) = sqlx::query_as(
        "SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                extract(epoch FROM t)::float8 \
         FROM (SELECT date_trunc('second', clock_timestamp() + make_interval(secs => $1)) AS t) s",
    )
    .bind(ahead.as_secs_f64())
    .fetch_one(&stack.db)
    .await?;
    let mut submissions = Vec::new();
    for i in 0..count {
        let tag = &Uuid::new_v4().simple().to_string()[..16];
        let to = format!("s{i}-{tag}@example.org");
        let started = Instant::now();
        let response = stack
            .system
            .post(
                "/api/v1/emails",
                &json!({"to": [to], "subject": format!("scheduled {tag}"), "text": "on time",
                    "send_at": send_at}),
            )
            .await;
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let outcome = match body["id"].as_str().and_then(|s| s.parse().ok()) {
            Some(id) if status == 202 => Outcome::Accepted(id),
            _ => Outcome::Refused {
                status,
                code: body["code"].as_str().unwrap_or("-").to_owned(),
                retry_after: false,
            },
        };
        submissions.push(Submission {
            kind: Kind::Email,
            at: scenario.epoch.elapsed(),
            latency: started.elapsed(),
            outcome,
            expect: crate::load::Expect::Messages(vec![to]),
        });
    }
    let kill_at = due - 2.0;
    let wait = kill_at - db_now(&stack).await?;
    if wait > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    }
    while !stack.system.workers.is_empty() {
        stack.kill_worker(0).await;
    }
    for _ in 0..3 {
        stack.start_worker().await;
    }
    let ids: Vec<Uuid> = submissions
        .iter()
        .filter_map(Submission::accepted)
        .collect();
    let db = stack.db.clone();
    let lateness: Vec<f64> = until(
        Duration::from_secs(120),
        "every scheduled email is sent",
        || {
            let db = db.clone();
            let ids = ids.clone();
            async move {
                let late: Vec<Option<f64>> = sqlx::query_scalar(
                    "SELECT extract(epoch FROM finished_at)::float8 - $2 FROM requests WHERE id = ANY($1)",
                )
                .bind(&ids)
                .bind(due)
                .fetch_all(&db)
                .await
                .ok()?;
                late.iter().all(Option::is_some).then(|| late.into_iter().flatten().collect())
            }
        },
    )
    .await?;
    let early = lateness.iter().filter(|l| **l < 0.0).count();
    scenario.check(
        early == 0,
        format!("{early} emails were sent before send_at"),
    );
    let lateness: Vec<Duration> = lateness
        .iter()
        .map(|l| Duration::from_secs_f64(l.max(0.0)))
        .collect();
    let max = percentile(lateness.clone(), 1.0).unwrap_or_default();
    scenario.figure(
        "sent after send_at",
        format!(
            "p50 {}, max {}",
            secs(percentile(lateness, 0.5).unwrap_or_default()),
            secs(max)
        ),
    );
    scenario
        .finish(stack, &submissions, Duration::from_secs(60))
        .await
}

/// A reporting transaction (REPEATABLE READ, one snapshot) held open while the queue
/// runs: throughput and table bloat before and during.
async fn reporting_tx(scale: Scale) -> Result<Report> {
    let phase = scale.secs(8.0, 60.0);
    let held = scale.secs(16.0, 300.0);
    let mut scenario = Scenario::new(
        "reporting-tx",
        format!(
            "a REPEATABLE READ transaction holding one snapshot for {} s while emails flow",
            held.as_secs()
        ),
    );
    let stack = Stack::start(3, &[], &[]).await?;
    let client = scenario.client(&stack);
    let rate = 30.0;
    let measure = |stack: &Stack| {
        let db = stack.db.clone();
        async move {
            let (dead, size): (i64, i64) = sqlx::query_as(
                "SELECT coalesce(n_dead_tup, 0), pg_total_relation_size('jobs') \
                 FROM pg_stat_user_tables WHERE relname = 'jobs'",
            )
            .fetch_one(&db)
            .await?;
            anyhow::Ok((dead, size))
        }
    };
    let load = Load::start(&client, 4, Some(rate), Mix::EMAILS);
    tokio::time::sleep(phase).await;
    let before = load.stop().await;
    let (dead0, size0) = measure(&stack).await?;
    let mut report_tx = stack.db.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *report_tx)
        .await?;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&mut *report_tx)
        .await?;
    let load = Load::start(&client, 4, Some(rate), Mix::EMAILS);
    tokio::time::sleep(held).await;
    let during = load.stop().await;
    let (dead1, size1) = measure(&stack).await?;
    let still: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&mut *report_tx)
        .await?;
    scenario.check(
        still == rows,
        "the reporting transaction saw one snapshot throughout",
    );
    report_tx.commit().await?;
    let e2e = |set: &[Submission]| {
        let ids: Vec<Uuid> = set.iter().filter_map(Submission::accepted).collect();
        let db = stack.db.clone();
        async move {
            let _ = all_final(
                &db,
                &ids,
                Duration::from_millis(100),
                Duration::from_secs(120),
                "the phase drains",
            )
            .await;
            let p: (Option<f64>, Option<f64>) = sqlx::query_as(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at)), \
                        percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at)) \
                 FROM requests WHERE id = ANY($1)",
            )
            .bind(&ids)
            .fetch_one(&db)
            .await?;
            anyhow::Ok(format!(
                "p50 {:.0} ms, p99 {:.0} ms ({} emails)",
                p.0.unwrap_or(0.0) * 1e3,
                p.1.unwrap_or(0.0) * 1e3,
                ids.len()
            ))
        }
    };
    scenario.figure("POST → sent, before", e2e(&before).await?);
    scenario.figure("POST → sent, snapshot held", e2e(&during).await?);
    scenario.figure(
        "jobs: dead tuples, size (before → while held)",
        format!(
            "{dead0} → {dead1}, {:.1} → {:.1} MiB",
            size0 as f64 / 1048576.0,
            size1 as f64 / 1048576.0
        ),
    );
    let mut submissions = before;
    submissions.extend(during);
    scenario
        .finish(stack, &submissions, Duration::from_secs(120))
        .await
}

/// A backlog drained on an empty table, then again after millions of finished rows
/// were loaded and analyzed (no queued row in the statistics), in the same run.
async fn aged_table(scale: Scale) -> Result<Report> {
    let rows = scale.pick(200_000, 2_000_000);
    let backlog = scale.pick(600, 5_000);
    let mut scenario = Scenario::new(
        "aged-table",
        format!(
            "a {backlog}-email backlog drained on an empty table, then with {rows} finished jobs loaded and ANALYZEd first"
        ),
    );
    let mut stack = Stack::start(3, &[], &[]).await?;
    let client = scenario.client(&stack);
    let mut submissions = Vec::new();
    let empty = drain(&mut stack, &client, backlog, &mut submissions).await?;
    let owner: Uuid = sqlx::query_scalar("SELECT id FROM users LIMIT 1")
        .fetch_one(&stack.db)
        .await?;
    let loaded = Instant::now();
    for statement in [
        "INSERT INTO requests (id, owner_id, kind, status, total, succeeded, created_at, finished_at) \
         SELECT gen_random_uuid(), $1, 'email', 'succeeded', 1, 1, now() - interval '1 day', now() - interval '1 day' \
         FROM generate_series(1, $2)",
        "INSERT INTO jobs (id, request_id, queue, payload, max_attempts, status, attempt, created_at, finished_at) \
         SELECT gen_random_uuid(), r.id, 'emails', '{}', 5, 'succeeded', 1, r.created_at, r.finished_at \
         FROM requests r WHERE r.status = 'succeeded' AND r.owner_id = $1 \
           AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.request_id = r.id) \
         LIMIT $2",
        "ANALYZE requests",
        "ANALYZE jobs",
    ] {
        let mut query = sqlx::query(statement);
        if statement.contains("$1") {
            query = query.bind(owner).bind(rows as i64);
        }
        query
            .execute(&stack.db)
            .await
            .with_context(|| statement.to_owned())?;
    }
    scenario.figure(
        "finished rows loaded",
        format!("{rows} in {}", secs(loaded.elapsed())),
    );
    let aged = drain(&mut stack, &client, backlog, &mut submissions).await?;
    scenario.figure(
        "drain on the empty table",
        format!("{:.0} jobs/s", backlog as f64 / empty.as_secs_f64()),
    );
    scenario.figure(
        "drain with the aged table",
        format!(
            "{:.0} jobs/s ({:.2}× of empty, same run)",
            backlog as f64 / aged.as_secs_f64(),
            empty.as_secs_f64() / aged.as_secs_f64()
        ),
    );
    scenario
        .finish(stack, &submissions, Duration::from_secs(120))
        .await
}

/// Workers stopped, `n` emails submitted, the workers started: the time from their
/// start until every one is final.
async fn drain(
    stack: &mut Stack,
    client: &Client,
    n: usize,
    submissions: &mut Vec<Submission>,
) -> Result<Duration> {
    while !stack.system.workers.is_empty() {
        stack.stop_worker(0).await;
    }
    let batch = burst(client, n).await;
    let ids: Vec<Uuid> = batch.iter().filter_map(Submission::accepted).collect();
    submissions.extend(batch);
    let started = Instant::now();
    for _ in 0..3 {
        stack.start_worker().await;
    }
    all_final(
        &stack.db,
        &ids,
        Duration::from_millis(50),
        Duration::from_secs(300),
        "the backlog drains",
    )
    .await?;
    Ok(started.elapsed())
}
