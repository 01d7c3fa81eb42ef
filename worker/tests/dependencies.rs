//! Jobs that wait for other jobs (`NewJob::after`), on the one runtime in process: a
//! dependent is inserted `waiting` (never pushed, never claimed) while a job it names
//! has not ended, follows that job's follow-ups, and is queued and dispatched by the
//! transaction that ends the last of them — a success, a death or a cancel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::app::{RunningWorker, TestApp, spawn_app_with, test_config};
use harness::eventually;
use shared::db::jobs;
use shared::db::requests::NewRequest;
use shared::domain::{JobStatus, RequestKind, RequestStatus, Role};
use shared::jobs::{CanaryJob, Enqueued, NewJob};
use shared::maintenance::dispatcher::Dispatcher;
use shared::queue::{Queue, QueueName};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;
use worker::handler::{Handler, Outcome};
use worker::runtime::Runtime;

const WAIT: Duration = Duration::from_secs(30);

/// What the test handler does with a job, by id (a canary's payload is empty).
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// Succeeds at once (every job without a plan).
    Succeed,
    /// Waits for a permit of the gate, then succeeds.
    Gated,
    /// Dead at once.
    Die,
    /// Succeeds, followed by this job (gated).
    Spawn(Uuid),
}

/// The canary queue's handler in these tests: each job does what its plan says, and
/// every run is counted.
#[derive(Clone)]
struct Steps {
    plans: Arc<Mutex<HashMap<Uuid, Plan>>>,
    runs: Arc<Mutex<HashMap<Uuid, u32>>>,
    /// Closed until the test opens it.
    gate: Arc<tokio::sync::Semaphore>,
}

impl Steps {
    fn new() -> Self {
        Steps {
            plans: Arc::default(),
            runs: Arc::default(),
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
        }
    }

    fn plan(&self, id: Uuid, plan: Plan) {
        self.plans.lock().expect("plans").insert(id, plan);
    }

    fn runs(&self, id: Uuid) -> u32 {
        self.runs
            .lock()
            .expect("runs")
            .get(&id)
            .copied()
            .unwrap_or(0)
    }

    fn open_gate(&self, permits: usize) {
        self.gate.add_permits(permits);
    }
}

impl Handler for Steps {
    type Job = CanaryJob;

    async fn handle(&self, job: &shared::db::jobs::ClaimedJob, _payload: CanaryJob) -> Outcome {
        *self.runs.lock().expect("runs").entry(job.id).or_default() += 1;
        let plan = self
            .plans
            .lock()
            .expect("plans")
            .get(&job.id)
            .copied()
            .unwrap_or(Plan::Succeed);
        match plan {
            Plan::Succeed => Outcome::Succeeded,
            Plan::Gated => {
                self.gate.acquire().await.expect("the gate").forget();
                Outcome::Succeeded
            }
            Plan::Die => Outcome::Dead("this dependency fails".into()),
            Plan::Spawn(child) => {
                self.plan(child, Plan::Gated);
                Outcome::SucceededWith(vec![canary().with_id(child)])
            }
        }
    }
}

struct Fixture {
    app: TestApp,
    steps: Steps,
}

async fn fixture(pool: PgPool) -> Fixture {
    let app = spawn_app_with(pool, test_config(&[("CANARY_TIMEOUT_SECS", "60")]), None).await;
    Fixture {
        app,
        steps: Steps::new(),
    }
}

fn canary() -> NewJob {
    NewJob::of(&CanaryJob {}).expect("encoded")
}

impl Fixture {
    fn pool(&self) -> &PgPool {
        &self.app.state.pool
    }

    /// A worker running the canary queue with the test handler.
    fn start_worker(&self) -> RunningWorker {
        let config = self.app.state.config.clone();
        let mut runtime = Runtime::new(
            config.clone(),
            self.app.state.pool.clone(),
            self.app.state.redis.clone(),
        );
        runtime.queue(self.steps.clone(), config.queues.canary);
        RunningWorker::start(runtime)
    }

    /// `jobs` enqueued in one transaction, committed, not dispatched yet.
    async fn enqueue_only(&self, jobs: &[NewJob]) -> Enqueued {
        let mut tx = self.pool().begin().await.expect("begin");
        let enqueued = shared::jobs::enqueue_many(&mut tx, &self.app.state.config.queues, jobs)
            .await
            .expect("enqueued");
        tx.commit().await.expect("commit");
        enqueued
    }

