//! Building and running the worker: one apalis worker per queue (under one apalis
//! `Monitor`), fed by Conveyor's Redis transport; the bookkeeper; heartbeats, the
//! reaper and the promoter of due retries; the operational listener; and graceful
//! shutdown (stop fetching, let in-flight jobs finish within the grace period, hand
//! back what was not started, exit 0).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use apalis::layers::WorkerBuilderExt as _;
use apalis_core::error::BoxDynError;
use apalis_core::monitor::Monitor;
use apalis_core::task::data::Data;
use apalis_core::worker::builder::WorkerBuilder;
use axum::Router;
use futures::FutureExt as _;
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::ExposeSecret as _;
use shared::Config;
use shared::crypto::pii::PiiCipher;
use shared::health::{Health, HealthFlag};
use shared::queue::{Queue, QueueName};
use shared::redis::Redis;
use shared::telemetry::metric;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::backend::{Feeder, Job, JobBackend};
use crate::bookkeeper::{Acker, Bookkeeper, Outcome, Recorder, Running};
use crate::handlers::emails::{Mailer, SendError};

/// A worker process's shared handles.
#[derive(Clone, Debug)]
pub struct Worker {
    pub config: Arc<Config>,
    pub pool: PgPool,
    pub redis: Redis,
    /// Unique per process: names its consumers in Redis.
    pub id: String,
    pub flag: HealthFlag,
}

/// What the email handler needs.
pub struct EmailContext {
    mailer: Mailer,
    recorder: Recorder,
    settings: shared::config::QueueSettings,
}

