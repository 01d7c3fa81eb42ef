//! The one enqueue path: job rows inserted in the caller's transaction, and the
//! receipt that pushes their ids to Redis after the commit.
//!
//! Jobs are inserted stamped dispatched: [`Enqueued::dispatch`] pushes them right after
//! the caller's commit and clears the stamp (`jobs::undispatch`) if the push fails, so
//! the dispatcher takes them. Stamping here rather than after the push saves every
//! submission a second commit and every job a second row version; the price is paid
//! only if the process dies between its commit and its push: the reconciler then
//! re-pushes the jobs after the redelivery timeout.
//!
//! A job enqueued after others ([`NewJob::after`]) that have not all ended is inserted
//! `waiting` instead, undispatched, with its dependency rows; it is in the receipt's
//! [`Enqueued::ids`] but never pushed by it. Whatever ends the last job it waits for
//! queues it (`db::jobs::release_dependents`) and dispatches it with its own receipt
//! ([`Enqueued::released`]).

use std::collections::{HashMap, HashSet};

use sqlx::{Connection as _, PgConnection};
use time::OffsetDateTime;
use tracing::Instrument as _;
use uuid::Uuid;

use super::{Job, NewJob};
use crate::config::QueuesConfig;
use crate::db::jobs::{self, INSERT_CHUNK, Released};
use crate::db::requests::{NewRequest, RequestRow};
use crate::maintenance::dispatcher::push_committed_at;
use crate::queue::{Lane, QueueName};
use crate::redis::Redis;
use crate::telemetry::metric;

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("cannot encode the job's payload: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The statement every job row is inserted by. `req` is a CTE the caller puts first:
/// the request being inserted in the same statement, or just the id of an existing one
/// (or NULL). $1 ids, $2 payloads (JSON text), $3 unique keys, $4 queue, $5 attempts,
/// $6 the fair lane's owner, $7 the request id, $8 `run_after`, and the placeholders
/// given of the rows' trace contexts and of whether each waits for other jobs (then
/// `waiting` and not stamped dispatched, else `queued` and stamped). A row whose unique
/// key exists already is skipped; the statement returns the ids inserted.
macro_rules! insert_jobs {
    ($trace:literal, $waits:literal) => {
        concat!(
            "new_jobs AS ( \
             INSERT INTO jobs (id, request_id, queue, payload, max_attempts, status, dispatched_at, \
                               lane_owner, run_after, unique_key, trace_context) \
             SELECT t.id, req.id, $4, t.payload::jsonb, $5, \
                    CASE WHEN t.waits THEN 'waiting' ELSE 'queued' END, \
                    CASE WHEN t.waits THEN NULL ELSE now() END, $6, $8, t.unique_key, t.trace \
             FROM req CROSS JOIN UNNEST($1::uuid[], $2::text[], $3::text[], ",
            $trace,
            "::text[], ",
            $waits,
            "::bool[]) AS t(id, payload, unique_key, trace, waits) \
             ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING \
             RETURNING id)"
        )
    };
}

/// Jobs that share where and when they run: one statement per chunk of them.
#[derive(Debug, Clone)]
struct Group {
    queue: QueueName,
    request_id: Option<Uuid>,
    lane: Lane,
    run_after: Option<OffsetDateTime>,
    ids: Vec<Uuid>,
}

/// What an enqueue inserted. `#[must_use]`: hand it to [`Enqueued::dispatch`] once the
/// transaction has committed (a receipt dropped instead leaves the jobs to the
/// reconciler, after the redelivery timeout).
#[must_use = "dispatch the jobs after the commit"]
#[derive(Debug, Default, Clone)]
pub struct Enqueued {
    groups: Vec<Group>,
    /// Inserted `waiting` (for other jobs): never pushed from here.
    waiting: Vec<Uuid>,
}

impl Enqueued {
    /// Every job inserted, waiting ones included.
    pub fn ids(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.groups
            .iter()
            .flat_map(|g| g.ids.iter().copied())
            .chain(self.waiting.iter().copied())
    }

    pub fn len(&self) -> usize {
        self.groups.iter().map(|g| g.ids.len()).sum::<usize>() + self.waiting.len()
    }

    /// The jobs inserted `waiting`, which [`Enqueued::dispatch`] leaves alone.
    pub fn waiting(&self) -> &[Uuid] {
        &self.waiting
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Jobs an operator sent back to their queue (`db::jobs::requeue`), each to its
    /// lane and for its time, to dispatch after the commit like new ones.
    pub fn requeued(jobs: &[crate::db::jobs::Requeued]) -> Enqueued {
        Enqueued::of_rows(
            jobs,
            |job| job.id,
            |job| {
                (
                    job.queue,
                    job.request_id,
                    Lane::of(job.lane_owner),
                    job.run_after,
                )
            },
        )
    }

    /// Waiting jobs that the end of their last dependency queued
    /// (`db::jobs::release_dependents`), each to its lane and for its time, to
    /// dispatch after the commit like new ones.
    pub fn released(jobs: &[Released]) -> Enqueued {
        Enqueued::of_rows(
            jobs,
            |job| job.id,
            |job| {
                (
                    job.queue,
                    job.request_id,
                    Lane::of(job.lane_owner),
                    job.run_after,
                )
            },
        )
    }

    fn of_rows<T>(rows: &[T], id: impl Fn(&T) -> Uuid, key: impl Fn(&T) -> GroupKey) -> Enqueued {
        Enqueued {
            groups: group_by(rows, key)
                .into_iter()
                .map(|(mut group, members)| {
                    group.ids = members.into_iter().map(|i| id(&rows[i])).collect();
                    group
                })
                .collect(),
            waiting: Vec::new(),
        }
    }

    /// Adds another receipt's jobs to this one (one dispatch for both). A job waiting
    /// in one and released in the other is no longer waiting.
    pub fn merge(&mut self, other: Enqueued) {
        self.groups.extend(other.groups);
        self.waiting.extend(other.waiting);
        if !self.waiting.is_empty() {
            let queued: HashSet<Uuid> = self
                .groups
                .iter()
                .flat_map(|g| g.ids.iter().copied())
                .collect();
            self.waiting.retain(|id| !queued.contains(id));
        }
    }

    /// After the commit: counts the jobs and pushes their ids, each to its lane (or its
    /// queue's delayed set while its `run_after` is ahead). A failed push is left to
    /// the dispatcher; nothing is returned because nothing more can be done here.
    pub async fn dispatch(&self, pool: &sqlx::PgPool, redis: &Redis) {
        push_groups(&self.groups, pool, redis).await;
    }

    /// [`Enqueued::dispatch`] for receipts committed together (a group commit): jobs of
    /// the same queue, lane and start go out in one push whatever their request, so
    /// the batch costs Redis one round trip per lane, not one per receipt.
    pub async fn dispatch_together(receipts: &[Enqueued], pool: &sqlx::PgPool, redis: &Redis) {
        let mut index: HashMap<(QueueName, Lane, Option<OffsetDateTime>), usize> = HashMap::new();
        let mut groups: Vec<Group> = Vec::new();
        for group in receipts.iter().flat_map(|r| &r.groups) {
            let key = (group.queue, group.lane, group.run_after);
            let at = *index.entry(key).or_insert_with(|| {
                groups.push(Group {
                    queue: group.queue,
                    request_id: None,
                    lane: group.lane,
                    run_after: group.run_after,
                    ids: Vec::new(),
                });
                groups.len() - 1
            });
            groups[at].ids.extend_from_slice(&group.ids);
        }
        push_groups(&groups, pool, redis).await;
    }
}

/// Pushes each group's ids (after the commit), counting them per queue.
async fn push_groups(groups: &[Group], pool: &sqlx::PgPool, redis: &Redis) {
    for group in groups {
        if group.ids.is_empty() {
            continue;
        }
        metrics::counter!(metric::JOBS_ENQUEUED_TOTAL, "queue" => group.queue.as_str())
            .increment(group.ids.len() as u64);
        push_committed_at(
            pool,
            redis,
            group.queue,
            group.lane,
            &group.ids,
            group.run_after,
        )
        .await;
    }
}

/// One typed job, inserted in the caller's transaction.
pub async fn enqueue<J: Job>(
    conn: &mut PgConnection,
    queues: &QueuesConfig,
    job: &J,
) -> Result<Enqueued, EnqueueError> {
    enqueue_many(conn, queues, &[NewJob::of(job)?]).await
}

fn attempts(queues: &QueuesConfig, queue: QueueName) -> i32 {
    i32::try_from(queues.settings(queue).max_attempts).unwrap_or(i32::MAX)
}

/// Splits `jobs` into groups of the same queue, request, lane and start, in order of
/// first appearance, with each job's index.
fn grouped(jobs: &[NewJob]) -> Vec<(Group, Vec<usize>)> {
    group_by(jobs, |job| {
        (job.queue, job.request_id, job.lane, job.run_after)
    })
}

/// Where and when a group's jobs run: queue, request, lane, `run_after`.
type GroupKey = (QueueName, Option<Uuid>, Lane, Option<OffsetDateTime>);

/// `items` in groups of the same [`GroupKey`], in order of first appearance, each with
/// its members' indexes (the group's `ids` left empty).
fn group_by<T>(items: &[T], key: impl Fn(&T) -> GroupKey) -> Vec<(Group, Vec<usize>)> {
    let mut index: HashMap<GroupKey, usize> = HashMap::new();
    let mut groups: Vec<(Group, Vec<usize>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let (queue, request_id, lane, run_after) = key(item);
        let at = *index
            .entry((queue, request_id, lane, run_after))
            .or_insert_with(|| {
                groups.push((
                    Group {
                        queue,
                        request_id,
                        lane,
                        run_after,
                        ids: Vec::new(),
                    },
                    Vec::new(),
                ));
                groups.len() - 1
            });
        groups[at].1.push(i);
    }
    groups
}

/// Jobs inserted in the caller's transaction (a job whose unique key is taken is
/// skipped: it is not in the receipt). The request a job names must exist; its total
/// is the caller's (a follow-up joining a running request adds itself with
/// `requests::add_jobs`). A job with dependencies that have not all ended is inserted
/// `waiting` (see [`NewJob::depends_on`]); the others exactly as without them.
pub async fn enqueue_many(
    conn: &mut PgConnection,
    queues: &QueuesConfig,
    jobs: &[NewJob],
) -> Result<Enqueued, EnqueueError> {
    let waits = Waits::lock(&mut *conn, jobs).await?;
    let mut enqueued = Enqueued::default();
    for (mut group, members) in grouped(jobs) {
        for chunk in members.chunks(INSERT_CHUNK) {
            let rows: Vec<&NewJob> = chunk.iter().map(|&i| &jobs[i]).collect();
            let waiting: Vec<bool> = rows.iter().map(|job| waits.waits(job)).collect();
            let inserted = insert_chunk(&mut *conn, queues, &group, &rows, &waiting).await?;
            if waiting.contains(&true) {
                let waiting: HashSet<Uuid> = rows
                    .iter()
                    .zip(&waiting)
                    .filter(|(_, waits)| **waits)
                    .map(|(job, _)| job.id)
                    .collect();
                let (waiting, queued): (Vec<Uuid>, Vec<Uuid>) =
                    inserted.into_iter().partition(|id| waiting.contains(id));
                group.ids.extend(queued);
                enqueued.waiting.extend(waiting);
            } else {
                group.ids.extend(inserted);
            }
        }
        enqueued.groups.push(group);
    }
    if !enqueued.waiting.is_empty() {
        let released = waits.record(&mut *conn, jobs, &enqueued).await?;
        enqueued.merge(Enqueued::released(&released));
    }
    Ok(enqueued)
}

/// The dependencies of the jobs of one enqueue that have not ended: the ones already
/// in the database, locked `FOR SHARE` by [`jobs::lock_unfinished`] before anything
/// is inserted, and the jobs of the same enqueue that others in it depend on.
#[derive(Debug, Default)]
struct Waits {
    unfinished: HashSet<Uuid>,
    /// Jobs of this enqueue that others of it wait for.
    own: HashSet<Uuid>,
}

impl Waits {
    async fn lock(conn: &mut PgConnection, jobs: &[NewJob]) -> Result<Waits, sqlx::Error> {
        if jobs.iter().all(|job| job.depends_on.is_empty()) {
            return Ok(Waits::default());
        }
        let ids: HashSet<Uuid> = jobs.iter().map(|job| job.id).collect();
        let named: HashSet<Uuid> = jobs
            .iter()
            .flat_map(|job| job.depends_on.iter().filter(move |d| **d != job.id))
            .copied()
            .collect();
        let own: HashSet<Uuid> = named.iter().filter(|d| ids.contains(d)).copied().collect();
        let mut elsewhere: Vec<Uuid> = named.into_iter().filter(|d| !ids.contains(d)).collect();
        elsewhere.sort_unstable();
        let unfinished = jobs::lock_unfinished(conn, &elsewhere)
            .await?
            .into_iter()
            .collect();
        Ok(Waits { unfinished, own })
    }

    /// The jobs `job` must wait for.
    fn of<'a>(&'a self, job: &'a NewJob) -> impl Iterator<Item = Uuid> + 'a {
        job.depends_on
            .iter()
            .copied()
            .filter(move |d| *d != job.id && (self.unfinished.contains(d) || self.own.contains(d)))
    }

    fn waits(&self, job: &NewJob) -> bool {
        self.of(job).next().is_some()
    }

    /// Writes the dependency rows of the jobs `enqueued` inserted waiting. A job of
    /// this enqueue that others wait for but that was not inserted (its unique key was
    /// taken) is nothing to wait for: the jobs left waiting for nothing else are
    /// released at once (returned, to dispatch).
    async fn record(
        &self,
        conn: &mut PgConnection,
        jobs: &[NewJob],
        enqueued: &Enqueued,
    ) -> Result<Vec<Released>, sqlx::Error> {
        let waiting: HashSet<Uuid> = enqueued.waiting.iter().copied().collect();
        let pairs: Vec<(Uuid, Uuid)> = jobs
            .iter()
            .filter(|job| waiting.contains(&job.id))
            .flat_map(|job| self.of(job).map(move |d| (job.id, d)))
            .collect();
        jobs::add_dependencies(&mut *conn, &pairs).await?;
        let inserted: HashSet<Uuid> = enqueued.ids().collect();
        let skipped: Vec<Uuid> = self
            .own
            .iter()
            .filter(|id| !inserted.contains(id))
            .copied()
            .collect();
        jobs::release_dependents(conn, &skipped).await
    }
}

async fn insert_chunk(
    conn: &mut PgConnection,
    queues: &QueuesConfig,
    group: &Group,
    rows: &[&NewJob],
    waiting: &[bool],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let payloads: Vec<&str> = rows.iter().map(|r| r.payload.as_str()).collect();
    let unique: Vec<Option<&str>> = rows.iter().map(|r| r.unique_key.as_deref()).collect();
    let (span, traces) = publish(group.queue, rows);
    sqlx::query_scalar(concat!(
        "WITH req AS (SELECT $7::uuid AS id), ",
        insert_jobs!("$9", "$10"),
        " SELECT id FROM new_jobs"
    ))
    .bind(&ids)
    .bind(&payloads)
    .bind(&unique)
    .bind(group.queue)
    .bind(attempts(queues, group.queue))
    .bind(group.lane.owner())
    .bind(group.request_id)
    .bind(group.run_after)
    .bind(&traces)
    .bind(waiting)
    .fetch_all(conn)
    .instrument(span.in_scope(|| insert_span("jobs")))
    .instrument(span)
    .await
}

/// The producer span of an enqueue (OpenTelemetry's messaging conventions: `send` to
/// the queue), one per statement, and each row's trace context: its own, else the
/// enqueue's span (`None` when tracing is off). An enqueue outside any span (the
/// completer inserting follow-ups) joins the trace of the first row that has one,
/// instead of starting a trace of its own.
fn publish(queue: QueueName, rows: &[&NewJob]) -> (tracing::Span, Vec<Option<String>>) {
    let make = || {
        tracing::info_span!(
            target: "conveyor_trace",
            "publish",
            otel.name = %format_args!("send {}", queue.as_str()),
            otel.kind = "producer",
            messaging.system = "conveyor",
            messaging.operation.type = "send",
            messaging.destination.name = queue.as_str(),
            messaging.batch.message_count = rows.len(),
        )
    };
    let first = rows.iter().find_map(|r| r.trace_context.as_deref());
    let joined = first.filter(|_| crate::otel::on() && tracing::Span::current().is_none());
    let span = match joined {
        Some(first) => {
            let span = crate::otel::root_span(Some(first), make);
            crate::otel::set_parent(&span, first);
            span
        }
        None => make(),
    };
    // The enqueue's span, or (in a trace the sampler left out, where trace-only spans
    // are not made) the caller's: its jobs stay out of the trace too.
    let own = crate::otel::traceparent_of(&span).or_else(crate::otel::current_traceparent);
    let traces = rows
        .iter()
        .map(|r| match r.trace_context.as_deref() {
            // In the trace the enqueue joined: a child of the enqueue, as any job.
            Some(context) if Some(context) == joined => own.clone(),
            Some(context) => Some(context.to_owned()),
            None => own.clone(),
        })
        .collect();
    (span, traces)
}

/// The database statement of an enqueue (a child of its producer span).
fn insert_span(table: &'static str) -> tracing::Span {
    tracing::info_span!(
        target: "conveyor_trace",
        "db",
        otel.name = %format_args!("INSERT {table}"),
        otel.kind = "client",
        db.system.name = "postgresql",
        db.operation.name = "INSERT",
        db.collection.name = table,
    )
}

/// A request and its jobs, atomically: the request row and the first
/// [`INSERT_CHUNK`] jobs in one statement, so outside a transaction this is a single
/// autocommit round trip (the hot path of `POST /emails`); a larger request runs in a
/// transaction (a savepoint inside the caller's). Every job is counted on the request
/// and waits for its `send_at`, whatever the `NewJob` said.
pub async fn enqueue_with_request(
    conn: &mut PgConnection,
    queues: &QueuesConfig,
    new: &NewRequest<'_>,
    jobs: Vec<NewJob>,
) -> Result<(RequestRow, Enqueued), EnqueueError> {
    let jobs: Vec<NewJob> = jobs
        .into_iter()
        .map(|job| job.for_request(new.id).run_after(new.send_at))
        .collect();
    if jobs.iter().any(|job| !job.depends_on.is_empty()) {
        // The request alone, then its jobs through `enqueue_many`, which decides which
        // of them wait.
        let mut tx = conn.begin().await?;
        let (row, _) = insert_request_with(&mut tx, queues, new, &[]).await?;
        let enqueued = enqueue_many(&mut tx, queues, &jobs).await?;
        tx.commit().await?;
        return Ok((row, enqueued));
    }
    let first_group_len = jobs
        .iter()
        .take_while(|j| j.queue == jobs[0].queue && j.lane == jobs[0].lane)
        .count();
    if jobs.is_empty() || (first_group_len == jobs.len() && jobs.len() <= INSERT_CHUNK) {
        let (row, ids) = insert_request_with(conn, queues, new, &jobs).await?;
        let groups = jobs.first().map(|first| Group {
            queue: first.queue,
            request_id: Some(new.id),
            lane: first.lane,
            run_after: new.send_at,
            ids,
        });
        return Ok((
            row,
            Enqueued {
                groups: groups.into_iter().collect(),
                waiting: Vec::new(),
            },
        ));
    }
    let mut tx = conn.begin().await?;
    let head = first_group_len.min(INSERT_CHUNK);
    let (row, ids) = insert_request_with(&mut tx, queues, new, &jobs[..head]).await?;
    let mut enqueued = Enqueued {
        groups: vec![Group {
            queue: jobs[0].queue,
            request_id: Some(new.id),
            lane: jobs[0].lane,
            run_after: new.send_at,
            ids,
        }],
        waiting: Vec::new(),
    };
    enqueued.merge(enqueue_many(&mut tx, queues, &jobs[head..]).await?);
    tx.commit().await?;
    Ok((row, enqueued))
}

/// One request of a batch for [`enqueue_requests`], traced in `span` (its submission's).
#[derive(Debug)]
pub struct BatchedRequest<'a> {
    pub new: NewRequest<'a>,
    pub jobs: Vec<NewJob>,
    pub span: tracing::Span,
}

impl BatchedRequest<'_> {
    /// Whether [`enqueue_requests`] takes it: its jobs are of one queue and lane, none
    /// waits for others, and they fit a chunk.
    pub fn fits(jobs: &[NewJob]) -> bool {
        jobs.len() <= INSERT_CHUNK
            && jobs.iter().all(|job| {
                job.depends_on.is_empty() && job.queue == jobs[0].queue && job.lane == jobs[0].lane
            })
    }
}

