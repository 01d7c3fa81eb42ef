//! `jobs`: the outbox and the record of every unit of work. This module is the one
//! place a job's status changes: each transition is a named function, a
//! compare-and-set (`UPDATE … WHERE status …`), batched where the worker calls it
//! (`WHERE id = ANY($1)`, one round trip per batch). Status literals in the SQL below
//! are [`JobStatus`] values (a unit test checks each one parses).
//!
//! Statements given the ids in hand check a status as `(status …) IS TRUE`: it filters
//! the rows found by primary key and can never be the path to them. Whatever the
//! statistics say — a backlog enqueued after the last ANALYZE is estimated at one row,
//! and a claim planned from the status index read the whole backlog for each batch of
//! ids (quadratic drain) — these plans stay on `jobs_pkey` (`shared/tests/plans.rs`).
//!
//! | transition | from | to |
//! | --- | --- | --- |
//! | `jobs::enqueue_many`, `jobs::enqueue_with_request` (the one enqueue path) | — | queued, or waiting (after jobs not yet ended) |
//! | [`release_dependents`] | waiting, the last job it waited for ended | queued |
//! | [`claim`], [`claim_starting`] | queued, retrying (due: `run_after` passed), running with a stale heartbeat | running |
//! | [`hand_back`] | running (this worker's) | queued |
//! | [`succeed`] | running | succeeded |
//! | [`schedule_retry`] | running, attempts left | retrying |
//! | [`bury`] | running | dead |
//! | [`defer`] | running | retrying, the attempt given back (a recipient domain's pace) |
//! | [`suppress`] | running | suppressed (every recipient on the sender's suppression list) |
//! | [`cancel_pending`] | waiting, queued, retrying | cancelled (and the jobs waiting for them released) |
//! | [`requeue`], [`requeue_batch`] | dead (not discarded), cancelled | queued (an operator's retry) |
//! | [`discard`] | dead | dead, discarded (an operator's; kept for audit) |
//!
//! Dependencies (`job_dependencies`, one row per job a `waiting` job waits for) are
//! written in the same transactions: [`add_dependencies`] at the enqueue, after
//! [`lock_unfinished`]; [`transfer_dependents`] when a success inserts follow-ups;
//! [`release_dependents`] when jobs end (the completer; [`cancel_pending`] itself).