impl Worker {
    pub fn new(config: Arc<Config>, pool: PgPool, redis: Redis) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".to_owned());
        let id = format!(
            "{host}-{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Worker {
            config,
            pool,
            redis,
            id,
            flag: HealthFlag::default(),
        }
    }

    pub fn health(&self) -> Health {
        Health {
            pool: self.pool.clone(),
            redis: self.redis.clone(),
            timeout: self.config.health_timeout,
            service: "worker",
            flag: self.flag.clone(),
        }
    }

    /// The operational listener's routes.
    pub fn ops_router(&self, prometheus: PrometheusHandle) -> Router {
        shared::health::routes(self.health()).merge(shared::health::metrics_routes(prometheus))
    }

    /// Runs until `shutdown` resolves (then stops within SHUTDOWN_GRACE_SECS) or a
    /// consumer dies (then returns an error: the process must exit non-zero).
    pub async fn run(
        self,
        prometheus: PrometheusHandle,
        ops: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let config = self.config.clone();
        // Listen for the signal from the start: startup may wait for Redis.
        let (signal_seen_tx, mut signal_seen) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = signal_seen_tx.send(true);
        });
        let readiness = self.health().check().await;
        tracing::info!(worker = %self.id, postgres = ?readiness.postgres, redis = ?readiness.redis, "worker starting");
        let watch_task = self.health().spawn_watch(Duration::from_secs(10));
        let (stop_tx, stop_rx) = watch::channel(false);

        let ops_server = {
            let mut stop = stop_rx.clone();
            let router = self.ops_router(prometheus);
            tokio::spawn(async move {
                axum::serve(ops, router)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await
            })
        };

        // The emails queue: consumer, feeder, bookkeeper, apalis worker.
        let queue = Queue::new(self.redis.clone(), QueueName::Emails);
        let settings = config.emails;
        let block = Duration::from_secs(2);
        let Some(consumer) = connect_consumer(&queue, &self.id, block, signal_seen.clone()).await
        else {
            tracing::info!("stopped while waiting for Redis");
            let _ = stop_tx.send(true);
            watch_task.abort();
            let _ = ops_server.await;
            return Ok(());
        };
        let acker = Acker::new(self.redis.clone(), queue.clone(), self.id.clone());
        let running = Running::default();
        let (bookkeeper, recorder) = Bookkeeper::new(
            self.pool.clone(),
            self.redis.clone(),
            HashMap::from([(QueueName::Emails, acker.clone())]),
            running.clone(),
        );
        let bookkeeper = tokio::spawn(bookkeeper.run());
        let slots = Arc::new(Semaphore::new(settings.concurrency));
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>(settings.concurrency);
        let feeder = Feeder {
            consumer,
            pool: self.pool.clone(),
            slots,
            jobs: jobs_tx,
            acker,
            heartbeat_timeout: config.job_heartbeat_timeout,
            running: running.clone(),
        };
        let mut feeder_task = tokio::spawn(feeder.run(stop_rx.clone()));
        let keeper = tokio::spawn(keep_alive(
            self.clone(),
            vec![queue.clone()],
            running.clone(),
            stop_rx.clone(),
        ));

        let cipher = PiiCipher::new(
            &config.pii_key_id,
            config.pii_key.expose_secret(),
            &config.pii_previous_keys,
        );
        let mailer = Mailer::from_config(&config, cipher, self.pool.clone(), self.redis.clone())?;
        let context = Arc::new(EmailContext {
            mailer,
            recorder,
            settings,
        });
        let jobs_rx = Arc::new(Mutex::new(Some(jobs_rx)));
        let name = format!("emails@{}", self.id);
        let concurrency = settings.concurrency;
        let monitor = Monitor::new()
            .register(move |_restarts| {
                // The feed is single-use: a restarted worker gets a closed one and stops.
                let rx = jobs_rx
                    .lock()
                    .ok()
                    .and_then(|mut slot| slot.take())
                    .unwrap_or_else(|| mpsc::channel(1).1);
                WorkerBuilder::new(name.clone())
                    .backend(JobBackend::new("emails".to_owned(), rx))
                    .concurrency(concurrency)
                    .data(context.clone())
                    .build(run_email)
            })
            .shutdown_timeout(config.shutdown_grace);

        let (signal_tx, signal_rx) = tokio::sync::oneshot::channel::<()>();
        let monitor_task = tokio::spawn(monitor.run_with_signal(async move {
            let _ = signal_rx.await;
            Ok(())
        }));

        let crashed = tokio::select! {
            _ = signal_seen.wait_for(|seen| *seen) => None,
            result = &mut feeder_task => Some(format!("the emails consumer stopped: {result:?}")),
        };
        if let Some(reason) = &crashed {
            tracing::error!(reason = %reason, "a consumer died; stopping the worker");
            self.flag.fail(reason.clone());
        }
        tracing::info!(
            grace_secs = config.shutdown_grace.as_secs(),
            "worker stopping: no new jobs, finishing in-flight ones"
        );
        let _ = stop_tx.send(true);
        if !feeder_task.is_finished() {
            let _ = feeder_task.await;
        }
        let _ = signal_tx.send(());
        match tokio::time::timeout(config.shutdown_grace + Duration::from_secs(2), monitor_task)
            .await
        {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => {
                tracing::warn!(error = %err, "apalis monitor stopped with an error")
            }
            Ok(Err(err)) => tracing::warn!(error = %err, "apalis monitor task failed"),
            Err(_) => tracing::warn!("in-flight jobs did not finish within the grace period"),
        }
        // Every handler is done (or abandoned); wait for their outcomes to be written.
        let _ = tokio::time::timeout(Duration::from_secs(10), bookkeeper).await;
        let leftovers = running.snapshot();
        if !leftovers.is_empty() {
            // Claimed but not finished: give them back so another worker takes them now.
            if let Err(err) = shared::db::jobs::unclaim(&self.pool, &leftovers, &self.id).await {
                tracing::warn!(error = %err, "cannot hand back unfinished jobs; the heartbeat timeout will");
            }
        }
        match queue.release(&self.id).await {
            Ok(n) if n > 0 => tracing::info!(returned = n, "returned unstarted jobs to the queue"),
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(error = %err, "cannot return unstarted jobs; the reaper will")
            }
        }
        keeper.abort();
        watch_task.abort();
        let _ = ops_server.await;
        match crashed {
            None => {
                tracing::info!("worker stopped");
                Ok(())
            }
            Some(reason) => Err(anyhow::anyhow!(reason)),
        }
    }
}

