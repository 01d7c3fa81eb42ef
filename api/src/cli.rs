//! The operators' command line (`api jobs …`, `api queues …`, `api canary …`): the
//! admin API's actions for operators without a browser. It calls the same services
//! (`services::operations`) against DATABASE_URL and REDIS_URL and writes the same
//! audit rows, as `cli:<operator>` (the `OPERATOR` variable, else the Unix user).
//! Output is a text table, or JSON with `--json`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde::Serialize;
use shared::config::AuthConfig;
use shared::db::jobs::JobFilter;
use shared::domain::{EmailAddress, JobStatus, Role};
use shared::queue::QueueName;
use shared::redis::Redis;
use shared::{Config, db};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::ApiError;
use crate::routes::cursor;
use crate::services::accounts::EMAIL_INDEX;
use crate::services::operations::{
    self as ops, CanaryQueue, JobView, OperationView, Operator, QueueView, RetryableStatus,
};
use crate::state::AppState;

/// The operators' subcommands, flattened into the `api` command line.
#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// Jobs of every queue: list, show, retry, discard.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Queues: counts, live workers, pause and resume.
    #[command(subcommand)]
    Queues(QueuesCommand),
    /// Periodic jobs: last and next run, pause and resume.
    #[command(subcommand)]
    Schedules(SchedulesCommand),
    /// Send no-op canary jobs through the whole pipeline (canary queue only).
    Canary(CanaryArgs),
}

#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Every schedule: its interval or cron expression, last and next run, missed
    /// ticks, paused.
    List {
        #[command(flatten)]
        output: Output,
    },
    /// Pause a schedule: no worker enqueues its ticks until it is resumed.
    Pause {
        /// e.g. prune_retention.
        name: String,
        #[command(flatten)]
        output: Output,
    },
    /// Resume a schedule; ticks that passed meanwhile run once, at once.
    Resume {
        name: String,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Debug, Clone, Copy, Args)]
