//! The worker on a Redis Cluster: one email end to end through the
//! real `api` and `worker` binaries configured with `REDIS_CLUSTER_URLS` (the test
//! cluster of `REDIS_CLUSTER_TEST_URLS`, started by `scripts/test`; skipped, saying
//! so, when it is unset).

mod common;

use std::time::Duration;

use common::{Smtp, System, free_port, header};
use redis::AsyncCommands as _;
use serde_json::Value;
use shared::queue::{Queue, QueueName};
use shared::redis::Redis;
use sqlx::PgPool;

const LONG: Duration = Duration::from_secs(60);

fn cluster_redis(urls: &str, prefix: &str) -> Redis {
    let seeds: Vec<&str> = urls.split(',').map(str::trim).collect();
    Redis::connect_lazy_to_cluster(&seeds, prefix).expect("seed URLs parse")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_email_is_delivered_with_api_and_worker_on_a_redis_cluster(pool: PgPool) {
    let Some(urls) = harness::redis_cluster_urls() else {
        return;
    };
    let smtp = Smtp::start(free_port(), &[]).await;
    // REDIS_URL stays set (to the single server): the cluster must win over it.
    let mut system = System::new(&pool, smtp.port, &[("REDIS_CLUSTER_URLS", &urls)]).await;
    // Signing the user in runs the login throttle's scripts and the rate limiter.
    system.start_api().await;
    let id = system
        .send_email("bob@example.org", "Over the cluster")
        .await;

    // Follow the request before any worker runs: its end can then only reach the
    // stream through pub/sub on the cluster (PUBLISH by the worker, PSUBSCRIBE by
    // the api).
    let events = system
        .client
        .get(format!("{}/api/v1/requests/{id}/events", system.base))
        .bearer_auth(&system.token)
        .send()
        .await
        .expect("sent");
    assert_eq!(events.status(), 200);
    let stream = tokio::spawn(async move { events.text().await.expect("the stream ends") });

    system.start_worker().await;
    let request = system.wait_finished(&id, LONG).await;
    assert_eq!(request["status"], "succeeded", "{request}");
    assert_eq!(request["jobs"]["succeeded"], 1);
    let messages = smtp.wait_for_messages(1, LONG).await;
    assert_eq!(messages.len(), 1, "exactly one message");
    assert_eq!(header(&messages[0], "Subject"), Some("Over the cluster"));

    let text = tokio::time::timeout(Duration::from_secs(20), stream)
        .await
        .expect("the stream ends once the request has finished")
        .expect("joined");
    let progress: Vec<Value> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str(data).ok())
        .collect();
    assert!(
        progress.first().is_some_and(|p| p["finished"] == false),
        "the first event is the state before the worker: {text}"
    );
    assert!(
        progress
            .iter()
            .any(|p| p["finished"] == true && p["status"] == "succeeded"),
        "the end arrived over pub/sub: {text}"
    );

    // The worker's consumer lives on the cluster, under the system's prefix.
    let prefix = system
        .env
        .iter()
        .find_map(|(k, v)| (k == "REDIS_PREFIX").then(|| v.clone()))
        .expect("a prefix");
    let redis = cluster_redis(&urls, &prefix);
    let emails = Queue::new(redis.clone(), QueueName::Emails);
    assert!(emails.workers_alive().await.expect("workers") >= 1);
    assert!(
        system.api_log().contains("Redis Cluster mode"),
        "{}",
        system.api_log()
    );

    for worker in system.workers.drain(..) {
        let status = worker.terminate(LONG).await;
        assert!(status.success(), "the worker exits 0: {status}");
    }
    let mut conn = redis.connection();
    let keys: Vec<String> = conn.keys(format!("{prefix}:*")).await.expect("keys");
    if !keys.is_empty() {
        conn.del::<_, ()>(keys).await.expect("del");
    }
}