/// Requests and their jobs in one statement: a group commit's batch, where a lone
/// [`enqueue_with_request`] per request would cost PostgreSQL a statement each (its
/// start, plan and constraint checks are most of an insert's cost). Each request must
/// [`BatchedRequest::fits`], and `batch` together at most [`INSERT_CHUNK`] jobs; each
/// keeps its own trace: its jobs' publish span is a child of its `span`. Every job is
/// counted on its request and waits for the request's `send_at`.
pub async fn enqueue_requests(
    conn: &mut PgConnection,
    queues: &QueuesConfig,
    batch: Vec<BatchedRequest<'_>>,
) -> Result<Vec<(RequestRow, Enqueued)>, EnqueueError> {
    let total_jobs: usize = batch.iter().map(|r| r.jobs.len()).sum();
    if total_jobs > INSERT_CHUNK || !batch.iter().all(|r| BatchedRequest::fits(&r.jobs)) {
        return Err(EnqueueError::Database(sqlx::Error::Protocol(
            "a batch of requests must fit one statement".into(),
        )));
    }
    let n = batch.len();
    let mut requests = RequestColumns::with_capacity(n);
    let mut jobs = JobColumns::with_capacity(total_jobs);
    // Kept open until the insert ends, so each covers it, as a lone enqueue's does.
    let mut spans = Vec::with_capacity(n);
    let mut shapes = Vec::with_capacity(n);
    for request in batch {
        let new = &request.new;
        let rows: Vec<NewJob> = request
            .jobs
            .into_iter()
            .map(|job| job.for_request(new.id).run_after(new.send_at))
            .collect();
        let (queue, lane) = rows
            .first()
            .map_or((QueueName::Canary, Lane::Priority), |j| (j.queue, j.lane));
        let (submitted, (span, traces)) = request.span.in_scope(|| {
            let refs: Vec<&NewJob> = rows.iter().collect();
            (crate::otel::current_traceparent(), publish(queue, &refs))
        });
        requests.push(new, submitted)?;
        for (job, trace) in rows.into_iter().zip(traces) {
            jobs.push(job, attempts(queues, queue), trace);
        }
        shapes.push((new.id, queue, lane, new.send_at));
        spans.push(span);
    }
    // One statement for all: its span goes under the first request's publish span.
    let db_span = spans.first().map_or_else(
        || insert_span("requests"),
        |first: &tracing::Span| first.in_scope(|| insert_span("requests")),
    );
    let found: Vec<BatchRow> = sqlx::query_as(concat!(
        "WITH req AS ( \
             INSERT INTO requests (id, owner_id, kind, name, correlation_id, content, total, \
                                   send_at, callback_url, trace_context) \
             SELECT id, owner_id, kind, name, correlation_id, content::jsonb, total, send_at, \
                    callback_url, trace_context \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], \
                         $7::int4[], $8::timestamptz[], $9::text[], $10::text[]) \
                  AS r(id, owner_id, kind, name, correlation_id, content, total, send_at, \
                       callback_url, trace_context) \
             RETURNING ",
        crate::db::requests::columns!(),
        "), new_jobs AS ( \
             INSERT INTO jobs (id, request_id, queue, payload, max_attempts, status, dispatched_at, \
                               lane_owner, run_after, unique_key, trace_context) \
             SELECT t.id, t.request_id, t.queue, t.payload::jsonb, t.max_attempts, 'queued', now(), \
                    t.lane_owner, t.run_after, t.unique_key, t.trace \
             FROM UNNEST($11::uuid[], $12::uuid[], $13::text[], $14::text[], $15::int4[], \
                         $16::uuid[], $17::timestamptz[], $18::text[], $19::text[]) \
                  AS t(id, request_id, queue, payload, max_attempts, lane_owner, run_after, \
                       unique_key, trace) \
             ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING \
             RETURNING id, request_id) \
         SELECT ",
        crate::db::requests::columns!(),
        ", coalesce((SELECT array_agg(n.id ORDER BY n.id) FROM new_jobs n \
                     WHERE n.request_id = req.id), '{}') AS job_ids \
         FROM req"
    ))
    .bind(&requests.id)
    .bind(&requests.owner_id)
    .bind(&requests.kind)
    .bind(&requests.name)
    .bind(&requests.correlation_id)
    .bind(&requests.content)
    .bind(&requests.total)
    .bind(&requests.send_at)
    .bind(&requests.callback_url)
    .bind(&requests.trace_context)
    .bind(&jobs.id)
    .bind(&jobs.request_id)
    .bind(&jobs.queue)
    .bind(&jobs.payload)
    .bind(&jobs.max_attempts)
    .bind(&jobs.lane_owner)
    .bind(&jobs.run_after)
    .bind(&jobs.unique_key)
    .bind(&jobs.trace)
    .fetch_all(conn)
    .instrument(db_span)
    .await?;
    drop(spans);
    let mut by_id: HashMap<Uuid, BatchRow> = found.into_iter().map(|r| (r.row.id, r)).collect();
    let mut out = Vec::with_capacity(n);
    for (id, queue, lane, run_after) in shapes {
        let Some(found) = by_id.remove(&id) else {
            return Err(EnqueueError::Database(sqlx::Error::RowNotFound));
        };
        let groups = (!found.job_ids.is_empty()).then_some(Group {
            queue,
            request_id: Some(id),
            lane,
            run_after,
            ids: found.job_ids,
        });
        out.push((
            found.row,
            Enqueued {
                groups: groups.into_iter().collect(),
                waiting: Vec::new(),
            },
        ));
    }
    Ok(out)
}