    /// `jobs` enqueued in one transaction and dispatched after the commit; returns
    /// the ones inserted waiting.
    async fn enqueue(&self, jobs: &[NewJob]) -> Vec<Uuid> {
        let enqueued = self.enqueue_only(jobs).await;
        enqueued
            .dispatch(&self.app.state.pool, &self.app.state.redis)
            .await;
        enqueued.waiting().to_vec()
    }

    async fn status(&self, id: Uuid) -> JobStatus {
        jobs::status(self.pool(), id)
            .await
            .expect("status")
            .expect("the job exists")
    }

    /// Waits (polling, with a deadline) until job `id` is `status`.
    async fn reaches(&self, id: Uuid, status: JobStatus) {
        let pool = self.pool().clone();
        eventually(WAIT, &format!("job {id} is {status}"), || {
            let pool = pool.clone();
            async move {
                let now = jobs::status(&pool, id).await.expect("status");
                (now == Some(status)).then_some(())
            }
        })
        .await;
    }

    /// The job's claim start and end, as PostgreSQL recorded them.
    async fn times(&self, id: Uuid) -> (Option<OffsetDateTime>, Option<OffsetDateTime>, i32) {
        sqlx::query_as("SELECT started_at, finished_at, attempt FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_one(self.pool())
            .await
            .expect("the job")
    }

    async fn dependency_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM job_dependencies")
            .fetch_one(self.pool())
            .await
            .expect("count")
    }

