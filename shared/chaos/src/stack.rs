//! The system under test, all on loopback: a database of its own on the shared
//! PostgreSQL server, reached by the stack through a TCP proxy the suite can cut; a
//! `redis-server`, an SMTP server and a clamd of its own, each stopped and started
//! again on the same port; the real `api` and `worker` binaries. The suite reads the
//! database directly (not through the proxy) to reconcile. Every process is stopped by
//! its own pid when the stack drops.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use harness::system::System;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use testkit::clamd::ClamdServer;
use testkit::process::{Process, scratch_dir, wait_for_port};
use testkit::proxy::TcpProxy;
use testkit::smtp::Smtp;
use testkit::{fixtures, free_port};
use tokio::process::Command;
use uuid::Uuid;

/// Settings every scenario runs with: the production defaults of `.env.example`
/// (heartbeats, dispatch, redelivery, retries), except the per-account limits, which
/// the load would otherwise hit by design.
const SETTINGS: &[(&str, &str)] = &[
    ("APP_ENV", "test"),
    ("RUST_LOG", "info,sqlx=warn"),
    ("JOB_HEARTBEAT_TIMEOUT_MS", "6000"),
    ("DISPATCH_INTERVAL_MS", "1000"),
    ("REDELIVERY_TIMEOUT_SECS", "60"),
    ("EMAILS_RETRY_BASE_MS", "1000"),
    ("EMAILS_RETRY_CAP_MS", "900000"),
    ("SMTP_TIMEOUT_SECS", "30"),
    ("SHUTDOWN_GRACE_SECS", "30"),
    ("CLAMD_TIMEOUT_SECS", "60"),
    ("RATE_LIMIT_SUBMIT", "100000/60"),
    ("RATE_LIMIT_READ", "1000000/60"),
    ("UPLOADS_PER_HOUR", "100000"),
    ("UPLOAD_MAX_IN_FLIGHT", "64"),
    ("EMAIL_QUOTA_PROMOTER_PER_HOUR", "10000000"),
    ("EMAIL_QUOTA_PROMOTER_PER_DAY", "10000000"),
];

/// A `redis-server` of the stack's own, without persistence: a restart loses every
/// key, as a crashed cache node does.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    process: Option<Process>,
}

impl RedisServer {
    pub async fn start() -> Result<RedisServer> {
        let mut server = RedisServer {
            port: free_port(),
            dir: scratch_dir("redis"),
            process: None,
        };
        server.restart().await?;
        Ok(server)
    }

    pub async fn restart(&mut self) -> Result<()> {
        let log = self.dir.join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("redis-server starts")?;
        self.process = Some(Process { child, log });
        wait_for_port(self.port).await;
        Ok(())
    }

    /// Kills it (SIGKILL: no shutdown save, the data is gone).
    pub async fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.child.start_kill();
            let _ = process.child.wait().await;
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// Peak resident memory per role, sampled every 200 ms from `/proc/<pid>/status`.
#[derive(Clone, Default)]
pub struct Rss {
    pids: Arc<Mutex<HashMap<u32, &'static str>>>,
    peaks: Arc<Mutex<HashMap<&'static str, u64>>>,
}

impl Rss {
    fn watch(&self, pid: u32, role: &'static str) {
        if let Ok(mut pids) = self.pids.lock() {
            pids.insert(pid, role);
        }
    }

