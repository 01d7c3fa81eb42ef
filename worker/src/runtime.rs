//! The job runtime, the same for every queue: for each registered queue a producer
//! (fetch + claim) feeding an apalis worker whose executor runs the handler; one
//! completer for the process; the maintenance chores; the operational listener; and
//! graceful shutdown (stop fetching, let in-flight jobs finish within the grace
//! period, hand back what was not finished, exit 0). A producer that dies fails
//! readiness and makes [`Runtime::run`] return an error. One [`PauseWatch`] per
//! process tells every producer which queues an operator has paused.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apalis::layers::WorkerBuilderExt as _;
use apalis_core::error::BoxDynError;
use apalis_core::monitor::Monitor;
use apalis_core::task::data::Data;
use apalis_core::worker::builder::WorkerBuilder;
use axum::Router;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use metrics_exporter_prometheus::PrometheusHandle;
use shared::Config;
use shared::config::QueueSettings;
use shared::health::{Health, HealthFlag};
use shared::maintenance::every;
use shared::queue::pause::PauseWatch;
use shared::queue::{Consumer, Queue, QueueName};
use shared::redis::Redis;
use shared::telemetry::metric;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use crate::completer::{Completer, Recorder};
use crate::executor::Executor;
use crate::gate::Gate;
use crate::handler::Handler;
use crate::maintenance::{Heartbeat, Promoter, Reaper};
use crate::producer::{ClaimedJobs, FeedClosed, Job, Producer};
use crate::running::Running;
use crate::scheduler::Scheduler;
use crate::signals::Signals;

/// How long a fetch blocks on an empty queue before it looks at its stop signal.
const FETCH_BLOCK: Duration = Duration::from_secs(2);
/// How often the paused queues are read from Redis: a pause or resume takes effect
/// within about this.
const PAUSE_REFRESH: Duration = Duration::from_secs(1);