#[derive(sqlx::FromRow)]
struct BatchRow {
    #[sqlx(flatten)]
    row: RequestRow,
    job_ids: Vec<Uuid>,
}

/// A batch's requests as columns, for `UNNEST`.
struct RequestColumns {
    id: Vec<Uuid>,
    owner_id: Vec<Uuid>,
    kind: Vec<&'static str>,
    name: Vec<Option<String>>,
    correlation_id: Vec<Option<String>>,
    content: Vec<Option<String>>,
    total: Vec<i32>,
    send_at: Vec<Option<OffsetDateTime>>,
    callback_url: Vec<Option<String>>,
    trace_context: Vec<Option<String>>,
}

impl RequestColumns {
    fn with_capacity(n: usize) -> Self {
        RequestColumns {
            id: Vec::with_capacity(n),
            owner_id: Vec::with_capacity(n),
            kind: Vec::with_capacity(n),
            name: Vec::with_capacity(n),
            correlation_id: Vec::with_capacity(n),
            content: Vec::with_capacity(n),
            total: Vec::with_capacity(n),
            send_at: Vec::with_capacity(n),
            callback_url: Vec::with_capacity(n),
            trace_context: Vec::with_capacity(n),
        }
    }

    fn push(
        &mut self,
        new: &NewRequest<'_>,
        submitted: Option<String>,
    ) -> Result<(), serde_json::Error> {
        self.id.push(new.id);
        self.owner_id.push(new.owner_id);
        self.kind.push(new.kind.as_str());
        self.name.push(new.name.map(str::to_owned));
        self.correlation_id
            .push(new.correlation_id.map(str::to_owned));
        self.content.push(
            new.content
                .as_ref()
                .map(serde_json::to_string)
                .transpose()?,
        );
        self.total.push(new.total);
        self.send_at.push(new.send_at);
        self.callback_url.push(new.callback_url.map(str::to_owned));
        self.trace_context.push(submitted);
        Ok(())
    }
}