/// A consumer, retrying while Redis is unreachable; `None` if asked to stop first.
async fn connect_consumer(
    queue: &Queue,
    worker: &str,
    block: Duration,
    mut stop: watch::Receiver<bool>,
) -> Option<shared::queue::Consumer> {
    let mut attempt = 0u32;
    loop {
        if *stop.borrow() {
            return None;
        }
        match queue.consumer(worker, block).await {
            Ok(consumer) => return Some(consumer),
            Err(err) => {
                attempt += 1;
                tracing::warn!(error = %err, attempt, "cannot connect a consumer to Redis; retrying");
                let pause = Duration::from_millis(200 * u64::from(attempt.min(25)));
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => return None,
                }
            }
        }
    }
}

/// Heartbeats (Redis consumer keys and job rows), the reaper, the promoter of due
/// retries and the queue-depth gauges.
async fn keep_alive(
    worker: Worker,
    queues: Vec<Queue>,
    running: Running,
    mut stop: watch::Receiver<bool>,
) {
    let timeout = worker.config.job_heartbeat_timeout;
    let beat_every = timeout / 3;
    let mut beat = tokio::time::interval(beat_every);
    let mut promote = tokio::time::interval(Duration::from_millis(250));
    let mut reap = tokio::time::interval(timeout / 2);
    for ticker in [&mut beat, &mut promote, &mut reap] {
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    let inflight_keys: Vec<_> = queues
        .iter()
        .map(|q| (q.clone(), worker.id.clone()))
        .collect();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = beat.tick() => {
                for (queue, id) in &inflight_keys {
                    if let Err(err) = queue.heartbeat(id, timeout).await {
                        tracing::warn!(error = %err, "consumer heartbeat failed");
                    }
                }
                let ids = running.snapshot();
                if !ids.is_empty()
                    && let Err(err) = shared::db::jobs::heartbeat(&worker.pool, &ids, &worker.id).await
                {
                    tracing::warn!(error = %err, "job heartbeat failed");
                }
            }
            _ = promote.tick() => {
                for queue in &queues {
                    if let Err(err) = queue.promote_due(SystemTime::now()).await {
                        tracing::debug!(error = %err, "promoting due retries failed");
                    }
                    if let Ok((ready, delayed)) = queue.depth().await {
                        let name = queue.name().as_str();
                        metrics::gauge!(metric::QUEUE_DEPTH, "queue" => name, "state" => "ready").set(ready as f64);
                        metrics::gauge!(metric::QUEUE_DEPTH, "queue" => name, "state" => "delayed").set(delayed as f64);
                    }
                }
            }
            _ = reap.tick() => {
                for queue in &queues {
                    if let Err(err) = queue.reap().await {
                        tracing::debug!(error = %err, "reaping failed");
                    }
                }
            }
        }
    }
}

/// The `emails` handler: send, then record the outcome (and wait until it is).
async fn run_email(job: Job, context: Data<Arc<EmailContext>>) -> Result<(), BoxDynError> {
    let started = Instant::now();
    let row = &job.row;
    metrics::counter!(metric::JOBS_STARTED_TOTAL, "queue" => "emails").increment(1);
    let span = tracing::info_span!("job", queue = "emails", job_id = %row.id, request_id = %row.request_id, attempt = row.attempt);
    let result = std::panic::AssertUnwindSafe(context.mailer.send(row))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(SendError::Permanent("the handler panicked".into())));
    let outcome = match result {
        Ok(()) => Outcome::Succeeded,
        Err(SendError::Permanent(error)) => Outcome::Dead { error },
        Err(SendError::Transient(error)) if row.attempt < row.max_attempts => {
            let attempt = u32::try_from(row.attempt).unwrap_or(1);
            let delay = shared::jobs::backoff(&context.settings, attempt);
            Outcome::Retry {
                error,
                at: SystemTime::now() + delay,
            }
        }
        Err(SendError::Transient(error)) => Outcome::Dead {
            error: format!("{error} (after {} attempts)", row.attempt),
        },
    };
    span.in_scope(|| match &outcome {
        Outcome::Succeeded => tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "email sent"
        ),
        Outcome::Retry { error, .. } => tracing::warn!(error = %error, "email failed; will retry"),
        Outcome::Dead { error } => tracing::warn!(error = %error, "email failed for good"),
    });
    context
        .recorder
        .record(QueueName::Emails, row.id, outcome, started)
        .await;
    drop(job);
    Ok(())
}