    fn spawn_sampler(&self) -> tokio::task::JoinHandle<()> {
        let rss = self.clone();
        tokio::spawn(async move {
            loop {
                let pids: Vec<(u32, &'static str)> = rss
                    .pids
                    .lock()
                    .map(|p| p.iter().map(|(k, v)| (*k, *v)).collect())
                    .unwrap_or_default();
                for (pid, role) in pids {
                    // VmHWM: the peak since the process started, so a spike between
                    // two samples is not missed.
                    let Some(kib) = status_kib(pid, "VmHWM:") else {
                        continue;
                    };
                    if let Ok(mut peaks) = rss.peaks.lock() {
                        let peak = peaks.entry(role).or_default();
                        *peak = (*peak).max(kib);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    }

    /// The peak of `role` in MiB (0 when never sampled).
    pub fn peak_mib(&self, role: &str) -> f64 {
        self.peaks
            .lock()
            .ok()
            .and_then(|p| p.get(role).copied())
            .unwrap_or(0) as f64
            / 1024.0
    }
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub struct Stack {
    pub system: System,
    /// Direct to the database, not through the proxy: the suite's own view.
    pub db: PgPool,
    db_name: String,
    server_url: String,
    pub pg: TcpProxy,
    pub redis: RedisServer,
    pub smtp: Smtp,
    pub clamd: ClamdServer,
    pub rss: Rss,
    sampler: tokio::task::JoinHandle<()>,
    /// Uploads known clean, for rescans.
    pub clean_uploads: Vec<Uuid>,
    smtp_args: Vec<String>,
}

impl Stack {
    /// A fresh database (migrated), the services, the api and `workers` workers.
    /// `overrides` go on top of [`SETTINGS`]; `smtp_args` are the SMTP server's
    /// (e.g. `--delay 0.2`).
    pub async fn start(
        workers: usize,
        overrides: &[(&str, &str)],
        smtp_args: &[&str],
    ) -> Result<Stack> {
        let server_url = std::env::var("DATABASE_URL")
            .context("DATABASE_URL names the PostgreSQL server (scripts/chaos sets it)")?;
        let db_name = format!("chaos_{}", Uuid::new_v4().simple());
        let server = PgPoolOptions::new()
            .max_connections(1)
            .connect(&server_url)
            .await
            .context("PostgreSQL answers")?;
        // The name is the suite's own (a UUID), never input.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
            .execute(&server)
            .await?;
        server.close().await;
        let mut url = url::Url::parse(&server_url)?;
        url.set_path(&db_name);
        let db = PgPoolOptions::new()
            .max_connections(8)
            .connect(url.as_str())
            .await?;
        shared::db::MIGRATOR.run(&db).await?;

        let pg_target = format!(
            "{}:{}",
            url.host_str().unwrap_or("127.0.0.1"),
            url.port().unwrap_or(5432)
        );
        let pg = TcpProxy::start(&pg_target).await;
        let mut through_proxy = url.clone();
        through_proxy
            .set_port(Some(pg.port()))
            .map_err(|()| anyhow::anyhow!("a port in the database URL"))?;

        let redis = RedisServer::start().await?;
        let smtp = Smtp::start(free_port(), smtp_args).await;
        let clamd = ClamdServer::spawn().await;
        let storage = scratch_dir("storage");
        let smtp_url = format!("smtp://127.0.0.1:{}", smtp.port);
        let clamd_addr = clamd.address();
        let redis_url = redis.url();
        let database_url = through_proxy.to_string();
        let storage_url = storage.display().to_string();
        let mut env: Vec<(&str, &str)> = SETTINGS.to_vec();
        env.extend([
            ("DATABASE_URL", database_url.as_str()),
            ("REDIS_URL", redis_url.as_str()),
            ("SMTP_URL", smtp_url.as_str()),
            ("CLAMD_ADDR", clamd_addr.as_str()),
            ("STORAGE_URL", storage_url.as_str()),
        ]);
        for (key, value) in overrides {
            env.retain(|(k, _)| k != key);
            env.push((key, value));
        }
        let mut system = System::new(&db, smtp.port, &env).await;
        system.start_api().await;
        system.promote_everyone(&db).await;
        let rss = Rss::default();
        let sampler = rss.spawn_sampler();
        let mut stack = Stack {
            system,
            db,
            db_name,
            server_url,
            pg,
            redis,
            smtp,
            clamd,
            rss,
            sampler,
            clean_uploads: Vec::new(),
            smtp_args: smtp_args.iter().map(|s| (*s).to_owned()).collect(),
        };
        stack.watch_api();
        for _ in 0..workers {
            stack.start_worker().await;
        }
        Ok(stack)
    }

    fn watch_api(&self) {
        if let Some(api) = &self.system.api {
            self.rss.watch(api.pid(), "api");
        }
    }

    pub async fn start_worker(&mut self) {
        let index = self.system.start_worker().await;
        self.rss.watch(self.system.workers[index].pid(), "worker");
    }

    /// SIGKILLs worker `index` (no shutdown at all) and reaps it; returns its pid.
    pub async fn kill_worker(&mut self, index: usize) -> u32 {
        let mut worker = self.system.workers.remove(index);
        let pid = worker.pid();
        let _ = worker.child.start_kill();
        let _ = worker.child.wait().await;
        pid
    }

    /// SIGTERMs worker `index` and waits for its exit status (a graceful stop).
    pub async fn stop_worker(&mut self, index: usize) -> std::process::ExitStatus {
        let worker = self.system.workers.remove(index);
        worker.terminate(Duration::from_secs(60)).await
    }

    pub async fn restart_api(&mut self) {
        self.system.restart_api().await;
        self.watch_api();
    }

    pub async fn restart_smtp(&mut self) {
        let args: Vec<&str> = self.smtp_args.iter().map(String::as_str).collect();
        self.smtp.restart(&args).await;
    }

    /// `n` clean uploads, scanned, for rescans to pick from.
    pub async fn seed_clean_uploads(&mut self, n: u8) -> Result<()> {
        for seed in 0..n {
            let form = reqwest::multipart::Form::new().part(
                "file",
                reqwest::multipart::Part::bytes(fixtures::small_png(200 + seed))
                    .file_name("seed.png"),
            );
            let body: serde_json::Value = self
                .system
                .client
                .post(format!("{}/api/v1/uploads", self.system.base))
                .bearer_auth(&self.system.token)
                .multipart(form)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let id: Uuid = body["id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .context("an upload id")?;
            self.clean_uploads.push(id);
        }
        let ids = self.clean_uploads.clone();
        let db = self.db.clone();
        crate::wait::until(Duration::from_secs(60), "seed uploads are clean", || {
            let ids = ids.clone();
            let db = db.clone();
            async move {
                let clean: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM uploads WHERE id = ANY($1) AND status = 'clean'",
                )
                .bind(&ids)
                .fetch_one(&db)
                .await
                .ok()?;
                (clean == ids.len() as i64).then_some(())
            }
        })
        .await?;
        Ok(())
    }

    /// Stops every process and drops the database.
    pub async fn finish(mut self) -> Result<()> {
        self.sampler.abort();
        if let Some(api) = self.system.api.take() {
            let _ = api.terminate(Duration::from_secs(30)).await;
        }
        while !self.system.workers.is_empty() {
            let _ = self.stop_worker(0).await;
        }
        self.smtp.stop().await;
        self.clamd.stop().await;
        self.redis.kill().await;
        self.db.close().await;
        let server = PgPoolOptions::new()
            .max_connections(1)
            .connect(&self.server_url)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.db_name
        )))
        .execute(&server)
        .await?;
        Ok(())
    }
}