use sqlx::{FromRow, PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::JobStatus;
use crate::queue::{Lane, QueueName};

/// A job's payload, serialized once as JSON text: a request of 100,000 jobs holds
/// 100,000 short strings rather than as many `serde_json::Value` trees (about five
/// times the memory). Stored as `jsonb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload(Box<str>);

impl Payload {
    pub fn of<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<Payload> {
        Ok(Payload(serde_json::to_string(value)?.into_boxed_str()))
    }

    /// `{}`: the payload of a job that needs none (canaries).
    pub fn empty() -> Payload {
        Payload("{}".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The JSON text, without a copy.
    pub fn into_string(self) -> String {
        self.0.into_string()
    }
}

/// Rows per `INSERT … SELECT FROM UNNEST` statement.
pub const INSERT_CHUNK: usize = 5000;

/// Records that the ids were pushed to Redis (not a status change).
pub async fn mark_dispatched(db: impl PgExecutor<'_>, ids: &[Uuid]) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("UPDATE jobs SET dispatched_at = now() WHERE id = ANY($1)")
        .bind(ids)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

/// [`undispatch`]'s statement (public for the plan test).
pub const UNDISPATCH: &str =
    "UPDATE jobs SET dispatched_at = NULL WHERE id = ANY($1) AND (status = 'queued') IS TRUE";

/// Clears the dispatched stamp of queued jobs whose push to Redis failed, so the
/// dispatcher pushes them on its next round.
pub async fn undispatch(db: impl PgExecutor<'_>, ids: &[Uuid]) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(UNDISPATCH).bind(ids).execute(db).await?;
    Ok(done.rows_affected())
}

/// A job a worker has claimed.
#[derive(Debug, Clone, FromRow)]
pub struct ClaimedJob {
    pub id: Uuid,
    /// The request it carries out; `None` for work of its own (a webhook delivery).
    pub request_id: Option<Uuid>,
    pub queue: QueueName,
    pub payload: serde_json::Value,
    /// This attempt, 1-based.
    pub attempt: i32,
    pub max_attempts: i32,
    /// When the job became runnable, the start of its queue latency: its retry's due
    /// time (`run_after`), else its creation — whoever re-queues a job (an operator's
    /// retry) sets `run_after` to say when. For a running job reclaimed from a dead
    /// worker, when its heartbeat went stale.
    pub runnable_at: OffsetDateTime,
    /// The owner whose fair lane the job travels in; `None`: the priority lane.
    pub lane_owner: Option<Uuid>,
    /// When the job was enqueued: the start of its queue's retry lifetime.
    pub created_at: OffsetDateTime,
    /// The `traceparent` of the span that enqueued it (`None` when tracing was off).
    pub trace_context: Option<String>,
}

impl ClaimedJob {
    /// The lane a retry of this job goes back to.
    pub fn lane(&self) -> Lane {
        Lane::of(self.lane_owner)
    }
}

/// What a claim did: the jobs it took, and the requests whose first job this was (they
/// moved `queued → running` in the same statement).
#[derive(Debug, Default)]
pub struct Claim {
    pub jobs: Vec<ClaimedJob>,
    pub started_requests: Vec<Uuid>,
}

#[derive(FromRow)]
struct ClaimRow {
    #[sqlx(flatten)]
    job: ClaimedJob,
    request_started: bool,
}

/// queued | retrying | stale running → running, for `worker`. Ids not returned were
/// finished or cancelled, or are running under a live heartbeat: a duplicate delivery,
/// to be acknowledged as a no-op; or not claimable yet (a scheduled send or a retry
/// pushed early; a job whose worker may have died, its heartbeat not stale yet), for
/// [`not_yet_claimable`]. See [`claim_starting`].
pub async fn claim(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
    worker: &str,
    stale_before: OffsetDateTime,
) -> Result<Vec<ClaimedJob>, sqlx::Error> {
    Ok(claim_starting(db, ids, worker, stale_before).await?.jobs)
}

/// [`claim_starting`]'s statement (public for the plan test).
pub const CLAIM: &str = "WITH claimed AS ( \
             UPDATE jobs j SET status = 'running', attempt = j.attempt + 1, claimed_by = $2, \
                 started_at = now(), heartbeat_at = now(), run_after = NULL \
             FROM (SELECT id, CASE WHEN status = 'running' THEN heartbeat_at + (now() - $3) \
                                   ELSE coalesce(run_after, created_at) END AS runnable_at \
                   FROM jobs WHERE id = ANY($1)) AS before \
             WHERE j.id = before.id \
               AND (((j.status IN ('queued', 'retrying')) IS TRUE \
                         AND (j.run_after IS NULL OR j.run_after <= now())) \
                    OR ((j.status = 'running') IS TRUE AND j.heartbeat_at < $3)) \
             RETURNING j.id, j.request_id, j.queue, j.payload, j.attempt, j.max_attempts, \
                 before.runnable_at, j.lane_owner, j.created_at, j.trace_context), \
         started AS ( \
             UPDATE requests r SET status = 'running' \
             WHERE r.id IN (SELECT request_id FROM claimed) AND (r.status = 'queued') IS TRUE \
             RETURNING r.id) \
         SELECT c.*, c.request_id IN (SELECT id FROM started) AS request_started FROM claimed c";

/// [`claim`], and in the same statement (one round trip, one commit) the claimed jobs'
/// requests still `queued` become `running`: the one place a request starts.
pub async fn claim_starting(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
    worker: &str,
    stale_before: OffsetDateTime,
) -> Result<Claim, sqlx::Error> {
    // `before` reads the row as the statement found it: the update clears `run_after`,
    // and PostgreSQL 15 has no `RETURNING old.…`.
    let rows: Vec<ClaimRow> = sqlx::query_as(CLAIM)
        .bind(ids)
        .bind(worker)
        .bind(stale_before)
        .fetch_all(db)
        .await?;
    let mut claim = Claim {
        jobs: Vec::with_capacity(rows.len()),
        started_requests: Vec::new(),
    };
    for row in rows {
        if let Some(request) = row.job.request_id
            && row.request_started
            && !claim.started_requests.contains(&request)
        {
            claim.started_requests.push(request);
        }
        claim.jobs.push(row.job);
    }
    Ok(claim)
}

/// A job delivered before it can be claimed, and when it can.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct NotYetDue {
    pub id: Uuid,
    pub run_after: OffsetDateTime,
    pub lane_owner: Option<Uuid>,
}

/// [`not_yet_claimable`]'s statement (public for the plan test).
pub const NOT_YET_CLAIMABLE: &str = "SELECT id, \
         CASE WHEN status = 'running' THEN heartbeat_at + (now() - $2) ELSE run_after END \
             AS run_after, lane_owner \
     FROM jobs WHERE id = ANY($1) \
       AND (((status IN ('queued', 'retrying')) IS TRUE AND run_after > now()) \
            OR ((status = 'running') IS TRUE AND heartbeat_at >= $2))";

/// Of `ids` (ones a claim did not take), those that will be claimable later, and when:
/// queued or retrying jobs whose `run_after` is still ahead (delivered early: a stray
/// push, clocks apart), and running jobs whose heartbeat is not stale yet (`stale_before`
/// as for the claim) — given back by the reaper the moment their worker's consumer
/// expired, a little before their row's heartbeat is stale. Each is to be scheduled
/// again for its time rather than dropped: a killed worker's job runs again as soon
/// as its heartbeat is stale, not when the reconciler next looks.
pub async fn not_yet_claimable(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
    stale_before: OffsetDateTime,
) -> Result<Vec<NotYetDue>, sqlx::Error> {
    sqlx::query_as(NOT_YET_CLAIMABLE)
        .bind(ids)
        .bind(stale_before)
        .fetch_all(db)
        .await
}

/// [`heartbeat`]'s statement (public for the plan test). The ids' rows are found
/// through the primary key whatever the statistics say: `(status = …) IS TRUE` is a
/// condition no partial or status index can serve. Written `status = 'running'`, the
/// planner — whose last ANALYZE saw few running jobs — reads every running entry of
/// the status index and filters the ids (20,105 buffers for 50 ids among 20,000 running
/// jobs, against 1,134 through the primary key), and under a long-held snapshot that
/// range keeps every job that ran since: the outcome statements below slowed 18× in
/// five minutes of `scripts/bench`'s `held_snapshot` before they were written this way.
pub const HEARTBEAT: &str = "UPDATE jobs SET heartbeat_at = now() \
     WHERE id = ANY($1) AND (status = 'running') IS TRUE AND claimed_by = $2";

/// Keeps this worker's running jobs from looking abandoned.
pub async fn heartbeat(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
    worker: &str,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(HEARTBEAT)
        .bind(ids)
        .bind(worker)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

/// [`hand_back`]'s statement (public for the plan test; see [`HEARTBEAT`]).
pub const HAND_BACK: &str = "UPDATE jobs SET status = 'queued', attempt = greatest(attempt - 1, 0), \
         claimed_by = NULL, heartbeat_at = NULL, dispatched_at = NULL \
     WHERE id = ANY($1) AND (status = 'running') IS TRUE AND claimed_by = $2";

/// running (this worker's) → queued, the attempt not counted: jobs claimed but not
/// finished at shutdown, so another worker takes them at once instead of after the
/// heartbeat timeout. Cleared `dispatched_at` makes the dispatcher push them again.
pub async fn hand_back(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
    worker: &str,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(HAND_BACK)
        .bind(ids)
        .bind(worker)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

/// [`succeed`]'s statement (public for the plan test; see [`HEARTBEAT`]).
pub const SUCCEED: &str = "WITH done AS ( \
         UPDATE jobs SET status = 'succeeded', finished_at = now(), last_error = NULL \
         WHERE id = ANY($1) AND (status = 'running') IS TRUE RETURNING id, request_id), \
     counts AS (SELECT request_id, count(*) AS n FROM done GROUP BY request_id), \
     bumped AS (UPDATE requests r SET succeeded = r.succeeded + c.n FROM counts c \
                WHERE r.id = c.request_id RETURNING r.id) \
     SELECT id FROM done";

/// running → succeeded (a late duplicate changes nothing), counted on the requests.
/// Returns the ids that changed.
pub async fn succeed(db: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar(SUCCEED)
        .bind(ids)
        .fetch_all(&mut *db)
        .await
}

/// A failed attempt and what to do about it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub id: Uuid,
    pub error: String,
    /// `Some(t)`: retry at `t`; `None`: dead now (permanent, or attempts exhausted).
    pub retry_at: Option<OffsetDateTime>,
}

/// running → retrying with its due time, for failures that name one and have
/// attempts left, each failed attempt kept in `job_failures`. Returns the ids that
/// changed; the others are for [`bury`].
pub async fn schedule_retry(
    db: &mut PgConnection,
    failures: &[Failure],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let retries: Vec<&Failure> = failures.iter().filter(|f| f.retry_at.is_some()).collect();
    if retries.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = retries.iter().map(|f| f.id).collect();
    let errors: Vec<&str> = retries.iter().map(|f| f.error.as_str()).collect();
    let due: Vec<Option<OffsetDateTime>> = retries.iter().map(|f| f.retry_at).collect();
    sqlx::query_scalar(
        "WITH done AS ( \
             UPDATE jobs j SET status = 'retrying', run_after = f.retry_at, last_error = f.error, \
                 heartbeat_at = NULL, deferred_reason = NULL \
             FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[]) AS f(id, error, retry_at) \
             WHERE j.id = f.id AND (j.status = 'running') IS TRUE AND j.attempt < j.max_attempts \
             RETURNING j.id, j.queue, j.attempt, f.error, j.started_at), \
         history AS (INSERT INTO job_failures (job_id, queue, attempt, error, started_at, dead) \
             SELECT id, queue, attempt, error, started_at, false FROM done) \
         SELECT id FROM done",
    )
    .bind(&ids)
    .bind(&errors)
    .bind(&due)
    .fetch_all(&mut *db)
    .await
}

/// running → dead with its last error (kept in `job_failures` too), counted on the
/// requests. Returns the ids that changed.
pub async fn bury(db: &mut PgConnection, failures: &[&Failure]) -> Result<Vec<Uuid>, sqlx::Error> {
    if failures.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = failures.iter().map(|f| f.id).collect();
    let errors: Vec<&str> = failures.iter().map(|f| f.error.as_str()).collect();
    sqlx::query_scalar(
        "WITH done AS ( \
             UPDATE jobs j SET status = 'dead', finished_at = now(), last_error = f.error \
             FROM UNNEST($1::uuid[], $2::text[]) AS f(id, error) \
             WHERE j.id = f.id AND (j.status = 'running') IS TRUE \
             RETURNING j.id, j.request_id, j.queue, j.attempt, f.error, j.started_at), \
         history AS (INSERT INTO job_failures (job_id, queue, attempt, error, started_at, dead) \
             SELECT id, queue, attempt, error, started_at, true FROM done), \
         counts AS (SELECT request_id, count(*) AS n FROM done GROUP BY request_id), \
         bumped AS (UPDATE requests r SET failed = r.failed + c.n FROM counts c \
                    WHERE r.id = c.request_id RETURNING r.id) \
         SELECT id FROM done",
    )
    .bind(&ids)
    .bind(&errors)
    .fetch_all(&mut *db)
    .await
}

/// running → retrying at a time of the worker's choosing without spending the
/// attempt (the claim counted one; it is given back), the reason kept in
/// `deferred_reason` (cleared by a retry after a failure). Returns the ids that
/// changed.
pub async fn defer(db: &mut PgConnection, due: &[Deferral]) -> Result<Vec<Uuid>, sqlx::Error> {
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = due.iter().map(|d| d.id).collect();
    let at: Vec<OffsetDateTime> = due.iter().map(|d| d.at).collect();
    let reasons: Vec<&str> = due.iter().map(|d| d.reason.as_str()).collect();
    sqlx::query_scalar(
        "UPDATE jobs j SET status = 'retrying', run_after = d.at, deferred_reason = d.reason, \
             attempt = greatest(j.attempt - 1, 0), heartbeat_at = NULL \
         FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[]) AS d(id, at, reason) \
         WHERE j.id = d.id AND (j.status = 'running') IS TRUE RETURNING j.id",
    )
    .bind(&ids)
    .bind(&at)
    .bind(&reasons)
    .fetch_all(&mut *db)
    .await
}

/// The jobs of `requests` that have not ended, each locked `FOR SHARE` until the
/// caller's transaction ends: what a job that must follow the whole of those requests
/// (an email after its attachments' upload and scan) waits for. A locked job cannot
/// end before the caller commits (ending updates its row), so it releases the caller's
/// dependency rows then. A job that ends while this reads (its completer holding the
/// row) is waited for and then left out, but the follow-ups its completion made are
/// not in that statement's snapshot: the read is repeated until a pass finds nothing
/// new (usually the second).
pub async fn lock_unfinished_of_requests(
    db: &mut PgConnection,
    requests: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut locked: Vec<Uuid> = Vec::new();
    loop {
        let found: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE request_id = ANY($1) \
             AND (status <> ALL($2)) IS TRUE ORDER BY id FOR SHARE",
        )
        .bind(requests)
        .bind(&JobStatus::FINAL[..])
        .fetch_all(&mut *db)
        .await?;
        if found.iter().all(|id| locked.contains(id)) {
            return Ok(found);
        }
        locked = found;
    }
}

/// A request's jobs that wait by choice (deferred, not failed), by reason: how many
/// and the soonest they run. Reads the request's jobs (`jobs_request_idx`).
pub async fn deferred_by_reason(
    db: impl PgExecutor<'_>,
    request_id: Uuid,
) -> Result<Vec<(String, i64, OffsetDateTime)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT deferred_reason, count(*), min(run_after) FROM jobs \
         WHERE request_id = $1 AND status = 'retrying' AND deferred_reason IS NOT NULL \
         GROUP BY deferred_reason ORDER BY min(run_after), deferred_reason",
    )
    .bind(request_id)
    .fetch_all(db)
    .await
}

/// A job that waits, by choice, without spending its attempt: until when and why (a
/// send window, a daily cap, a domain's pace; kept in `deferred_reason` while it
/// waits, for the views that show what waits and why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deferral {
    pub id: Uuid,
    pub at: OffsetDateTime,
    pub reason: String,
}

