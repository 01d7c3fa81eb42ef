//! The hot statements given ids in hand keep their plan on the primary key whatever
//! the statistics say. The case that broke the drain: a table grown with finished jobs,
//! ANALYZEd, then a backlog enqueued after that (far below autoanalyze's threshold), so
//! the planner estimates the queued rows at one. A claim planned from the status index
//! then read the whole backlog for every batch of ids (~190 ms per claim of 50 ids with
//! 5 million rows: the drain went quadratic, 90 jobs/s).

use serde_json::Value;
use shared::db::jobs;
use sqlx::PgPool;
use uuid::Uuid;

/// Finished jobs and requests, ANALYZEd, then a backlog the statistics have not seen.
async fn grown_with_stale_statistics(pool: &PgPool) {
    for statement in [
        "ALTER TABLE jobs SET (autovacuum_enabled = false)",
        "ALTER TABLE requests SET (autovacuum_enabled = false)",
        "INSERT INTO users (id, email_ciphertext, email_index, password_hash) \
         VALUES ('00000000-0000-0000-0000-000000000001', '\\x00', '\\x01', 'unused')",
        "INSERT INTO requests (id, owner_id, kind, status, total, succeeded, finished_at) \
         SELECT md5('done' || i)::uuid, '00000000-0000-0000-0000-000000000001', 'canary', \
                'succeeded', 1, 1, now() \
         FROM generate_series(1, 100000) i",
        "INSERT INTO jobs (id, request_id, queue, payload, max_attempts, status, finished_at) \
         SELECT md5('job' || i)::uuid, md5('done' || i)::uuid, 'canary', '{}', 3, 'succeeded', \
                now() \
         FROM generate_series(1, 100000) i",
        "ANALYZE jobs",
        "ANALYZE requests",
        "INSERT INTO requests (id, owner_id, kind, status, total) \
         SELECT md5('queued' || i)::uuid, '00000000-0000-0000-0000-000000000001', 'canary', \
                'queued', 1 \
         FROM generate_series(1, 20000) i",
        "INSERT INTO jobs (id, request_id, queue, payload, max_attempts, status, dispatched_at) \
         SELECT md5('backlog' || i)::uuid, md5('queued' || i)::uuid, 'canary', '{}', 3, \
                'queued', now() \
         FROM generate_series(1, 20000) i",
    ] {
        run(pool, statement).await;
    }
}

/// Runs one setup statement (a constant of this file), failing the test with it.
async fn run(pool: &PgPool, statement: &'static str) {
    sqlx::query(statement)
        .execute(pool)
        .await
        .unwrap_or_else(|err| panic!("{statement}: {err}"));
}

/// Every scan of `plan` as (node type, relation, index).
fn scans(plan: &Value, out: &mut Vec<(String, String, String)>) {
    let text = |key: &str| plan[key].as_str().unwrap_or_default().to_owned();
    if text("Node Type").contains("Scan") {
        out.push((text("Node Type"), text("Relation Name"), text("Index Name")));
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        scans(child, out);
    }
}

/// The plan of `statement` for `ids` and `extra` more parameters (1: the stale-before
/// time; 2: a worker and the stale-before time; 3: a worker).
async fn plan_of(
    pool: &PgPool,
    statement: &str,
    ids: &[Uuid],
    extra: usize,
) -> Vec<(String, String, String)> {
    // The statement is one of the module's constants, not input.
    let explain = sqlx::AssertSqlSafe(format!("EXPLAIN (FORMAT JSON) {statement}"));
    let stale_before = time::OffsetDateTime::now_utc() - std::time::Duration::from_secs(30);
    let mut query = sqlx::query_scalar::<_, Value>(explain).bind(ids);
    query = match extra {
        0 => query,
        1 => query.bind(stale_before),
        3 => query.bind("worker-1"),
        _ => query.bind("worker-1").bind(stale_before),
    };
    let plan = query.fetch_one(pool).await.expect("explain");
    let mut found = Vec::new();
    scans(&plan[0]["Plan"], &mut found);
    found
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn statements_given_ids_stay_on_the_primary_key_with_stale_statistics(pool: PgPool) {
    grown_with_stale_statistics(&pool).await;
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM jobs WHERE status = 'queued' ORDER BY md5(id::text) LIMIT 50",
    )
    .fetch_all(&pool)
    .await
    .expect("ids");
    assert_eq!(ids.len(), 50);
    // And as many running since that ANALYZE (a busy worker's, or under a held snapshot
    // every job that ran since): the outcome statements look 50 of them up.
    for statement in [
        "INSERT INTO requests (id, owner_id, kind, status, total) \
         SELECT md5('started' || i)::uuid, '00000000-0000-0000-0000-000000000001', 'canary', \
                'running', 1 \
         FROM generate_series(1, 20000) i",
        "INSERT INTO jobs (id, request_id, queue, payload, max_attempts, status, dispatched_at, \
                          claimed_by, heartbeat_at, started_at, attempt) \
         SELECT md5('running' || i)::uuid, md5('started' || i)::uuid, 'canary', '{}', 3, \
                'running', now(), 'worker-1', now(), now(), 1 \
         FROM generate_series(1, 20000) i",
    ] {
        run(&pool, statement).await;
    }
    let running: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM jobs WHERE status = 'running' ORDER BY md5(id::text) LIMIT 50",
    )
    .fetch_all(&pool)
    .await
    .expect("running ids");
    assert_eq!(running.len(), 50);
    for (name, statement, extra, ids) in [
        ("claim", jobs::CLAIM, 2, &ids),
        ("not_yet_claimable", jobs::NOT_YET_CLAIMABLE, 1, &ids),
        ("undispatch", jobs::UNDISPATCH, 0, &ids),
        ("heartbeat", jobs::HEARTBEAT, 3, &running),
        ("hand_back", jobs::HAND_BACK, 3, &running),
        ("succeed", jobs::SUCCEED, 0, &running),
        ("suppress", jobs::SUPPRESS, 0, &running),
    ] {
        let found = plan_of(&pool, statement, ids, extra).await;
        for (node, relation, index) in &found {
            assert!(
                !node.starts_with("Seq Scan") || relation.is_empty(),
                "{name} reads all of {relation}: {found:?}"
            );
            assert!(
                index.is_empty() || index.ends_with("_pkey"),
                "{name} finds its rows through {index}, not the primary key: {found:?}"
            );
        }
        assert!(
            found.iter().any(|(_, _, index)| index == "jobs_pkey"),
            "{name}: {found:?}"
        );
    }
}