/// A worker process: its handles and the queues it runs.
pub struct Runtime {
    pub config: Arc<Config>,
    pub pool: PgPool,
    pub redis: Redis,
    /// Unique per process: names its consumers in Redis and its claims in PostgreSQL.
    pub id: String,
    pub flag: HealthFlag,
    /// The periodic jobs this process enqueues (none unless registered).
    pub scheduler: Scheduler,
    /// What the completer and the scheduler signal (off unless a test turns it on).
    pub signals: Signals,
    queues: Vec<Box<dyn Registered>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queues: Vec<QueueName> = self.queues.iter().map(|q| q.name()).collect();
        f.debug_struct("Runtime")
            .field("id", &self.id)
            .field("queues", &queues)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// A runtime with no queue yet; see [`crate::queues::register`] and [`Runtime::queue`].
    pub fn new(config: Arc<Config>, pool: PgPool, redis: Redis) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".to_owned());
        let id = format!(
            "{host}-{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Runtime {
            scheduler: Scheduler::new(config.clone(), pool.clone(), redis.clone()),
            signals: Signals::default(),
            config,
            pool,
            redis,
            id,
            flag: HealthFlag::default(),
            queues: Vec::new(),
        }
    }

    /// The runtime with every queue of [`crate::queues::register`].
    pub fn with_queues(config: Arc<Config>, pool: PgPool, redis: Redis) -> anyhow::Result<Self> {
        let mut runtime = Runtime::new(config, pool, redis);
        crate::queues::register(&mut runtime)?;
        Ok(runtime)
    }

    /// Registers a queue — its handler (whose job kind names the queue) and settings. A
    /// queue registered twice keeps the last registration.
    pub fn queue<H: Handler>(&mut self, handler: H, settings: QueueSettings) {
        let name = <H::Job as shared::jobs::Job>::QUEUE;
        self.queues.retain(|q| q.name() != name);
        self.queues.push(Box::new(Registration {
            name,
            handler,
            settings,
        }));
    }

    /// Keeps only `queues` (a worker dedicated to some queues; tests).
    pub fn retain_queues(&mut self, queues: &[QueueName]) {
        self.queues.retain(|q| queues.contains(&q.name()));
    }

    pub fn queue_names(&self) -> Vec<QueueName> {
        self.queues.iter().map(|q| q.name()).collect()
    }

    pub fn health(&self) -> Health {
        Health {
            pool: self.pool.clone(),
            redis: self.redis.clone(),
            timeout: self.config.ops.health_timeout,
            service: "worker",
            flag: self.flag.clone(),
        }
    }

    /// The operational listener's routes.
    pub fn ops_router(&self, prometheus: PrometheusHandle) -> Router {
        let sampled = shared::maintenance::sample::Exporter::new(self.redis.clone());
        shared::health::routes(self.health())
            .merge(shared::health::sampled_metrics_routes(prometheus, sampled))
    }

    /// Runs until `shutdown` resolves (then stops within SHUTDOWN_GRACE_SECS) or a
    /// producer dies (then returns an error: the process must exit non-zero).
    /// `ops`: the listener for /metrics and health, if any.
    pub async fn run(
        self,
        ops: Option<(TcpListener, PrometheusHandle)>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let health = self.health();
        let ops = ops.map(|(listener, prometheus)| (listener, self.ops_router(prometheus)));
        let Runtime {
            config,
            pool,
            redis,
            id,
            flag,
            mut scheduler,
            signals,
            queues,
        } = self;
        scheduler.signals = signals.clone();
        // Listen for the signal from the start: startup may wait for Redis.
        let (signal_seen_tx, mut signal_seen) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = signal_seen_tx.send(true);
        });
        for registered in &queues {
            ConsumerUp::set(registered.name(), false);
        }
        let readiness = health.check().await;
        let names: Vec<&str> = queues.iter().map(|q| q.name().as_str()).collect();
        tracing::info!(worker = %id, queues = ?names, postgres = ?readiness.postgres, redis = ?readiness.redis, "worker starting");
        let watch_task = health.clone().spawn_watch(Duration::from_secs(10));
        let (stop_tx, stop_rx) = watch::channel(false);
        let ops_server = ops.map(|(listener, router)| {
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await
            })
        });
        let stop_ops = |stop_tx: &watch::Sender<bool>| {
            let _ = stop_tx.send(true);
        };

        // One consumer per queue (waiting for Redis if it is down).
        let mut consumers: Vec<Consumer> = Vec::with_capacity(queues.len());
        for registered in &queues {
            let queue = Queue::new(redis.clone(), registered.name());
            let ttl = config.queues.heartbeat_timeout;
            match connect_consumer(&queue, &id, ttl, signal_seen.clone()).await {
                Some(consumer) => consumers.push(consumer),
                None => {
                    tracing::info!("stopped while waiting for Redis");
                    stop_ops(&stop_tx);
                    watch_task.abort();
                    if let Some(server) = ops_server {
                        let _ = server.await;
                    }
                    return Ok(());
                }
            }
        }
        let pause = PauseWatch::start(redis.clone(), PAUSE_REFRESH, stop_rx.clone()).await;
        let pause_gauges = tokio::spawn(crate::maintenance::export_paused(
            pause.clone(),
            queues.iter().map(|q| q.name()).collect(),
        ));
        let in_flight: HashMap<QueueName, _> = consumers
            .iter()
            .map(|c| (c.queue().name(), c.in_flight().clone()))
            .collect();
        let running = Running::default();
        let (completer, recorder) = Completer::new(
            config.clone(),
            pool.clone(),
            redis.clone(),
            in_flight.clone(),
            running.clone(),
        );
        let completer = tokio::spawn(completer.with_signals(signals).run());

        let mut monitor = Monitor::new();
        let mut producers: FuturesUnordered<JoinHandle<Result<(), FeedClosed>>> =
            FuturesUnordered::new();
        for (registered, consumer) in queues.into_iter().zip(consumers) {
            let settings = registered.settings();
            let (jobs_tx, jobs_rx) = mpsc::channel::<Job>(settings.concurrency);
            let gate = Gate::new(registered.name(), &id, redis.clone());
            let producer = Producer {
                consumer,
                pool: pool.clone(),
                redis: redis.clone(),
                slots: Arc::new(Semaphore::new(settings.concurrency)),
                jobs: jobs_tx,
                heartbeat_timeout: config.queues.heartbeat_timeout,
                running: running.clone(),
                pause: pause.clone(),
                gate: gate.clone(),
            };
            let (stop, name) = (stop_rx.clone(), registered.name());
            producers.push(tokio::spawn(async move {
                let _up = ConsumerUp::new(name);
                producer.run(stop).await
            }));
            monitor = registered.start(monitor, &id, jobs_rx, recorder.clone(), gate);
        }
        drop(recorder);
        let monitor = monitor.shutdown_timeout(config.ops.shutdown_grace);
        let mut chores = spawn_upkeep(&config, &pool, &id, &in_flight, &running, &stop_rx);
        if config.pipeline.scheduler && !scheduler.is_empty() {
            chores.push(tokio::spawn(every(
                "scheduler",
                Scheduler::INTERVAL,
                stop_rx.clone(),
                move || {
                    let scheduler = scheduler.clone();
                    async move { scheduler.tick().await }
                },
            )));
        }

        let (signal_tx, signal_rx) = tokio::sync::oneshot::channel::<()>();
        let monitor_task = tokio::spawn(monitor.run_with_signal(async move {
            let _ = signal_rx.await;
            Ok(())
        }));

        let crashed = tokio::select! {
            _ = signal_seen.wait_for(|seen| *seen) => None,
            Some(result) = producers.next() => Some(format!("a queue's producer stopped: {result:?}")),
        };
        if let Some(reason) = &crashed {
            tracing::error!(reason = %reason, "a producer died; stopping the worker");
            flag.fail(reason.clone());
        }
        tracing::info!(
            grace_secs = config.ops.shutdown_grace.as_secs(),
            "worker stopping: no new jobs, finishing in-flight ones"
        );
        let _ = stop_tx.send(true);
        while producers.next().await.is_some() {}
        let _ = signal_tx.send(());
        match tokio::time::timeout(
            config.ops.shutdown_grace + Duration::from_secs(2),
            monitor_task,
        )
        .await
        {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => {
                tracing::warn!(error = %err, "apalis monitor stopped with an error")
            }
            Ok(Err(err)) => tracing::warn!(error = %err, "apalis monitor task failed"),
            Err(_) => tracing::warn!("in-flight jobs did not finish within the grace period"),
        }
        // Every executor is done (or abandoned); wait for their verdicts to be written.
        let _ = tokio::time::timeout(Duration::from_secs(10), completer).await;
        let leftovers = running.snapshot();
        if !leftovers.is_empty() {
            // Claimed but not finished: give them back so another worker takes them now.
            match shared::db::jobs::hand_back(&pool, &leftovers, &id).await {
                Ok(n) => tracing::info!(jobs = n, "handed back unfinished jobs"),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot hand back unfinished jobs; the heartbeat timeout will")
                }
            }
        }
        for list in in_flight.values() {
            match list.release().await {
                Ok(n) if n > 0 => {
                    tracing::info!(queue = %list.queue().name(), returned = n, "returned unstarted jobs to the queue")
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "cannot return unstarted jobs; the reaper will")
                }
            }
        }
        for chore in chores {
            chore.abort();
        }
        pause_gauges.abort();
        watch_task.abort();
        if let Some(server) = ops_server {
            let _ = server.await;
        }
        match crashed {
            None => {
                tracing::info!("worker stopped");
                Ok(())
            }
            Some(reason) => Err(anyhow::anyhow!(reason)),
        }
    }
}