/// [`suppress`]'s statement (public for the plan test; see [`HEARTBEAT`]).
pub const SUPPRESS: &str = "WITH done AS ( \
         UPDATE jobs SET status = 'suppressed', finished_at = now(), \
             last_error = 'every recipient is on the suppression list' \
         WHERE id = ANY($1) AND (status = 'running') IS TRUE RETURNING id, request_id), \
     counts AS (SELECT request_id, count(*) AS n FROM done GROUP BY request_id), \
     bumped AS (UPDATE requests r SET suppressed = r.suppressed + c.n FROM counts c \
                WHERE r.id = c.request_id RETURNING r.id) \
     SELECT id FROM done";

/// running → suppressed (nothing was sent: every recipient is on the sender's
/// suppression list), counted on the requests. Returns the ids that changed.
pub async fn suppress(db: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar(SUPPRESS)
        .bind(ids)
        .fetch_all(&mut *db)
        .await
}

/// waiting | queued | retrying → cancelled for a request's jobs that have not started,
/// counted on the request, and the jobs waiting for them released; returns how many
/// were cancelled. The released jobs are left undispatched (`dispatched_at` NULL): the
/// dispatcher pushes them on its next round, as the caller has no receipt to dispatch.
pub async fn cancel_pending(db: &mut PgConnection, request_id: Uuid) -> Result<i64, sqlx::Error> {
    let cancelled: Vec<Uuid> = sqlx::query_scalar(
        "WITH done AS ( \
             UPDATE jobs SET status = 'cancelled', finished_at = now() \
             WHERE request_id = $1 AND status IN ('waiting', 'queued', 'retrying') RETURNING id), \
         n AS (SELECT count(*) AS n FROM done), \
         bumped AS (UPDATE requests SET cancelled = cancelled + (SELECT n FROM n) WHERE id = $1 RETURNING id), \
         waits AS (DELETE FROM job_dependencies WHERE job_id IN (SELECT id FROM done)) \
         SELECT id FROM done",
    )
    .bind(request_id)
    .fetch_all(&mut *db)
    .await?;
    // A statement of its own, after the one that cancelled them: see `release`.
    release(db, &cancelled, false).await?;
    Ok(i64::try_from(cancelled.len()).unwrap_or(i64::MAX))
}