/// A batch's jobs as columns, for `UNNEST`.
struct JobColumns {
    id: Vec<Uuid>,
    request_id: Vec<Option<Uuid>>,
    queue: Vec<&'static str>,
    payload: Vec<String>,
    max_attempts: Vec<i32>,
    lane_owner: Vec<Option<Uuid>>,
    run_after: Vec<Option<OffsetDateTime>>,
    unique_key: Vec<Option<String>>,
    trace: Vec<Option<String>>,
}

impl JobColumns {
    fn with_capacity(n: usize) -> Self {
        JobColumns {
            id: Vec::with_capacity(n),
            request_id: Vec::with_capacity(n),
            queue: Vec::with_capacity(n),
            payload: Vec::with_capacity(n),
            max_attempts: Vec::with_capacity(n),
            lane_owner: Vec::with_capacity(n),
            run_after: Vec::with_capacity(n),
            unique_key: Vec::with_capacity(n),
            trace: Vec::with_capacity(n),
        }
    }

    /// Takes the job: its payload and key move into the columns, uncopied.
    fn push(&mut self, job: NewJob, max_attempts: i32, trace: Option<String>) {
        self.id.push(job.id);
        self.request_id.push(job.request_id);
        self.queue.push(job.queue.as_str());
        self.max_attempts.push(max_attempts);
        self.lane_owner.push(job.lane.owner());
        self.run_after.push(job.run_after);
        self.unique_key.push(job.unique_key);
        self.payload.push(job.payload.into_string());
        self.trace.push(trace);
    }
}

