//! PostgreSQL: the connection pool and the embedded migrations. Repositories for each
//! table live in submodules as later features add tables.

pub mod audit;
pub mod idempotency;
pub mod job_failures;
pub mod jobs;
pub mod operations;
pub mod quotas;
pub mod recovery_codes;
pub mod requests;
pub mod schedules;
pub mod send_caps;
pub mod sending_limits;
pub mod sessions;
pub mod suppressions;
pub mod templates;
pub mod uploads;
pub mod users;
pub mod webhooks;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::Config;

/// Ends an operator's listing: after the `(created_at, id)` cursor of the previous page,
/// newest first, `limit` rows (the filters before it are the caller's).
pub(crate) fn newest_first(
    query: &mut sqlx::QueryBuilder<sqlx::Postgres>,
    after: Option<(time::OffsetDateTime, uuid::Uuid)>,
    limit: i64,
) {
    if let Some((at, id)) = after {
        query
            .push(" AND (created_at, id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    query
        .push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(limit);
}

/// Every migration under `migrations/`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// A lazily connecting pool: the process starts even while PostgreSQL is down, and
/// readiness reports it until it is back.
pub fn pool(config: &Config) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = config.database_url().parse()?;
    Ok(pool_options(config).connect_lazy_with(options.application_name("conveyor")))
}

/// The worker's pool: as [`pool`], with `synchronous_commit = off` on every connection
/// unless `WORKER_SYNCHRONOUS_COMMIT` is set. The worker's transactions are
/// bookkeeping of work it can redo: a claim or an outcome that a crash forgets leaves
/// the job queued or running with a stale heartbeat, and it runs again. Without the
/// flush a claim or a batch of outcomes commits in a fraction of the time (about +20%
/// jobs/s on the bench machine, where each commit's flush was a disk round trip).
///
/// Every statement is planned for its parameters (`plan_cache_mode =
/// force_custom_plan`): the worker's statements run on tables that grow from a few rows
/// to hundreds of thousands in seconds (a campaign's jobs), and a generic plan cached
/// while `jobs` was small (a sequential scan joined to a sequential scan) took minutes
/// per claim once it was not — seen in `bench/email-fairness`, where the idle phase's
/// claims cached the plan and the campaign's first claim never finished.
pub fn worker_pool(config: &Config) -> Result<PgPool, sqlx::Error> {
    let mut options: PgConnectOptions = config.database_url().parse()?;
    options = options.options([("plan_cache_mode", "force_custom_plan")]);
    if !config.database.worker_synchronous_commit {
        options = options.options([("synchronous_commit", "off")]);
    }
    Ok(pool_options(config).connect_lazy_with(options.application_name("conveyor-worker")))
}

/// The pool settings every Conveyor process uses (tests reuse them).
pub fn pool_options(config: &Config) -> PgPoolOptions {
    let database = &config.database;
    PgPoolOptions::new()
        .max_connections(database.max_connections)
        .min_connections(database.min_connections.min(database.max_connections))
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Some(Duration::from_secs(300)))
}

/// Opens the pool's `min_connections` (`DATABASE_MIN_CONNECTIONS`) in the background:
/// a lazy pool opens them only on demand, so without this the first requests and jobs
/// pay a connection's setup on their path. A server that cannot be reached yet is left
/// to the pool's own connecting on demand; the pool keeps them open from then on.
pub fn warm(pool: &PgPool) -> tokio::task::JoinHandle<()> {
    let pool = pool.clone();
    tokio::spawn(async move {
        let wanted = pool.options().get_min_connections();
        let held = futures::future::join_all((0..wanted).map(|_| pool.acquire())).await;
        let opened = held.iter().filter(|conn| conn.is_ok()).count();
        tracing::debug!(opened, wanted, "database pool warmed");
    })
}

/// Whether `err` is a unique violation of the constraint or index `name`.
pub fn is_unique_violation(err: &sqlx::Error, name: &str) -> bool {
    match err {
        sqlx::Error::Database(db) => db.is_unique_violation() && db.constraint() == Some(name),
        _ => false,
    }
}

/// Applies every pending migration; applied ones are skipped, so this is idempotent.
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}