/// Of `ids`, the jobs that have not ended (not in [`JobStatus::FINAL`]), locked
/// `FOR SHARE` until the caller's transaction ends: a job enqueued after them waits
/// for exactly these ([`add_dependencies`]). The lock is what keeps the wait from
/// being missed: the statement that moves one of them to a final state waits for the
/// enqueue's commit, and the release after it sees the committed rows; one that ended
/// first is not returned (READ COMMITTED re-checks a locked row against its committed
/// version). Ids of no job are not returned: nothing to wait for.
pub async fn lock_unfinished(
    db: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar(
        "SELECT id FROM jobs WHERE id = ANY($1) AND (status <> ALL($2)) IS TRUE \
         ORDER BY id FOR SHARE",
    )
    .bind(ids)
    .bind(&JobStatus::FINAL[..])
    .fetch_all(db)
    .await
}

/// Records that each `(job, depends_on)` job waits for the other (jobs just inserted
/// `waiting`, each dependency locked by [`lock_unfinished`] or inserted in the same
/// transaction).
pub async fn add_dependencies(
    db: &mut PgConnection,
    pairs: &[(Uuid, Uuid)],
) -> Result<(), sqlx::Error> {
    if pairs.is_empty() {
        return Ok(());
    }
    let (jobs, dependencies): (Vec<Uuid>, Vec<Uuid>) = pairs.iter().copied().unzip();
    sqlx::query(
        "INSERT INTO job_dependencies (job_id, depends_on) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[]) ON CONFLICT DO NOTHING",
    )
    .bind(&jobs)
    .bind(&dependencies)
    .execute(db)
    .await?;
    Ok(())
}

/// The jobs waiting for a job that succeeded wait for its follow-ups instead: each
/// `(job, follow_up)` moves every wait on `job` to `follow_up` (a job inserted in the
/// same transaction), so a dependent waits for a job and everything it spawns (an
/// upload and its scan). Run after the statement that recorded the success, like the
/// release.
pub async fn transfer_dependents(
    db: &mut PgConnection,
    moves: &[(Uuid, Uuid)],
) -> Result<(), sqlx::Error> {
    if moves.is_empty() {
        return Ok(());
    }
    let (parents, follow_ups): (Vec<Uuid>, Vec<Uuid>) = moves.iter().copied().unzip();
    sqlx::query(
        "WITH moved AS ( \
             INSERT INTO job_dependencies (job_id, depends_on) \
             SELECT d.job_id, m.follow_up FROM job_dependencies d \
             JOIN UNNEST($1::uuid[], $2::uuid[]) AS m(parent, follow_up) ON d.depends_on = m.parent \
             ON CONFLICT DO NOTHING) \
         DELETE FROM job_dependencies WHERE depends_on = ANY($1)",
    )
    .bind(&parents)
    .bind(&follow_ups)
    .execute(db)
    .await?;
    Ok(())
}

/// A waiting job whose last dependency ended: queued now, to dispatch.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Released {
    pub id: Uuid,
    pub request_id: Option<Uuid>,
    pub queue: QueueName,
    pub lane_owner: Option<Uuid>,
    /// Now, or later if it was scheduled for later (a scheduled send).
    pub run_after: Option<OffsetDateTime>,
}