/// The queue counts (`GET /admin/queues`, the console, the workers' sampler) read kept
/// dead jobs from their own index only: with 100,000 finished jobs and 2,000 dead ones
/// scattered among them, vacuumed as autovacuum leaves them, no dead job's heap row is
/// fetched (before `jobs_dead_idx` each was: 150 ms for 20,000 dead among 2 million).
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn queue_counts_read_dead_jobs_from_their_index_alone(pool: PgPool) {
    grown_with_stale_statistics(&pool).await;
    for statement in [
        "UPDATE jobs SET status = 'dead' \
         WHERE status = 'succeeded' AND ('x' || substr(md5(id::text), 1, 4))::bit(16)::int % 50 = 0",
        "UPDATE jobs SET discarded_at = now() \
         WHERE status = 'dead' AND ('x' || substr(md5(id::text), 5, 4))::bit(16)::int % 4 = 0",
        "VACUUM (ANALYZE) jobs",
    ] {
        run(&pool, statement).await;
    }
    let (dead, discarded): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE discarded_at IS NULL), \
                count(*) FILTER (WHERE discarded_at IS NOT NULL) \
         FROM jobs WHERE status = 'dead'",
    )
    .fetch_one(&pool)
    .await
    .expect("truth");
    assert!(
        dead > 1000 && discarded > 200,
        "{dead} dead, {discarded} discarded"
    );
    for (name, statement) in [
        ("queue_counts", jobs::QUEUE_COUNTS),
        ("sample_queues", jobs::SAMPLE_QUEUES),
    ] {
        let explain = sqlx::AssertSqlSafe(format!("EXPLAIN (ANALYZE, FORMAT JSON) {statement}"));
        let plan: Value = sqlx::query_scalar(explain)
            .fetch_one(&pool)
            .await
            .expect("explain");
        let mut nodes = Vec::new();
        walk(&plan[0]["Plan"], &mut nodes);
        let dead_scans: Vec<&Value> = nodes
            .iter()
            .filter(|node| node["Index Name"] == "jobs_dead_idx")
            .copied()
            .collect();
        assert_eq!(dead_scans.len(), 1, "{name}: {plan}");
        assert_eq!(
            dead_scans[0]["Node Type"], "Index Only Scan",
            "{name}: {plan}"
        );
        assert_eq!(dead_scans[0]["Heap Fetches"], 0, "{name}: {plan}");
        assert!(
            !nodes
                .iter()
                .any(|node| node["Node Type"] == "Seq Scan" && node["Relation Name"] == "jobs"),
            "{name} reads all of jobs: {plan}"
        );
    }
    // And the counts are right.
    let counts = jobs::queue_counts(&pool).await.expect("counts");
    let canary = counts
        .iter()
        .find(|c| c.queue == shared::queue::QueueName::Canary)
        .expect("canary counted");
    assert_eq!((canary.dead, canary.discarded), (dead, discarded));
    assert_eq!(canary.queued, 20_000);
    assert!(canary.oldest_queued_at.is_some());
    let sampled = jobs::sample_queues(&pool).await.expect("sample");
    let canary = sampled
        .iter()
        .find(|c| c.queue == shared::queue::QueueName::Canary)
        .expect("canary sampled");
    assert_eq!((canary.dead, canary.queued), (dead, 20_000));
}

/// Every node of `plan`, depth first.
fn walk<'a>(plan: &'a Value, out: &mut Vec<&'a Value>) {
    out.push(plan);
    for child in plan["Plans"].as_array().into_iter().flatten() {
        walk(child, out);
    }
}