/// The request and `jobs` (one queue and lane, at most a chunk, none waiting) in one
/// statement.
async fn insert_request_with(
    conn: &mut PgConnection,
    queues: &QueuesConfig,
    new: &NewRequest<'_>,
    jobs: &[NewJob],
) -> Result<(RequestRow, Vec<Uuid>), sqlx::Error> {
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    let (queue, lane) = jobs
        .first()
        .map_or((QueueName::Canary, Lane::Priority), |j| (j.queue, j.lane));
    let unique: Vec<Option<&str>> = jobs.iter().map(|j| j.unique_key.as_deref()).collect();
    let payloads: Vec<&str> = jobs.iter().map(|j| j.payload.as_str()).collect();
    let waiting = vec![false; jobs.len()];
    // The request remembers the submission's trace (its webhook continues it).
    let submitted = crate::otel::current_traceparent();
    let rows: Vec<&NewJob> = jobs.iter().collect();
    let (span, traces) = publish(queue, &rows);
    let row = sqlx::query_as(concat!(
        "WITH req AS ( \
             INSERT INTO requests (id, owner_id, kind, name, correlation_id, content, total, \
                                   send_at, callback_url, trace_context) \
             VALUES ($7, $9, $10, $11, $12, $13, $14, $8, $15, $16) \
             RETURNING ",
        crate::db::requests::columns!(),
        "), ",
        insert_jobs!("$17", "$18"),
        " SELECT ",
        crate::db::requests::columns!(),
        " FROM req"
    ))
    .bind(&ids)
    .bind(&payloads)
    .bind(&unique)
    .bind(queue)
    .bind(attempts(queues, queue))
    .bind(lane.owner())
    .bind(new.id)
    .bind(new.send_at)
    .bind(new.owner_id)
    .bind(new.kind)
    .bind(new.name)
    .bind(new.correlation_id)
    .bind(&new.content)
    .bind(new.total)
    .bind(new.callback_url)
    .bind(submitted)
    .bind(&traces)
    .bind(&waiting)
    .fetch_one(conn)
    .instrument(span.in_scope(|| insert_span("requests")))
    .instrument(span)
    .await?;
    Ok((row, ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(queue: QueueName, lane: Lane) -> NewJob {
        NewJob {
            id: Uuid::now_v7(),
            queue,
            payload: crate::db::jobs::Payload::empty(),
            request_id: None,
            lane,
            run_after: None,
            unique_key: None,
            trace_context: None,
            depends_on: Vec::new(),
        }
    }

    #[test]
    fn jobs_are_grouped_by_queue_and_lane_in_order_of_first_appearance() {
        let owner = Uuid::now_v7();
        let jobs = [
            job(QueueName::Emails, Lane::Priority),
            job(QueueName::Scans, Lane::Priority),
            job(QueueName::Emails, Lane::Fair(owner)),
            job(QueueName::Emails, Lane::Priority),
        ];
        let groups = grouped(&jobs);
        let shape: Vec<(QueueName, Lane, Vec<usize>)> = groups
            .into_iter()
            .map(|(g, members)| (g.queue, g.lane, members))
            .collect();
        assert_eq!(
            shape,
            vec![
                (QueueName::Emails, Lane::Priority, vec![0, 3]),
                (QueueName::Scans, Lane::Priority, vec![1]),
                (QueueName::Emails, Lane::Fair(owner), vec![2]),
            ]
        );
    }
}