/// The jobs `finished` (each just moved to a final state in this transaction: a
/// success with no follow-up, a death, a suppression) no longer hold anyone up: their
/// dependency rows go, and each job waiting for nothing more becomes `queued`, stamped
/// dispatched like a new job — the caller dispatches the returned jobs after its
/// commit (`Enqueued::released`). A dead job releases its dependents too: whether a
/// failed dependency matters is their handler's to decide.
pub async fn release_dependents(
    db: &mut PgConnection,
    finished: &[Uuid],
) -> Result<Vec<Released>, sqlx::Error> {
    release(db, finished, true).await
}

/// [`release_dependents`]; `stamped: false` leaves the released jobs to the dispatcher.
///
/// It must run as statements of their own AFTER the statement that moved `finished`
/// to their final state, never as a CTE of it. Under READ COMMITTED that update waits
/// for an enqueue holding a dependency `FOR SHARE` ([`lock_unfinished`]) to commit,
/// and only a later statement's snapshot sees the dependency rows that enqueue
/// committed; a CTE of the update would read the snapshot taken before the wait and
/// leave such a dependent waiting forever. For the same reason the dependents are
/// locked by a first statement and counted by a second: two transactions ending a
/// dependent's last two dependencies at once are serialized on its row, and the
/// second then sees that the first deleted its row.
async fn release(
    db: &mut PgConnection,
    finished: &[Uuid],
    stamped: bool,
) -> Result<Vec<Released>, sqlx::Error> {
    if finished.is_empty() {
        return Ok(Vec::new());
    }
    let dependents: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM jobs \
         WHERE id IN (SELECT job_id FROM job_dependencies WHERE depends_on = ANY($1)) \
         ORDER BY id FOR NO KEY UPDATE",
    )
    .bind(finished)
    .fetch_all(&mut *db)
    .await?;
    if dependents.is_empty() {
        return Ok(Vec::new());
    }
    // The update's NOT EXISTS reads the rows the CTE deletes (one snapshot): it skips
    // them by their dependency instead.
    sqlx::query_as(
        "WITH gone AS (DELETE FROM job_dependencies WHERE depends_on = ANY($1)) \
         UPDATE jobs j SET status = 'queued', run_after = greatest(j.run_after, now()), \
             dispatched_at = CASE WHEN $3 THEN now() END \
         WHERE j.id = ANY($2) AND (j.status = 'waiting') IS TRUE \
           AND NOT EXISTS (SELECT 1 FROM job_dependencies d \
                           WHERE d.job_id = j.id AND d.depends_on <> ALL($1)) \
         RETURNING j.id, j.request_id, j.queue, j.lane_owner, j.run_after",
    )
    .bind(finished)
    .bind(&dependents)
    .bind(stamped)
    .fetch_all(db)
    .await
}

/// A job to push, where, and when it is due (`None`: now).
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ToPush {
    pub id: Uuid,
    pub queue: QueueName,
    pub lane_owner: Option<Uuid>,
    pub run_after: Option<OffsetDateTime>,
}

/// Jobs to push: committed but never dispatched. Locked (skipping rows another
/// replica holds) until the caller's transaction ends.
pub async fn lock_undispatched(
    db: &mut PgConnection,
    limit: i64,
) -> Result<Vec<ToPush>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, queue, lane_owner, run_after FROM jobs WHERE status = 'queued' AND dispatched_at IS NULL \
         ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}

/// How many jobs are committed but not yet pushed (the dispatcher's backlog).
pub async fn count_undispatched(db: impl PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE status = 'queued' AND dispatched_at IS NULL",
    )
    .fetch_one(db)
    .await
}

/// A job Redis seems to have lost.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct LostJob {
    pub id: Uuid,
    pub queue: QueueName,
    pub status: JobStatus,
    pub lane_owner: Option<Uuid>,
    pub run_after: Option<OffsetDateTime>,
}

impl From<LostJob> for ToPush {
    fn from(job: LostJob) -> ToPush {
        ToPush {
            id: job.id,
            queue: job.queue,
            lane_owner: job.lane_owner,
            run_after: job.run_after,
        }
    }
}