pub struct Output {
    /// Print JSON (as the admin API answers) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first (never their payloads).
    List {
        /// emails, uploads, scans or canary.
        #[arg(long)]
        queue: Option<QueueName>,
        /// queued, running, retrying, succeeded, dead or cancelled.
        #[arg(long)]
        status: Option<JobStatus>,
        /// Only the jobs of this request.
        #[arg(long)]
        request_id: Option<Uuid>,
        /// Only discarded jobs (`true`) or none of them (`false`).
        #[arg(long)]
        discarded: Option<bool>,
        /// Page size, 1 to 100.
        #[arg(long, default_value_t = cursor::DEFAULT_PAGE_SIZE)]
        limit: i64,
        /// The cursor a previous page printed.
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// One job, with its full last error.
    Show {
        #[arg(long)]
        id: Uuid,
        #[command(flatten)]
        output: Output,
    },
    /// Send a dead or cancelled job back to its queue (--id), or every dead or
    /// cancelled job of a queue (--queue and --status) in batches, printing progress.
    ///
    /// A bulk retry is an operation (GET /api/v1/admin/operations/{id}) run by the
    /// workers as a job of the `operations` queue; this command follows it, and
    /// stopping the command does not stop the operation.
    #[command(group(clap::ArgGroup::new("target").required(true).args(["id", "queue"])))]
    Retry {
        /// The job to retry.
        #[arg(long, conflicts_with_all = ["queue", "status"])]
        id: Option<Uuid>,
        /// The queue whose jobs to retry (with --status).
        #[arg(long, requires = "status")]
        queue: Option<QueueName>,
        /// dead or cancelled.
        #[arg(long, requires = "queue")]
        status: Option<RetryableStatus>,
        #[command(flatten)]
        output: Output,
    },
    /// Discard a dead job: kept for audit, never retried, counted apart from `dead`.
    Discard {
        #[arg(long)]
        id: Uuid,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
pub enum QueuesCommand {
    /// Every queue: queued, running, retrying, dead, discarded, succeeded in the last
    /// hour, oldest queued age, live workers, paused.
    List {
        #[command(flatten)]
        output: Output,
    },
    /// Pause a queue: workers stop taking its jobs within seconds; submissions wait.
    Pause {
        queue: QueueName,
        #[command(flatten)]
        output: Output,
    },
    /// Resume a paused queue.
    Resume {
        queue: QueueName,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Debug, Args)]
pub struct CanaryArgs {
    /// Canary jobs in the request, 1 to 10000.
    #[arg(long)]
    count: u32,
    /// The admin account that owns the request (default: the earliest admin).
    #[arg(long)]
    owner: Option<String>,
    /// Wait (up to this many seconds) for the request to finish and print its outcome.
    #[arg(long)]
    wait: Option<u64>,
    #[command(flatten)]
    output: Output,
}

/// Runs one operators' subcommand.
pub async fn run(
    config: Arc<Config>,
    auth: Arc<AuthConfig>,
    command: OpsCommand,
) -> anyhow::Result<()> {
    let pool = db::pool(&config)?;
    let redis = Redis::connect_lazy(&config)?;
    let state = AppState::new(config, auth, pool, redis)?;
    // One id per run, on its audit rows, as an HTTP request's x-request-id is.
    let run_id = Uuid::now_v7().to_string();
    let operator = Operator::cli(&operator_name(), Some(run_id));
    match command {
        OpsCommand::Jobs(command) => jobs(&state, &operator, command).await,
        OpsCommand::Queues(command) => queues(&state, &operator, command).await,
        OpsCommand::Schedules(command) => schedules(&state, &operator, command).await,
        OpsCommand::Canary(args) => canary(&state, &operator, args).await,
    }
    .map_err(|err| match err.downcast::<ApiError>() {
        Ok(api) => describe(api),
        Err(other) => other,
    })
}

/// An `ApiError` as one line for the terminal.
fn describe(err: ApiError) -> anyhow::Error {
    match err {
        ApiError::Unprocessable { detail, .. } | ApiError::Validation { detail, .. } => {
            anyhow::anyhow!("{detail}")
        }
        other => anyhow::anyhow!("{other}"),
    }
}

async fn jobs(state: &AppState, operator: &Operator, command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::List {
            queue,
            status,
            request_id,
            discarded,
            limit,
            cursor: position,
            output,
        } => {
            let limit = cursor::page_size(Some(limit))?;
            let after = position.as_deref().map(cursor::decode).transpose()?;
            let filter = JobFilter {
                queue,
                status,
                request_id,
                discarded,
                after,
                created_from: None,
                created_before: None,
                limit,
            };
            let (items, more) = ops::list_jobs(state, filter).await?;
            let next_cursor = more
                .then(|| {
                    items
                        .last()
                        .map(|job| cursor::encode(job.created_at, job.id))
                })
                .flatten();
            if output.json {
                print_json(&serde_json::json!({ "items": items, "next_cursor": next_cursor }))?;
            } else {
                print!("{}", jobs_table(&items));
                if let Some(next) = next_cursor {
                    println!("more: --cursor {next}");
                }
            }
        }
        JobsCommand::Show { id, output } => {
            let job = ops::job(state, id).await?;
            if output.json {
                print_json(&job)?;
            } else {
                print!("{}", job_detail(&job));
            }
        }
        JobsCommand::Retry {
            id: Some(id),
            output,
            ..
        } => {
            let job = ops::retry_job(state, operator, id).await?;
            if output.json {
                print_json(&job)?;
            } else {
                println!(
                    "job {} is {} in {} (attempt {} of {})",
                    job.id, job.status, job.queue, job.attempt, job.max_attempts
                );
            }
        }
        JobsCommand::Retry {
            queue: Some(queue),
            status: Some(status),
            output,
            ..
        } => bulk_retry(state, operator, queue, status, output).await?,
        JobsCommand::Retry { .. } => anyhow::bail!("give --id, or --queue with --status"),
        JobsCommand::Discard { id, output } => {
            let job = ops::discard_job(state, operator, id).await?;
            if output.json {
                print_json(&job)?;
            } else {
                println!("job {} is dead and discarded (kept for audit)", job.id);
            }
        }
    }
    Ok(())
}

async fn bulk_retry(
    state: &AppState,
    operator: &Operator,
    queue: QueueName,
    status: RetryableStatus,
    output: Output,
) -> anyhow::Result<()> {
    let started = ops::start_bulk_retry(state, operator, queue, status).await?;
    if !output.json {
        println!(
            "operation {}: {} {} job(s) of {queue} back to the queue, in batches of {}",
            started.id,
            started.total,
            JobStatus::from(status),
            ops::BATCH
        );
    }
    if !output.json {
        println!("  run by the workers (the `operations` queue); following its progress");
    }
    // Followed until it ends; Ctrl-C stops following, not the operation.
    let mut shown = None;
    let finished = loop {
        let view = ops::operation(state, started.id).await?;
        if !output.json && shown != Some(view.done) {
            println!("  {} of {} ({})", view.done, view.total, view.state);
            shown = Some(view.done);
        }
        if view.state != shared::db::operations::OperationState::Running {
            break view;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if output.json {
        print_json(&finished)?;
    } else {
        println!("{}", operation_line(&finished));
    }
    Ok(())
}

fn operation_line(view: &OperationView) -> String {
    match &view.error {
        Some(error) => format!("operation {} {}: {error}", view.id, view.state),
        None => format!(
            "operation {} {}: {} of {} job(s) back in {}",
            view.id, view.state, view.done, view.total, view.queue
        ),
    }
}

async fn queues(
    state: &AppState,
    operator: &Operator,
    command: QueuesCommand,
) -> anyhow::Result<()> {
    let (queue, paused, output) = match command {
        QueuesCommand::List { output } => {
            let list = ops::queues(state).await?;
            if output.json {
                print_json(&list)?;
            } else {
                print!("{}", queues_table(&list.queues));
            }
            return Ok(());
        }
        QueuesCommand::Pause { queue, output } => (queue, true, output),
        QueuesCommand::Resume { queue, output } => (queue, false, output),
    };
    let switch = ops::switch_queue(state, operator, queue, paused).await?;
    if output.json {
        print_json(&switch)?;
    } else {
        let now = if switch.paused { "paused" } else { "running" };
        let already = if switch.changed { "" } else { " (already)" };
        println!("queue {} is {now}{already}", switch.queue);
    }
    Ok(())
}

async fn schedules(
    state: &AppState,
    operator: &Operator,
    command: SchedulesCommand,
) -> anyhow::Result<()> {
    use crate::services::schedules as service;
    let (name, paused, output) = match command {
        SchedulesCommand::List { output } => {
            let list = service::list(state).await?;
            if output.json {
                print_json(&list)?;
            } else {
                print!("{}", schedules_table(&list.schedules));
            }
            return Ok(());
        }
        SchedulesCommand::Pause { name, output } => (name, true, output),
        SchedulesCommand::Resume { name, output } => (name, false, output),
    };
    let row = service::set_paused(state, operator, &name, paused).await?;
    if output.json {
        print_json(&row)?;
    } else {
        print!("{}", schedules_table(std::slice::from_ref(&row)));
    }
    Ok(())
}

fn schedules_table(rows: &[shared::db::schedules::ScheduleRow]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.queue.to_string(),
                format!("{} ({})", s.every, s.time_zone),
                time(s.last_run_at),
                time(Some(s.next_run_at)),
                s.missed.to_string(),
                if s.paused { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    table(
        &[
            "SCHEDULE", "QUEUE", "EVERY", "LAST RUN", "NEXT RUN", "MISSED", "PAUSED",
        ],
        &rows,
    )
}

async fn canary(state: &AppState, operator: &Operator, args: CanaryArgs) -> anyhow::Result<()> {
    let owner = match &args.owner {
        Some(email) => admin_by_email(state, email).await?,
        None => ops::default_owner(state).await?,
    };
    let accepted = ops::canary(state, operator, owner, CanaryQueue::Canary, args.count).await?;
    let Some(wait) = args.wait else {
        if args.output.json {
            print_json(&accepted)?;
        } else {
            println!(
                "request {}: {} canary job(s) queued; follow it at {}",
                accepted.id, accepted.total, accepted.location
            );
        }
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_secs(wait);
    let request = loop {
        let row = db::requests::find(&state.pool, accepted.id, None)
            .await?
            .ok_or_else(|| anyhow::anyhow!("request {} is gone", accepted.id))?;
        if row.finished_at.is_some() || Instant::now() >= deadline {
            break row;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if args.output.json {
        print_json(&request)?;
    } else {
        println!(
            "request {} {}: {} of {} succeeded, {} failed",
            request.id, request.status, request.succeeded, request.total, request.failed
        );
    }
    if request.finished_at.is_none() {
        anyhow::bail!("request {} did not finish within {wait} s", request.id);
    }
    Ok(())
}

async fn admin_by_email(state: &AppState, email: &str) -> anyhow::Result<Uuid> {
    let email = EmailAddress::parse(email)
        .map_err(|err| anyhow::anyhow!("--owner is not an email address: {err}"))?;
    let index = state
        .security
        .blind_index
        .index(EMAIL_INDEX, email.as_str());
    match db::users::find_by_email_index(&state.pool, &index).await? {
        Some(user) if user.role == Role::Admin.as_str() => Ok(user.id),
        Some(_) => anyhow::bail!("--owner must be an admin account"),
        None => anyhow::bail!("no account has that email address"),
    }
}

/// `OPERATOR`, else the name of the Unix user running this, else `USER`.
fn operator_name() -> String {
    let name = std::env::var("OPERATOR")
        .ok()
        .filter(|n| !n.trim().is_empty())
        .or_else(unix_user)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".to_owned());
    let clean: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
        .take(64)
        .collect();
    if clean.is_empty() {
        "unknown".to_owned()
    } else {
        clean
    }
}

/// The login name of this process's real user (Linux: /proc and /etc/passwd).
fn unix_user() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_owned();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)? == uid).then(|| name.to_owned())
    })
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn time(at: Option<OffsetDateTime>) -> String {
    at.and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
    .unwrap_or_else(|| "-".to_owned())
}

/// The first line of `text`, at most `max` characters.
fn short(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > max {
        let cut: String = line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        line.to_owned()
    }
}

/// Columns padded to their widest cell.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

fn jobs_table(jobs: &[JobView]) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
            let status = if job.discarded_at.is_some() {
                format!("{} (discarded)", job.status)
            } else {
                job.status.to_string()
            };
            vec![
                job.id.to_string(),
                job.queue.to_string(),
                status,
                format!("{}/{}", job.attempt, job.max_attempts),
                time(Some(job.created_at)),
                time(job.finished_at),
                short(job.last_error.as_deref().unwrap_or("-"), 60),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "QUEUE",
            "STATUS",
            "ATTEMPT",
            "CREATED",
            "FINISHED",
            "LAST ERROR",
        ],
        &rows,
    )
}

fn job_detail(job: &JobView) -> String {
    let rows = vec![
        vec!["id".to_owned(), job.id.to_string()],
        vec![
            "request".to_owned(),
            job.request_id
                .map_or_else(|| "-".to_owned(), |id| id.to_string()),
        ],
        vec!["queue".to_owned(), job.queue.to_string()],
        vec!["status".to_owned(), job.status.to_string()],
        vec![
            "attempt".to_owned(),
            format!("{} of {}", job.attempt, job.max_attempts),
        ],
        vec!["run after".to_owned(), time(job.run_after)],
        vec!["dispatched".to_owned(), time(job.dispatched_at)],
        vec!["created".to_owned(), time(Some(job.created_at))],
        vec!["started".to_owned(), time(job.started_at)],
        vec!["finished".to_owned(), time(job.finished_at)],
        vec![
            "discarded".to_owned(),
            match (&job.discarded_at, &job.discarded_by) {
                (Some(at), by) => {
                    format!("{} by {}", time(Some(*at)), by.as_deref().unwrap_or("?"))
                }
                (None, _) => "-".to_owned(),
            },
        ],
        vec![
            "last error".to_owned(),
            job.last_error.clone().unwrap_or_else(|| "-".to_owned()),
        ],
    ];
    table(&["FIELD", "VALUE"], &rows)
}

fn queues_table(queues: &[QueueView]) -> String {
    let unknown = || "?".to_owned();
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            vec![
                q.queue.to_string(),
                q.queued.to_string(),
                q.running.to_string(),
                q.retrying.to_string(),
                q.dead.to_string(),
                q.discarded.to_string(),
                q.succeeded_last_hour.to_string(),
                q.oldest_queued_age_seconds
                    .map_or_else(|| "-".to_owned(), |s| format!("{s}s")),
                q.workers_alive.map_or_else(unknown, |n| n.to_string()),
                q.paused
                    .map_or_else(unknown, |p| if p { "yes" } else { "no" }.to_owned()),
            ]
        })
        .collect();
    table(
        &[
            "QUEUE",
            "QUEUED",
            "RUNNING",
            "RETRYING",
            "DEAD",
            "DISCARDED",
            "SUCCEEDED/1H",
            "OLDEST",
            "WORKERS",
            "PAUSED",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns_to_their_widest_cell() {
        let out = table(
            &["A", "BB"],
            &[
                vec!["long cell".to_owned(), "x".to_owned()],
                vec!["y".to_owned(), "z".to_owned()],
            ],
        );
        assert_eq!(out, "A          BB\nlong cell  x\ny          z\n");
    }

    #[test]
    fn errors_are_cut_to_their_first_line() {
        assert_eq!(short("550 no such user\nmore", 60), "550 no such user");
        assert_eq!(short("abcdef", 4), "abc…");
    }
}