/// Heartbeats, reaper and promoter, each on its own interval: this process's upkeep
/// of its own consumers and claims (durable chores are jobs on the `chores` queue).
fn spawn_upkeep(
    config: &Config,
    pool: &PgPool,
    id: &str,
    in_flight: &HashMap<QueueName, shared::queue::InFlight>,
    running: &Running,
    stop: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let queues: Vec<Queue> = in_flight.values().map(|l| l.queue().clone()).collect();
    let heartbeat = Heartbeat {
        pool: pool.clone(),
        worker: id.to_owned(),
        consumers: in_flight.values().cloned().collect(),
        running: running.clone(),
        ttl: config.queues.heartbeat_timeout,
    };
    let reaper = Reaper {
        queues: queues.clone(),
    };
    let promoter = Promoter { queues };
    let reap_every = config.queues.heartbeat_timeout / 2;
    vec![
        tokio::spawn({
            let stop = stop.clone();
            async move {
                let every_beat = heartbeat.interval();
                every("heartbeat", every_beat, stop, || heartbeat.round()).await
            }
        }),
        tokio::spawn(every("reaper", reap_every, stop.clone(), move || {
            let reaper = reaper.clone();
            async move { reaper.round().await }
        })),
        tokio::spawn(every(
            "promoter",
            Promoter::INTERVAL,
            stop.clone(),
            move || {
                let promoter = promoter.clone();
                async move { promoter.round().await }
            },
        )),
    ]
}