/// Jobs Redis seems to have lost: pushed but not claimed before `pushed_before` — a
/// scheduled job counts from its `run_after` instead when that is later (until then it
/// waits in the delayed set, not lost) —, retries due before `pushed_before`, and
/// running jobs whose heartbeat stopped before `silent_since`. Locked like
/// [`lock_undispatched`]. When Redis is known to have lost everything, `pushed_before`
/// far ahead takes every job it held.
pub async fn lock_lost(
    db: &mut PgConnection,
    pushed_before: OffsetDateTime,
    silent_since: OffsetDateTime,
    limit: i64,
) -> Result<Vec<LostJob>, sqlx::Error> {
    // Three statements: PostgreSQL refuses FOR UPDATE on a UNION.
    let mut lost: Vec<LostJob> = sqlx::query_as(
        "SELECT id, queue, status, lane_owner, run_after FROM jobs \
         WHERE status = 'queued' AND dispatched_at IS NOT NULL \
           AND greatest(dispatched_at, run_after) < $1 \
         ORDER BY greatest(dispatched_at, run_after) LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(pushed_before)
    .bind(limit)
    .fetch_all(&mut *db)
    .await?;
    lost.extend(
        sqlx::query_as::<_, LostJob>(
            "SELECT id, queue, status, lane_owner, run_after FROM jobs WHERE status = 'retrying' AND run_after < $1 \
             AND (dispatched_at IS NULL OR dispatched_at < $1) \
             ORDER BY run_after LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(pushed_before)
        .bind(limit)
        .fetch_all(&mut *db)
        .await?,
    );
    lost.extend(
        sqlx::query_as::<_, LostJob>(
            "SELECT id, queue, status, lane_owner, run_after FROM jobs WHERE status = 'running' AND heartbeat_at < $1 \
             AND (dispatched_at IS NULL OR dispatched_at < $1) \
             ORDER BY heartbeat_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(silent_since)
        .bind(limit)
        .fetch_all(&mut *db)
        .await?,
    );
    Ok(lost)
}

/// Deletes up to `limit` jobs of no request (webhook deliveries, operations, chores)
/// that finished before `before` — only the succeeded ones of `succeeded_of` when it
/// is given (the sample chore's every-5-second jobs are kept a day, not the retention
/// period). Returns how many.
pub async fn delete_unowned_finished_before(
    db: impl PgExecutor<'_>,
    before: OffsetDateTime,
    succeeded_of: Option<QueueName>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM jobs WHERE id IN ( \
             SELECT id FROM jobs WHERE request_id IS NULL AND finished_at < $1 \
                 AND ($2::text IS NULL OR (queue = $2 AND status = 'succeeded')) \
             ORDER BY finished_at LIMIT $3 FOR UPDATE SKIP LOCKED)",
    )
    .bind(before)
    .bind(succeeded_of)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Per-job detail of a request: counts by status and the latest error.
#[derive(Debug, Clone, FromRow)]
pub struct JobSummary {
    /// Not started: waiting for other jobs to end.
    pub waiting: i64,
    pub queued: i64,
    pub running: i64,
    pub retrying: i64,
    pub succeeded: i64,
    pub dead: i64,
    pub cancelled: i64,
    pub suppressed: i64,
    pub attempts: i64,
    pub last_error: Option<String>,
    /// When the soonest retry is due (a job `retrying`).
    pub next_attempt_at: Option<OffsetDateTime>,
}

pub async fn summary(db: impl PgExecutor<'_>, request_id: Uuid) -> Result<JobSummary, sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'waiting') AS waiting, \
                count(*) FILTER (WHERE status = 'queued') AS queued, \
                count(*) FILTER (WHERE status = 'running') AS running, \
                count(*) FILTER (WHERE status = 'retrying') AS retrying, \
                count(*) FILTER (WHERE status = 'succeeded') AS succeeded, \
                count(*) FILTER (WHERE status = 'dead') AS dead, \
                count(*) FILTER (WHERE status = 'cancelled') AS cancelled, \
                count(*) FILTER (WHERE status = 'suppressed') AS suppressed, \
                coalesce(sum(attempt), 0)::bigint AS attempts, \
                min(run_after) FILTER (WHERE status = 'retrying') AS next_attempt_at, \
                (SELECT last_error FROM jobs WHERE request_id = $1 AND last_error IS NOT NULL \
                 ORDER BY updated_at DESC LIMIT 1) AS last_error \
         FROM jobs WHERE request_id = $1",
    )
    .bind(request_id)
    .fetch_one(db)
    .await
}

/// Jobs not yet at an end: waiting for other jobs, queued, running or waiting to
/// retry.
pub async fn count_pending(db: impl PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE status IN ('waiting', 'queued', 'running', 'retrying')",
    )
    .fetch_one(db)
    .await
}

/// A job's payload (the console shows its fields that are not personal data).
pub async fn payload(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<serde_json::Value>, sqlx::Error> {
    sqlx::query_scalar("SELECT payload FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// A job's request and payload (reading a bounce report about it).
pub async fn payload_of(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<(Uuid, serde_json::Value)>, sqlx::Error> {
    sqlx::query_as("SELECT request_id, payload FROM jobs WHERE id = $1 AND request_id IS NOT NULL")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// One job's status (tests and diagnostics).
pub async fn status(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<JobStatus>, sqlx::Error> {
    sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// A job as operators see it: everything but the payload (it holds sealed PII).
#[derive(Debug, Clone, FromRow)]
pub struct JobRow {
    pub id: Uuid,
    pub request_id: Option<Uuid>,
    pub queue: QueueName,
    pub status: JobStatus,
    pub attempt: i32,
    pub max_attempts: i32,
    pub last_error: Option<String>,
    pub run_after: Option<OffsetDateTime>,
    pub dispatched_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
    pub discarded_at: Option<OffsetDateTime>,
    pub discarded_by: Option<String>,
}

macro_rules! job_columns {
    () => {
        "id, request_id, queue, status, attempt, max_attempts, last_error, run_after, \
         dispatched_at, created_at, started_at, finished_at, discarded_at, discarded_by"
    };
}

#[tracing::instrument(name = "db", target = "conveyor_trace", skip_all, fields(otel.name = "SELECT jobs", otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "jobs"))]
pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Filters and the keyset position of an operator's listing (newest first).
#[derive(Debug, Default, Clone)]
pub struct JobFilter {
    pub queue: Option<QueueName>,
    pub status: Option<JobStatus>,
    pub request_id: Option<Uuid>,
    /// `Some(true)`: discarded jobs only; `Some(false)`: none of them.
    pub discarded: Option<bool>,
    /// The `(created_at, id)` of the last row of the previous page (the page goes on
    /// after its id).
    pub after: Option<(OffsetDateTime, Uuid)>,
    /// Created at or after this moment (to the millisecond).
    pub created_from: Option<OffsetDateTime>,
    /// Created before this moment (to the millisecond).
    pub created_before: Option<OffsetDateTime>,
    pub limit: i64,
}

/// The smallest UUIDv7 of the millisecond `at`: a job's id is a UUIDv7 made when it
/// was created, so `id >= floor(t)` is "created at or after t", served by the same
/// index as the keyset (no `created_at` index needed).
pub fn v7_floor(at: OffsetDateTime) -> Uuid {
    let ms = u64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    bytes[6] = 0x70; // version 7
    bytes[8] = 0x80; // the RFC 9562 variant
    Uuid::from_bytes(bytes)
}

/// One page, keyset on `id` descending: ids are UUIDv7, so that is newest first, and
/// the primary key serves it (a separate `created_at` index cost every job transition
/// one more index insert, about a fifth of the worker's throughput). The statement
/// holds only the filters given, so each combination gets its own plan
/// (`jobs_status_id_idx`, `jobs_pkey`, `jobs_request_id_idx`) rather than one generic
/// plan for all.
pub async fn list(db: impl PgExecutor<'_>, filter: &JobFilter) -> Result<Vec<JobRow>, sqlx::Error> {
    let mut query = sqlx::QueryBuilder::<sqlx::Postgres>::new(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE true"
    ));
    if let Some(queue) = filter.queue {
        query.push(" AND queue = ").push_bind(queue);
    }
    if let Some(status) = filter.status {
        query.push(" AND status = ").push_bind(status);
    }
    if let Some(request_id) = filter.request_id {
        query.push(" AND request_id = ").push_bind(request_id);
    }
    match filter.discarded {
        Some(true) => query.push(" AND discarded_at IS NOT NULL"),
        Some(false) => query.push(" AND discarded_at IS NULL"),
        None => &mut query,
    };
    if let Some((_, id)) = filter.after {
        query.push(" AND id < ").push_bind(id);
    }
    if let Some(from) = filter.created_from {
        query.push(" AND id >= ").push_bind(v7_floor(from));
    }
    if let Some(before) = filter.created_before {
        query.push(" AND id < ").push_bind(v7_floor(before));
    }
    query
        .push(" ORDER BY id DESC LIMIT ")
        .push_bind(filter.limit);
    query.build_query_as().fetch_all(db).await
}

/// A queue's jobs by state, from PostgreSQL.
#[derive(Debug, Clone, FromRow)]
pub struct QueueCounts {
    pub queue: QueueName,
    /// Waiting for other jobs to end (not in Redis yet).
    pub waiting: i64,
    pub queued: i64,
    pub running: i64,
    pub retrying: i64,
    /// Dead and not discarded.
    pub dead: i64,
    pub discarded: i64,
    pub succeeded_last_hour: i64,
    /// When the oldest queued job became runnable: its `run_after` (a scheduled send's
    /// time, an operator's retry) if it has one, else its creation. Later than
    /// `counted_at` when every queued job is scheduled for later.
    pub oldest_queued_at: Option<OffsetDateTime>,
    /// PostgreSQL's clock when it counted (for ages).
    pub counted_at: OffsetDateTime,
}

/// Open jobs by queue (statuses that end: bounded by the backlog, not by history): the
/// counts and the oldest queued job's runnable time. A CTE of [`QUEUE_COUNTS`] and
/// [`SAMPLE_QUEUES`].
macro_rules! open_by_queue {
    () => {
        "open AS ( \
             SELECT queue, \
                    count(*) FILTER (WHERE status = 'waiting') AS waiting, \
                    count(*) FILTER (WHERE status = 'queued') AS queued, \
                    count(*) FILTER (WHERE status = 'running') AS running, \
                    count(*) FILTER (WHERE status = 'retrying') AS retrying, \
                    min(coalesce(run_after, created_at)) FILTER (WHERE status = 'queued') \
                        AS oldest_queued_at \
             FROM jobs WHERE status IN ('waiting', 'queued', 'running', 'retrying') \
             GROUP BY queue), \
         dead AS ( \
             SELECT queue, count(*) FILTER (WHERE discarded_at IS NULL) AS dead, \
                    count(*) FILTER (WHERE discarded_at IS NOT NULL) AS discarded \
             FROM jobs WHERE status = 'dead' GROUP BY queue)"
    };
}

/// [`queue_counts`]'s statement (public for the plan test). Kept dead jobs are counted
/// from their own partial index alone (`jobs_dead_idx`, an index-only scan: their heap
/// rows, scattered over a table of finished jobs, are never read), open jobs from the
/// status index, the last hour's successes from theirs.
pub const QUEUE_COUNTS: &str = concat!(
    "WITH ",
    open_by_queue!(),
    ", recent AS ( \
         SELECT queue, count(*) AS succeeded FROM jobs \
         WHERE status = 'succeeded' AND finished_at > now() - interval '1 hour' \
         GROUP BY queue) \
     SELECT coalesce(o.queue, d.queue, r.queue) AS queue, \
            coalesce(o.waiting, 0) AS waiting, coalesce(o.queued, 0) AS queued, \
            coalesce(o.running, 0) AS running, coalesce(o.retrying, 0) AS retrying, \
            coalesce(d.dead, 0) AS dead, coalesce(d.discarded, 0) AS discarded, \
            coalesce(r.succeeded, 0) AS succeeded_last_hour, o.oldest_queued_at, \
            now() AS counted_at \
     FROM open o FULL JOIN dead d ON d.queue = o.queue \
          FULL JOIN recent r ON r.queue = coalesce(o.queue, d.queue)"
);

/// Every queue's counts in one statement (see [`QUEUE_COUNTS`]), never the whole
/// table. Queues without such jobs have no row.
pub async fn queue_counts(db: impl PgExecutor<'_>) -> Result<Vec<QueueCounts>, sqlx::Error> {
    sqlx::query_as(QUEUE_COUNTS).fetch_all(db).await
}

/// A job an operator sent back to its queue, and the status it left.
#[derive(Debug, Clone, FromRow)]
pub struct Requeued {
    pub id: Uuid,
    pub request_id: Option<Uuid>,
    pub queue: QueueName,
    pub was: JobStatus,
    pub lane_owner: Option<Uuid>,
    /// When it may run: now, or its request's `send_at` if that is still ahead.
    pub run_after: Option<OffsetDateTime>,
}

/// The second half of [`requeue`] and [`requeue_batch`], after a `picked (id, status)`
/// CTE of locked rows: back to `queued` as if new (attempts reset; error, claim and
/// times cleared; `dispatched_at` NULL so the dispatcher pushes it if the caller's
/// push after the commit does not), and its request's `failed` or `cancelled` count
/// down by one. `run_after` becomes now, not NULL: no schedule, but the instant it
/// became runnable again, where [`claim`] starts its queue latency (else the job's
/// creation, maybe days ago) — or its request's `send_at` if that is still ahead (a
/// cancelled scheduled send goes back to its schedule, not out at once). The caller
/// reopens the requests (`requests::reopen`) in the same transaction and pushes the
/// jobs for their `run_after`.
macro_rules! requeue_picked {
    () => {
        "done AS ( \
             UPDATE jobs j SET status = 'queued', attempt = 0, last_error = NULL, \
                 run_after = greatest(now(), (SELECT r.send_at FROM requests r WHERE r.id = j.request_id)), \
                 dispatched_at = NULL, claimed_by = NULL, heartbeat_at = NULL, started_at = NULL, \
                 finished_at = NULL \
             FROM picked p WHERE j.id = p.id \
             RETURNING j.id, j.request_id, j.queue, p.status AS was, j.lane_owner, j.run_after), \
         counts AS ( \
             SELECT request_id, count(*) FILTER (WHERE was = 'dead') AS dead, \
                    count(*) FILTER (WHERE was = 'cancelled') AS cancelled \
             FROM done GROUP BY request_id), \
         bumped AS ( \
             UPDATE requests r SET failed = r.failed - c.dead, cancelled = r.cancelled - c.cancelled \
             FROM counts c WHERE r.id = c.request_id RETURNING r.id) \
         SELECT id, request_id, queue, was, lane_owner, run_after FROM done"
    };
}

/// dead (not discarded) | cancelled → queued, for one job; `None` if it is in another
/// state (or discarded, or gone).
pub async fn requeue(db: &mut PgConnection, id: Uuid) -> Result<Option<Requeued>, sqlx::Error> {
    sqlx::query_as(concat!(
        "WITH picked AS ( \
             SELECT id, status FROM jobs \
             WHERE id = $1 AND status IN ('dead', 'cancelled') AND discarded_at IS NULL \
             FOR UPDATE), ",
        requeue_picked!()
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Up to `limit` of `queue`'s jobs in `status` (dead or cancelled, not discarded) that
/// ended at or before `ended_before` → queued. Rows another transaction holds are
/// skipped (it is changing them). An empty result: none left.
pub async fn requeue_batch(
    db: &mut PgConnection,
    queue: QueueName,
    status: JobStatus,
    ended_before: OffsetDateTime,
    limit: i64,
) -> Result<Vec<Requeued>, sqlx::Error> {
    sqlx::query_as(concat!(
        "WITH picked AS ( \
             SELECT id, status FROM jobs \
             WHERE queue = $1 AND status = $2 AND status IN ('dead', 'cancelled') \
               AND discarded_at IS NULL AND finished_at <= $3 \
             LIMIT $4 FOR UPDATE SKIP LOCKED), ",
        requeue_picked!()
    ))
    .bind(queue)
    .bind(status)
    .bind(ended_before)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// dead → dead and discarded by `actor`: left out of retries and of the `dead` count,
/// kept for audit. `None` if it is not dead or already discarded.
pub async fn discard(
    db: impl PgExecutor<'_>,
    id: Uuid,
    actor: &str,
) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE jobs SET discarded_at = now(), discarded_by = $2 \
         WHERE id = $1 AND status = 'dead' AND discarded_at IS NULL RETURNING ",
        job_columns!()
    ))
    .bind(id)
    .bind(actor)
    .fetch_optional(db)
    .await
}

/// One queue's jobs by state, as the queue gauges show them.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct QueueSample {
    pub queue: QueueName,
    /// Waiting for other jobs to end.
    pub waiting: i64,
    pub queued: i64,
    pub running: i64,
    pub retrying: i64,
    /// Dead and not discarded.
    pub dead: i64,
    /// Seconds since the oldest queued job became runnable (its `run_after` if it has
    /// one, else its creation), by PostgreSQL's clock; negative when every queued job
    /// is scheduled for later.
    pub oldest_queued_secs: Option<f64>,
}

/// [`sample_queues`]'s statement (public for the plan test): [`QUEUE_COUNTS`] without
/// the successes.
pub const SAMPLE_QUEUES: &str = concat!(
    "WITH ",
    open_by_queue!(),
    " SELECT coalesce(o.queue, d.queue) AS queue, \
            coalesce(o.waiting, 0) AS waiting, coalesce(o.queued, 0) AS queued, \
            coalesce(o.running, 0) AS running, coalesce(o.retrying, 0) AS retrying, \
            coalesce(d.dead, 0) AS dead, \
            extract(epoch FROM now() - o.oldest_queued_at)::float8 AS oldest_queued_secs \
     FROM open o FULL JOIN dead d ON d.queue = o.queue"
);

/// Every queue's open and dead jobs, for the sampled gauges (no succeeded rows are
/// read, unlike [`queue_counts`]). Queues without such jobs have no row.
pub async fn sample_queues(db: impl PgExecutor<'_>) -> Result<Vec<QueueSample>, sqlx::Error> {
    sqlx::query_as(SAMPLE_QUEUES).fetch_all(db).await
}

#[cfg(test)]
pub(crate) mod tests {
    /// Finds the status literals of `source`'s SQL (an equality or an IN list after
    /// `column`) and parses each as `T`; returns how many it checked.
    pub(crate) fn literals_parse<T: std::str::FromStr>(source: &str, column: &str) -> usize
    where
        T::Err: std::fmt::Debug,
    {
        let mut checked = 0;
        for (i, _) in source.match_indices(&format!("{column} ")) {
            let rest = &source[i + column.len() + 1..];
            let literals = if let Some(rest) = rest
                .strip_prefix("= '")
                .or_else(|| rest.strip_prefix("<> '"))
            {
                rest.split('\'').take(1).collect::<Vec<_>>()
            } else if let Some(rest) = rest.strip_prefix("IN (") {
                let list = rest.split(')').next().unwrap_or_default();
                list.split(',')
                    .map(|l| l.trim().trim_matches('\''))
                    .collect()
            } else {
                continue;
            };
            for literal in literals {
                literal
                    .parse::<T>()
                    .unwrap_or_else(|err| panic!("`{literal}` in SQL: {err:?}"));
                checked += 1;
            }
        }
        checked
    }

    #[test]
    fn every_status_literal_in_the_sql_is_a_job_status() {
        let source = include_str!("jobs.rs");
        let sql = &source[..source.find("#[cfg(test)]").unwrap_or(source.len())];
        let checked = literals_parse::<crate::domain::JobStatus>(sql, "status");
        assert!(checked >= 15, "found only {checked} literals");
    }
}
