//! `schedules`: the periodic jobs the workers' scheduler enqueues, as operators see
//! and pause them.
//!
//! | transition | what |
//! | --- | --- |
//! | [`register`] | a worker's schedule recorded (its first tick), or its definition updated |
//! | [`lock_due`] + [`ticked`] | a due tick taken (rows locked, `SKIP LOCKED`) and moved past now with its job, in one transaction |
//! | [`set_paused`] | an operator pauses or resumes one |

use serde::Serialize;
use sqlx::{FromRow, PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::queue::QueueName;

#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct ScheduleRow {
    pub name: String,
    #[schema(value_type = String)]
    pub queue: QueueName,
    /// `every 300s`, or `cron <expression>` evaluated in `time_zone`.
    pub every: String,
    pub time_zone: String,
    pub paused: bool,
    /// Who paused it (`admin:<user id>` or `cli:<operator>`).
    pub paused_by: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub next_run_at: OffsetDateTime,
    /// The tick last enqueued.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_run_at: Option<OffsetDateTime>,
    /// Its job (see `GET /admin/jobs/{id}`).
    pub last_job_id: Option<Uuid>,
    /// Ticks skipped because they passed while nothing could run them (run once, not
    /// once per missed tick).
    pub missed: i64,
}

macro_rules! columns {
    () => {
        "name, queue, every, time_zone, paused, paused_by, next_run_at, last_run_at, last_job_id, missed"
    };
}

/// Records a schedule a worker runs, due first at `first_tick`; a schedule whose
/// definition changed (another interval or expression) is due at `first_tick` from
/// now on, otherwise its next tick and pause stay as they are.
pub async fn register(
    db: impl PgExecutor<'_>,
    name: &str,
    queue: QueueName,
    every: &str,
    time_zone: &str,
    first_tick: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO schedules (name, queue, every, time_zone, next_run_at) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (name) DO UPDATE SET queue = EXCLUDED.queue, every = EXCLUDED.every, \
             time_zone = EXCLUDED.time_zone, next_run_at = EXCLUDED.next_run_at \
         WHERE (schedules.every, schedules.time_zone, schedules.queue) \
               IS DISTINCT FROM (EXCLUDED.every, EXCLUDED.time_zone, EXCLUDED.queue)",
    )
    .bind(name)
    .bind(queue)
    .bind(every)
    .bind(time_zone)
    .bind(first_tick)
    .execute(db)
    .await?;
    Ok(())
}

/// Of `names`, the schedules due now and not paused, locked until the caller's
/// transaction ends (rows another worker holds are skipped: it is ticking them).
pub async fn lock_due(
    db: &mut PgConnection,
    names: &[&str],
) -> Result<Vec<ScheduleRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM schedules WHERE name = ANY($1) AND NOT paused AND next_run_at <= now() \
         ORDER BY next_run_at FOR UPDATE SKIP LOCKED"
    ))
    .bind(names)
    .fetch_all(db)
    .await
}

/// The tick `tick` of `name` was enqueued as `job` (with `missed` earlier ticks
/// skipped); the next is `next`.
pub async fn ticked(
    db: &mut PgConnection,
    name: &str,
    tick: OffsetDateTime,
    job: Option<Uuid>,
    missed: i64,
    next: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE schedules SET last_run_at = $2, last_job_id = coalesce($3, last_job_id), \
             missed = missed + $4, next_run_at = $5 WHERE name = $1",
    )
    .bind(name)
    .bind(tick)
    .bind(job)
    .bind(missed)
    .bind(next)
    .execute(db)
    .await?;
    Ok(())
}

/// Every schedule, by name.
pub async fn list(db: impl PgExecutor<'_>) -> Result<Vec<ScheduleRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM schedules ORDER BY name"
    ))
    .fetch_all(db)
    .await
}

/// Pauses (`Some(actor)`) or resumes (`None`) `name`; `None` if there is no such
/// schedule. A resumed schedule whose ticks passed meanwhile runs once, at once.
pub async fn set_paused(
    db: impl PgExecutor<'_>,
    name: &str,
    paused_by: Option<&str>,
) -> Result<Option<ScheduleRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE schedules SET paused = $2 IS NOT NULL, paused_by = $2 WHERE name = $1 RETURNING ",
        columns!()
    ))
    .bind(name)
    .bind(paused_by)
    .fetch_optional(db)
    .await
}