/// A consumer, retrying while Redis is unreachable; `None` if asked to stop first.
/// A consumer of `queue`, registered (its first heartbeat) before it is returned: a
/// consumer takes ids only after the reaper can see it, so a process that dies holding
/// ids never leaves them in an in-flight list nobody reaps.
async fn connect_consumer(
    queue: &Queue,
    worker: &str,
    ttl: Duration,
    mut stop: watch::Receiver<bool>,
) -> Option<Consumer> {
    let mut attempt = 0u32;
    loop {
        if *stop.borrow() {
            return None;
        }
        let connected = match queue.consumer(worker, FETCH_BLOCK).await {
            Ok(consumer) => consumer.in_flight().heartbeat(ttl).await.map(|()| consumer),
            Err(err) => Err(err),
        };
        match connected {
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

/// `conveyor_worker_consumer_up{queue}`: 1 from [`ConsumerUp::new`] until the guard
/// drops — when the producer's task ends, however it ends (a panic included).
struct ConsumerUp(QueueName);

impl ConsumerUp {
    fn new(queue: QueueName) -> Self {
        Self::set(queue, true);
        ConsumerUp(queue)
    }

    fn set(queue: QueueName, up: bool) {
        metrics::gauge!(metric::WORKER_CONSUMER_UP, "queue" => queue.as_str())
            .set(f64::from(u8::from(up)));
    }
}

impl Drop for ConsumerUp {
    fn drop(&mut self) {
        Self::set(self.0, false);
    }
}

/// A registered queue, whatever its handler type.
trait Registered: Send + Sync {
    fn name(&self) -> QueueName;
    fn settings(&self) -> QueueSettings;
    /// Adds the queue's apalis worker, fed by `jobs`, to `monitor`.
    fn start(
        self: Box<Self>,
        monitor: Monitor,
        worker: &str,
        jobs: mpsc::Receiver<Job>,
        recorder: Recorder,
        gate: Gate,
    ) -> Monitor;
}

struct Registration<H> {
    name: QueueName,
    handler: H,
    settings: QueueSettings,
}

impl<H: Handler> Registered for Registration<H> {
    fn name(&self) -> QueueName {
        self.name
    }

    fn settings(&self) -> QueueSettings {
        self.settings
    }

    fn start(
        self: Box<Self>,
        monitor: Monitor,
        worker: &str,
        jobs: mpsc::Receiver<Job>,
        recorder: Recorder,
        gate: Gate,
    ) -> Monitor {
        let Registration {
            name,
            handler,
            settings,
        } = *self;
        let executor = Arc::new(Executor {
            queue: name,
            handler: Arc::new(handler),
            settings,
            recorder,
            gate,
        });
        // The feed is single-use: a restarted apalis worker gets a closed one and stops.
        let jobs = Arc::new(Mutex::new(Some(jobs)));
        let worker_name = format!("{name}@{worker}");
        monitor.register(move |_restarts| {
            let rx = jobs
                .lock()
                .ok()
                .and_then(|mut slot| slot.take())
                .unwrap_or_else(|| mpsc::channel(1).1);
            WorkerBuilder::new(worker_name.clone())
                .backend(ClaimedJobs::new(name.to_string(), rx))
                .concurrency(settings.concurrency)
                .data(executor.clone())
                .build(execute::<H>)
        })
    }
}

/// The apalis task function of every queue.
async fn execute<H: Handler>(
    job: Job,
    executor: Data<Arc<Executor<H>>>,
) -> Result<(), BoxDynError> {
    executor.run(job).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::test_support::redis;

    /// A consumer is known to the reaper from the moment `connect_consumer` returns it,
    /// before any upkeep round runs: a worker killed right after its first fetch leaves
    /// ids another worker's reaper finds and puts back (the CI failures of
    /// `pipeline::a_killed_worker_s_job_is_finished_by_another` came from a consumer
    /// registered only by the first heartbeat round, after the producers started).
    #[tokio::test]
    async fn a_connected_consumer_is_reaped_if_it_dies_before_any_upkeep() {
        let redis = redis();
        let queue = Queue::new(redis.clone(), QueueName::Canary);
        let (_stop_tx, stop) = watch::channel(false);
        let ttl = Duration::from_millis(300);
        let mut consumer = connect_consumer(&queue, "doomed", ttl, stop)
            .await
            .expect("connected");
        queue.push(&["job-1"]).await.expect("push");
        let fetched = consumer.fetch(1).await.expect("fetch");
        assert_eq!(fetched, vec!["job-1".to_owned()]);
        // The worker dies here: no release, no further heartbeat.
        drop(consumer);

        // Another worker's reaper, on its own handle, once the liveness key expired.
        let reaper = Queue::new(redis.clone(), QueueName::Canary);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut reaped = 0;
        while reaped == 0 {
            assert!(
                Instant::now() < deadline,
                "the dead consumer's id was never reaped: it was not registered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            reaped = reaper.reap().await.expect("reap");
        }
        assert_eq!(reaped, 1);
        let mut other = reaper
            .consumer("survivor", Duration::from_millis(100))
            .await
            .expect("consumer");
        assert_eq!(
            other.fetch(1).await.expect("fetch"),
            vec!["job-1".to_owned()]
        );
    }
}
