//! The sampled gauges' sample, against real PostgreSQL and Redis (and the test Redis
//! Cluster when `REDIS_CLUSTER_TEST_URLS` is set): what a sample measures, that it is
//! stored for every worker to show, and only for `KEPT`.

use shared::maintenance::sample::{KEPT, Sample};
use shared::queue::{Queue, QueueName};
use shared::redis::Redis;
use sqlx::PgPool;

fn prefix() -> String {
    format!("test-{}", uuid::Uuid::new_v4().simple())
}

/// Jobs of `queue` in `status`, made the way the runtime leaves them.
async fn jobs(pool: &PgPool, queue: QueueName, status: &str, n: usize) {
    for _ in 0..n {
        sqlx::query(
            "INSERT INTO jobs (id, queue, payload, max_attempts, status, finished_at) \
             VALUES ($1, $2, '{}'::jsonb, 3, $3, \
                     CASE WHEN $3 = 'dead' THEN now() END)",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(queue)
        .bind(status)
        .execute(pool)
        .await
        .expect("a job");
    }
}

async fn stored_and_read_back(pool: &PgPool, redis: &Redis) {
    jobs(pool, QueueName::Canary, "queued", 2).await;
    jobs(pool, QueueName::Canary, "dead", 1).await;
    jobs(pool, QueueName::Emails, "running", 1).await;
    Queue::new(redis.clone(), QueueName::Canary)
        .heartbeat("sample-test", std::time::Duration::from_secs(30))
        .await
        .expect("a live consumer");

    assert_eq!(
        Sample::latest(redis).await.expect("read"),
        None,
        "no sample yet"
    );
    let sample = Sample::take(pool, redis).await.expect("a sample");
    let of = |name: QueueName| {
        sample
            .queues
            .iter()
            .find(|q| q.queue == name.as_str())
            .unwrap_or_else(|| panic!("{name} is in the sample"))
    };
    assert_eq!(sample.queues.len(), QueueName::ALL.len(), "{sample:?}");
    assert_eq!(of(QueueName::Canary).jobs, [0, 2, 0, 0, 1]);
    assert_eq!(of(QueueName::Canary).workers_alive, 1);
    assert!(of(QueueName::Canary).oldest_queued_secs >= 0.0);
    assert_eq!(of(QueueName::Emails).jobs, [0, 0, 1, 0, 0]);
    assert_eq!(of(QueueName::Emails).workers_alive, 0);
    assert_eq!(of(QueueName::Scans).jobs, [0, 0, 0, 0, 0]);

    sample.store(redis).await.expect("stored");
    assert_eq!(Sample::latest(redis).await.expect("read"), Some(sample));
    let mut conn = redis.connection();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(redis.key("sample:queues"))
        .query_async(&mut conn)
        .await
        .expect("pttl");
    let kept = i64::try_from(KEPT.as_millis()).expect("ms");
    assert!(ttl > 0 && ttl <= kept, "kept {ttl} ms, at most {kept}");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_sample_counts_every_queue_and_is_kept_for_a_while(pool: PgPool) {
    let redis = Redis::connect_lazy_to(&testkit::redis_url(), &prefix()).expect("redis url");
    stored_and_read_back(&pool, &redis).await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_sample_is_stored_and_read_on_a_redis_cluster(pool: PgPool) {
    let Some(urls) = testkit::redis_cluster_urls() else {
        return;
    };
    let seeds: Vec<&str> = urls.split(',').map(str::trim).collect();
    let redis = Redis::connect_lazy_to_cluster(&seeds, &prefix()).expect("seed URLs parse");
    stored_and_read_back(&pool, &redis).await;
}
