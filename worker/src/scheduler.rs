//! The scheduler role: enqueues the registered periodic jobs once per tick across any
//! number of workers. Every worker runs it; each round takes the due schedules
//! `FOR UPDATE SKIP LOCKED` and, in one transaction, enqueues each one's job (through
//! the one enqueue path, with the tick in its unique key) and moves its next tick past
//! now — so two workers never enqueue the same tick, and a round that fails enqueues
//! nothing. Missed ticks follow the policy in `shared::jobs::schedule`: run once.
//! Operators see and pause the schedules (`db::schedules`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shared::Config;

use crate::signals::{Signal, Signals};
use shared::db::schedules;
use shared::jobs::schedule::{Every, tick_key};
use shared::jobs::{EnqueueError, Enqueued, NewJob};
use shared::redis::Redis;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

/// Ticks looked back over at most, per round, when counting missed ones.
const MAX_MISSED_COUNTED: i64 = 100_000;

/// One registered periodic job.
#[derive(Debug, Clone)]
struct Registered {
    name: String,
    every: Every,
    /// Each tick's job is a copy with its own id and the tick's unique key.
    job: NewJob,
}

/// What a round enqueued for one schedule (the scheduler's signal to tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticked {
    pub schedule: String,
    pub tick: OffsetDateTime,
    /// `None`: the tick's job existed already (it was enqueued before).
    pub job_id: Option<Uuid>,
    /// Earlier ticks skipped (missed while nothing ran them).
    pub missed: i64,
}

#[derive(Clone)]
pub struct Scheduler {
    pool: PgPool,
    redis: Redis,
    config: Arc<Config>,
    schedules: Vec<Registered>,
    registered: Arc<AtomicBool>,
    /// Where a tick that enqueued something is signalled (tests).
    pub signals: Signals,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.schedules.iter().map(|s| s.name.as_str()).collect();
        f.debug_struct("Scheduler")
            .field("schedules", &names)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// How often each worker looks for due ticks: a tick is enqueued within this.
    pub const INTERVAL: Duration = Duration::from_secs(1);

    pub fn new(config: Arc<Config>, pool: PgPool, redis: Redis) -> Self {
        Scheduler {
            pool,
            redis,
            config,
            schedules: Vec::new(),
            registered: Arc::default(),
            signals: Signals::default(),
        }
    }

    /// Adds (or replaces) the schedule `name`: `job` once per tick of `every`.
    pub fn schedule(&mut self, name: &str, every: Every, job: NewJob) {
        self.schedules.retain(|s| s.name != name);
        self.schedules.push(Registered {
            name: name.to_owned(),
            every,
            job,
        });
        self.registered.store(false, Ordering::Relaxed);
    }

    pub fn is_empty(&self) -> bool {
        self.schedules.is_empty()
    }

    /// Records the schedules (their first tick: the next after now), keeping the
    /// progress and pause of those already recorded with the same definition.
    pub async fn register(&self) -> Result<(), sqlx::Error> {
        let now = OffsetDateTime::now_utc();
        for s in &self.schedules {
            let first = s.every.next_after(now).unwrap_or_else(never);
            schedules::register(
                &self.pool,
                &s.name,
                s.job.queue,
                &s.every.text(),
                &s.every.zone(),
                first,
            )
            .await?;
        }
        self.registered.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// One round: enqueues the job of every due schedule, once, and returns what it
    /// did (tests call it directly instead of waiting for the role's interval).
    pub async fn tick(&self) -> Result<Vec<Ticked>, EnqueueError> {
        if self.schedules.is_empty() {
            return Ok(Vec::new());
        }
        if !self.registered.load(Ordering::Relaxed) {
            self.register().await?;
        }
        let names: Vec<&str> = self.schedules.iter().map(|s| s.name.as_str()).collect();
        let mut tx = self.pool.begin().await?;
        let due = schedules::lock_due(&mut tx, &names).await?;
        let now = OffsetDateTime::now_utc();
        let mut enqueued = Enqueued::default();
        let mut ticked = Vec::with_capacity(due.len());
        for row in due {
            let Some(s) = self.schedules.iter().find(|s| s.name == row.name) else {
                continue;
            };
            // The latest tick that has passed; the ones before it are missed.
            let (mut tick, mut missed) = (row.next_run_at, 0i64);
            while missed < MAX_MISSED_COUNTED {
                match s.every.next_after(tick) {
                    Some(next) if next <= now => {
                        tick = next;
                        missed += 1;
                    }
                    _ => break,
                }
            }
            let job = s
                .job
                .clone()
                .with_id(Uuid::now_v7())
                .unique(tick_key(&s.name, tick));
            let made = shared::jobs::enqueue_many(&mut tx, &self.config.queues, &[job]).await?;
            let job_id = made.ids().next();
            let next = s.every.next_after(now.max(tick)).unwrap_or_else(never);
            schedules::ticked(&mut tx, &s.name, tick, job_id, missed, next).await?;
            enqueued.merge(made);
            ticked.push(Ticked {
                schedule: s.name.clone(),
                tick,
                job_id,
                missed,
            });
        }
        tx.commit().await?;
        enqueued.dispatch(&self.pool, &self.redis).await;
        if !ticked.is_empty() {
            self.signals.send(|| Signal::Ticked(ticked.clone()));
        }
        for t in &ticked {
            if t.missed > 0 {
                tracing::info!(schedule = %t.schedule, missed = t.missed, "ran once for missed ticks");
            }
            tracing::debug!(schedule = %t.schedule, job = ?t.job_id, "periodic job enqueued");
        }
        Ok(ticked)
    }
}

/// A schedule that never ticks again (a cron expression with no future match) is due
/// at the end of time.
fn never() -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::days(365 * 1000)
}