    /// Asserts that `later` was claimed only after `earlier` had ended.
    async fn ran_after(&self, later: Uuid, earlier: Uuid) {
        let (_, ended, _) = self.times(earlier).await;
        let (started, _, attempt) = self.times(later).await;
        let (ended, started) = (ended.expect("ended"), started.expect("started"));
        assert!(
            started >= ended,
            "claimed at {started}, before its dependency ended at {ended}"
        );
        assert_eq!(attempt, 1, "claimed once");
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_job_enqueued_after_an_unfinished_job_waits_then_runs_after_it(pool: PgPool) {
    let f = fixture(pool).await;
    let dependency = canary().id;
    f.steps.plan(dependency, Plan::Gated);
    let worker = f.start_worker();
    f.enqueue(&[canary().with_id(dependency)]).await;
    f.reaches(dependency, JobStatus::Running).await;

    let dependent = canary().after([dependency]);
    let waiting = f.enqueue(std::slice::from_ref(&dependent)).await;
    let dependent = dependent.id;
    assert_eq!(waiting, [dependent], "inserted waiting");
    assert_eq!(f.status(dependent).await, JobStatus::Waiting);
    assert_eq!(f.dependency_rows().await, 1);
    let (ready, delayed) = Queue::new(f.app.state.redis.clone(), QueueName::Canary)
        .depth()
        .await
        .expect("depth");
    assert_eq!(
        (ready, delayed),
        (0, 0),
        "nothing pushed for the waiting job"
    );
    let claimed = jobs::claim(
        f.pool(),
        &[dependent],
        "a-worker",
        OffsetDateTime::now_utc(),
    )
    .await
    .expect("claim");
    assert!(claimed.is_empty(), "a waiting job is not claimable");
    assert_eq!(f.steps.runs(dependent), 0);
    assert_eq!(f.status(dependent).await, JobStatus::Waiting);

    f.steps.open_gate(1);
    f.reaches(dependent, JobStatus::Succeeded).await;
    f.ran_after(dependent, dependency).await;
    assert_eq!(f.steps.runs(dependent), 1);
    assert_eq!(f.dependency_rows().await, 0);
    worker.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_dependent_waits_for_the_follow_ups_of_its_dependency(pool: PgPool) {
    let f = fixture(pool).await;
    let (upload, scan) = (canary(), Uuid::now_v7());
    f.steps.plan(upload.id, Plan::Spawn(scan));
    let dependent = canary().after([upload.id]);
    let enqueued = f.enqueue_only(&[upload.clone(), dependent.clone()]).await;
    assert_eq!(
        enqueued.waiting(),
        [dependent.id],
        "waits for a job of the same enqueue"
    );
    let worker = f.start_worker();
    enqueued
        .dispatch(&f.app.state.pool, &f.app.state.redis)
        .await;

    f.reaches(upload.id, JobStatus::Succeeded).await;
    f.reaches(scan, JobStatus::Running).await;
    assert_eq!(
        f.status(dependent.id).await,
        JobStatus::Waiting,
        "its dependency succeeded, but the scan it spawned has not ended"
    );
    let waits_for: Vec<Uuid> =
        sqlx::query_scalar("SELECT depends_on FROM job_dependencies WHERE job_id = $1")
            .bind(dependent.id)
            .fetch_all(f.pool())
            .await
            .expect("rows");
    assert_eq!(waits_for, [scan], "the wait moved to the follow-up");

    f.steps.open_gate(1);
    f.reaches(dependent.id, JobStatus::Succeeded).await;
    f.ran_after(dependent.id, scan).await;
    f.ran_after(dependent.id, upload.id).await;
    assert_eq!(f.dependency_rows().await, 0);
    worker.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_dependency_finished_before_the_enqueue_is_no_wait(pool: PgPool) {
    let f = fixture(pool).await;
    let worker = f.start_worker();
    let dependency = canary();
    f.enqueue(std::slice::from_ref(&dependency)).await;
    f.reaches(dependency.id, JobStatus::Succeeded).await;

    // A job that never existed is nothing to wait for either.
    let dependent = canary().after([dependency.id, Uuid::now_v7()]);
    let enqueued = f.enqueue_only(std::slice::from_ref(&dependent)).await;
    assert!(enqueued.waiting().is_empty());
    assert_eq!(enqueued.ids().collect::<Vec<_>>(), [dependent.id]);
    let (status, dispatched): (JobStatus, Option<OffsetDateTime>) =
        sqlx::query_as("SELECT status, dispatched_at FROM jobs WHERE id = $1")
            .bind(dependent.id)
            .fetch_one(f.pool())
            .await
            .expect("the job");
    assert_eq!(status, JobStatus::Queued);
    assert!(dispatched.is_some(), "stamped dispatched, as any new job");
    assert_eq!(f.dependency_rows().await, 0);
    enqueued
        .dispatch(&f.app.state.pool, &f.app.state.redis)
        .await;
    f.reaches(dependent.id, JobStatus::Succeeded).await;
    worker.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_dead_dependency_releases_its_dependent(pool: PgPool) {
    let f = fixture(pool).await;
    let (gate, dependency) = (canary(), canary());
    f.steps.plan(gate.id, Plan::Gated);
    f.steps.plan(dependency.id, Plan::Die);
    // The dependency dies once the dependent waits for it: it runs after the gate.
    let dependency = dependency.after([gate.id]);
    let dependent = canary().after([dependency.id]);
    let enqueued = f
        .enqueue_only(&[gate.clone(), dependency.clone(), dependent.clone()])
        .await;
    assert_eq!(enqueued.waiting(), [dependency.id, dependent.id]);
    let worker = f.start_worker();
    enqueued
        .dispatch(&f.app.state.pool, &f.app.state.redis)
        .await;
    f.reaches(gate.id, JobStatus::Running).await;
    f.steps.open_gate(1);

    f.reaches(dependent.id, JobStatus::Succeeded).await;
    assert_eq!(f.status(dependency.id).await, JobStatus::Dead);
    f.ran_after(dependency.id, gate.id).await;
    f.ran_after(dependent.id, dependency.id).await;
    assert_eq!(f.dependency_rows().await, 0);
    worker.stop().await;
}

/// A request of `owner` whose one job is `job`, as the api inserts it.
async fn request_with(f: &Fixture, owner: Uuid, job: NewJob) -> (Uuid, Enqueued) {
    let mut conn = f.pool().acquire().await.expect("connection");
    let new = NewRequest {
        id: Uuid::now_v7(),
        owner_id: owner,
        kind: RequestKind::Canary,
        name: None,
        correlation_id: None,
        content: None,
        total: 1,
        send_at: None,
        callback_url: None,
    };
    let (row, enqueued) =
        shared::jobs::enqueue_with_request(&mut conn, &f.app.state.config.queues, &new, vec![job])
            .await
            .expect("enqueued");
    enqueued
        .dispatch(&f.app.state.pool, &f.app.state.redis)
        .await;
    (row.id, enqueued)
}

async fn cancel(f: &Fixture, email: &str, request: Uuid) {
    let token = f.app.login(email, harness::PASSWORD).await.access_token;
    let response = f
        .app
        .post_authed(&format!("/api/v1/requests/{request}/cancel"), &token)
        .await;
    assert_eq!(response.status(), 200);
}

async fn request_status(f: &Fixture, id: Uuid) -> RequestStatus {
    shared::db::requests::find(f.pool(), id, None)
        .await
        .expect("query")
        .expect("the request")
        .status
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn cancelling_a_request_cancels_its_waiting_job(pool: PgPool) {
    let f = fixture(pool).await;
    let (owner, email) = f.app.create_account(Role::User).await;
    let dependency = canary();
    f.steps.plan(dependency.id, Plan::Gated);
    let worker = f.start_worker();
    f.enqueue(std::slice::from_ref(&dependency)).await;
    f.reaches(dependency.id, JobStatus::Running).await;
    let dependent = canary().after([dependency.id]);
    let (request, enqueued) = request_with(&f, owner, dependent.clone()).await;
    assert_eq!(enqueued.waiting(), [dependent.id]);
    assert_eq!(f.status(dependent.id).await, JobStatus::Waiting);
    let summary = jobs::summary(f.pool(), request).await.expect("summary");
    assert_eq!((summary.waiting, summary.queued), (1, 0));

    cancel(&f, &email, request).await;
    assert_eq!(f.status(dependent.id).await, JobStatus::Cancelled);
    assert_eq!(request_status(&f, request).await, RequestStatus::Cancelled);
    assert_eq!(f.dependency_rows().await, 0);

    f.steps.open_gate(1);
    f.reaches(dependency.id, JobStatus::Succeeded).await;
    assert_eq!(f.status(dependent.id).await, JobStatus::Cancelled);
    assert_eq!(f.steps.runs(dependent.id), 0);
    worker.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_cancelled_dependency_releases_its_dependent_to_the_dispatcher(pool: PgPool) {
    let f = fixture(pool).await;
    let (owner, email) = f.app.create_account(Role::User).await;
    let dependency = canary();
    let (request, _) = request_with(&f, owner, dependency.clone()).await;
    let dependent = canary().after([dependency.id]);
    let waiting = f.enqueue(std::slice::from_ref(&dependent)).await;
    assert_eq!(waiting, [dependent.id]);

    cancel(&f, &email, request).await;
    assert_eq!(f.status(dependency.id).await, JobStatus::Cancelled);
    assert_eq!(f.status(dependent.id).await, JobStatus::Queued);
    let round = Dispatcher::new(
        f.app.state.pool.clone(),
        f.app.state.redis.clone(),
        Duration::from_secs(60),
    )
    .round()
    .await
    .expect("round");
    assert_eq!(round.dispatched, 1, "the released job is the dispatcher's");
    let worker = f.start_worker();
    f.reaches(dependent.id, JobStatus::Succeeded).await;
    assert_eq!(f.steps.runs(dependency.id), 0);
    worker.stop().await;
}

/// Enqueues after `dependency` while it completes: whichever side commits first, the
/// dependent is inserted queued (the dependency had ended) or waiting and released by
/// the completer's transaction — never left waiting, never run twice. Streams of
/// enqueues run from before the dependency is let go until each has seen it ended.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn dependents_enqueued_while_their_dependency_completes_all_run_once(pool: PgPool) {
    const STREAMS: usize = 8;
    const MOST: usize = 400;
    let f = Arc::new(fixture(pool).await);
    let dependency = canary().id;
    f.steps.plan(dependency, Plan::Gated);
    let worker = f.start_worker();
    f.enqueue(&[canary().with_id(dependency)]).await;
    f.reaches(dependency, JobStatus::Running).await;

    let streams: Vec<_> = (0..STREAMS)
        .map(|_| {
            let f = f.clone();
            tokio::spawn(async move {
                let mut made: Vec<(Uuid, bool)> = Vec::new();
                // Until this stream has enqueued a few after the dependency ended.
                while made.iter().filter(|(_, waited)| !waited).count() < 5 && made.len() < MOST {
                    let job = canary().after([dependency]);
                    let waiting = f.enqueue(std::slice::from_ref(&job)).await;
                    made.push((job.id, !waiting.is_empty()));
                }
                made
            })
        })
        .collect();
    // Let every stream get going, then let the dependency end among them.
    let pool = f.pool().clone();
    eventually(WAIT, "each stream enqueued a dependent", || {
        let pool = pool.clone();
        async move {
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM job_dependencies")
                .fetch_one(&pool)
                .await
                .expect("count");
            (rows >= STREAMS as i64 * 2).then_some(())
        }
    })
    .await;
    f.steps.open_gate(1);
    let mut dependents = Vec::new();
    for stream in streams {
        dependents.extend(stream.await.expect("a stream"));
    }
    let waited = dependents.iter().filter(|(_, waited)| *waited).count();
    assert!(
        waited > 0 && waited < dependents.len(),
        "both sides of the race: {waited} of {} waited",
        dependents.len()
    );
    let ids: Vec<Uuid> = dependents.iter().map(|(id, _)| *id).collect();
    eventually(WAIT, "every dependent succeeds", || {
        let (pool, ids) = (pool.clone(), ids.clone());
        async move {
            let done: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE id = ANY($1) AND status = 'succeeded'",
            )
            .bind(&ids)
            .fetch_one(&pool)
            .await
            .expect("count");
            (done == ids.len() as i64).then_some(())
        }
    })
    .await;
    assert_eq!(f.status(dependency).await, JobStatus::Succeeded);
    let twice: Vec<(Uuid, i32)> =
        sqlx::query_as("SELECT id, attempt FROM jobs WHERE id = ANY($1) AND attempt <> 1")
            .bind(&ids)
            .fetch_all(f.pool())
            .await
            .expect("attempts");
    assert!(twice.is_empty(), "claimed other than once: {twice:?}");
    for id in &ids {
        assert_eq!(f.steps.runs(*id), 1, "job {id} ran once");
        f.ran_after(*id, dependency).await;
    }
    assert_eq!(f.dependency_rows().await, 0);
    worker.stop().await;
}

/// The race's narrowest point, made to happen: an enqueue holds its dependency
/// `FOR SHARE` while the completer records the dependency's success. The completer's
/// update waits for the enqueue's commit; the release, a later statement, then sees
/// the dependent's row and queues it.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_completion_that_waited_for_an_enqueue_releases_its_dependent(pool: PgPool) {
    let f = fixture(pool).await;
    let dependency = canary().id;
    f.steps.plan(dependency, Plan::Gated);
    let worker = f.start_worker();
    f.enqueue(&[canary().with_id(dependency)]).await;
    f.reaches(dependency, JobStatus::Running).await;

    let dependent = canary().after([dependency]);
    let mut tx = f.pool().begin().await.expect("begin");
    let enqueued = shared::jobs::enqueue_many(
        &mut tx,
        &f.app.state.config.queues,
        std::slice::from_ref(&dependent),
    )
    .await
    .expect("enqueued");
    assert_eq!(enqueued.waiting(), [dependent.id]);
    f.steps.open_gate(1);
    let pool = f.pool().clone();
    eventually(WAIT, "the completer waits for the enqueue's lock", || {
        let pool = pool.clone();
        async move {
            let blocked: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&pool)
            .await
            .expect("activity");
            (blocked > 0).then_some(())
        }
    })
    .await;
    assert_eq!(f.status(dependency).await, JobStatus::Running);
    tx.commit().await.expect("commit");
    enqueued
        .dispatch(&f.app.state.pool, &f.app.state.redis)
        .await;

    f.reaches(dependent.id, JobStatus::Succeeded).await;
    f.ran_after(dependent.id, dependency).await;
    assert_eq!(f.dependency_rows().await, 0);
    worker.stop().await;
}

/// A dependent's last two dependencies end in two transactions at once: each release
/// locks the dependent before it counts what it still waits for, so the second sees
/// the first's deletion and queues it — exactly once, never neither.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn two_dependencies_ending_at_once_release_their_dependent_once(pool: PgPool) {
    let f = fixture(pool).await;
    let (first, second) = (canary(), canary());
    let dependent = canary().after([first.id, second.id]);
    let _ = f
        .enqueue_only(&[first.clone(), second.clone(), dependent.clone()])
        .await;
    let claimed = jobs::claim(
        f.pool(),
        &[first.id, second.id],
        "a-worker",
        OffsetDateTime::now_utc(),
    )
    .await
    .expect("claim");
    assert_eq!(claimed.len(), 2);

    let mut one = f.pool().begin().await.expect("begin");
    jobs::succeed(&mut one, &[first.id]).await.expect("succeed");
    let by_one = jobs::release_dependents(&mut one, &[first.id])
        .await
        .expect("release");
    assert!(by_one.is_empty(), "the second has not ended for it");
    let other = {
        let pool = f.pool().clone();
        let second = second.id;
        tokio::spawn(async move {
            let mut tx = pool.begin().await.expect("begin");
            jobs::succeed(&mut tx, &[second]).await.expect("succeed");
            let released = jobs::release_dependents(&mut tx, &[second])
                .await
                .expect("release");
            tx.commit().await.expect("commit");
            released
        })
    };
    // The other transaction waits for this one's lock on the dependent (or, were
    // there none, would have finished without seeing this one's deletion).
    let pool = f.pool().clone();
    eventually(WAIT, "the other release waits or ends", || {
        let (pool, finished) = (pool.clone(), other.is_finished());
        async move {
            let blocked: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&pool)
            .await
            .expect("activity");
            (finished || blocked > 0).then_some(())
        }
    })
    .await;
    one.commit().await.expect("commit");
    let by_other = other.await.expect("the other transaction");
    let released: Vec<Uuid> = by_one.iter().chain(&by_other).map(|r| r.id).collect();
    assert_eq!(released, [dependent.id], "released once");
    assert_eq!(f.status(dependent.id).await, JobStatus::Queued);
    assert_eq!(f.dependency_rows().await, 0);
}
