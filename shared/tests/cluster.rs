//! Conveyor on a Redis Cluster: every key a script, transaction or pipeline uses
//! together shares a hash slot (checked offline and by the cluster itself), and the
//! transport, the pause set, events and the handle work against a real 3-node cluster
//! (`REDIS_CLUSTER_TEST_URLS`, started by `scripts/test`; skipped, saying so, when it
//! is unset).

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use redis::AsyncCommands as _;
use shared::queue::pause::{self, PauseWatch};
use shared::queue::{Lane, Queue, QueueName};
use shared::redis::{Redis, same_slot};
use tokio::sync::watch;

fn prefix() -> String {
    format!("test-{}", uuid::Uuid::new_v4().simple())
}

/// A handle on the test cluster with a fresh prefix, or `None` (skipped).
fn cluster() -> Option<Redis> {
    let urls = testkit::redis_cluster_urls()?;
    let seeds: Vec<&str> = urls.split(',').map(str::trim).collect();
    Some(Redis::connect_lazy_to_cluster(&seeds, &prefix()).expect("seed URLs parse"))
}

fn ids(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("job-{i:06}")).collect()
}

/// Every key a queue's scripts and pipelines use together.
fn queue_keys(queue: &Queue) -> Vec<String> {
    vec![
        queue.ready_key(),
        queue.delayed_key(),
        queue.fair_key(),
        queue.fair_clock_key(),
        queue.fair_owners_key(),
        queue.wake_key(),
        queue.workers_key(),
        queue.inflight_key("w1"),
        queue.inflight_key("host-1234-emails-0a1b"),
        queue.alive_key("w1"),
        queue.alive_key("host-1234-emails-0a1b"),
    ]
}

/// Deletes every key of the handle's prefix: `KEYS` goes to every primary of a
/// cluster and `DEL` is split by slot, so this is the same code as on one server.
async fn cleanup(redis: &Redis) {
    let mut conn = redis.connection();
    let keys: Vec<String> = conn
        .keys(format!("{}:*", redis.prefix()))
        .await
        .expect("keys");
    if !keys.is_empty() {
        conn.del::<_, ()>(keys).await.expect("del");
    }
}

#[tokio::test]
async fn every_key_a_queue_uses_at_once_shares_one_slot_and_keeps_the_prefix() {
    let redis = Redis::connect_lazy_to("redis://127.0.0.1:1", "conveyor").expect("url");
    for &name in QueueName::ALL {
        let queue = Queue::new(redis.clone(), name);
        let keys = queue_keys(&queue);
        assert!(same_slot(&keys), "{keys:?}");
        assert!(
            keys.iter().all(|k| k.starts_with("conveyor:queue:{")),
            "{keys:?}"
        );
    }
    assert_eq!(
        Queue::new(redis.clone(), QueueName::Emails).ready_key(),
        "conveyor:queue:{emails}:ready"
    );
    let channels: Vec<String> = (0..50)
        .map(|_| shared::events::channel(&redis, uuid::Uuid::now_v7()))
        .collect();
    assert!(
        same_slot(&channels),
        "one pipeline publishes to many requests"
    );
    assert!(channels[0].starts_with("conveyor:{events}:request:"));
    assert!(shared::events::channel_pattern(&redis).starts_with("conveyor:{events}:request:"));
}

#[tokio::test]
async fn the_cluster_itself_puts_each_queue_in_one_slot() {
    let Some(redis) = cluster() else { return };
    let mut conn = redis.connection();
    for &name in QueueName::ALL {
        let queue = Queue::new(redis.clone(), name);
        let mut slots = BTreeSet::new();
        for key in queue_keys(&queue) {
            let slot: u16 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("CLUSTER KEYSLOT");
            slots.insert(slot);
        }
        assert_eq!(slots.len(), 1, "{name}: {slots:?}");
    }
}

#[tokio::test]
async fn the_handle_pings_every_node_and_connects_only_when_used() {
    let Some(redis) = cluster() else { return };
    assert!(redis.is_cluster());
    redis.ping().await.expect("every primary answers");
    // Nothing listens on these: building the handle succeeds, a command fails.
    let dead = [
        format!("redis://127.0.0.1:{}", testkit::free_port()),
        format!("redis://127.0.0.1:{}", testkit::free_port()),
    ];
    let down = Redis::connect_lazy_to_cluster(&dead, &prefix()).expect("lazy");
    assert!(down.ping().await.is_err());
    assert!(down.ping().await.is_err(), "and it keeps trying");
}

#[tokio::test]
async fn ids_go_through_a_queue_on_the_cluster_in_order() {
    let Some(redis) = cluster() else { return };
    let queue = Queue::new(redis.clone(), QueueName::Emails);
    let all = ids(0..100);
    queue.push(&all).await.expect("push");
    assert_eq!(queue.depth().await.expect("depth"), (100, 0));
    let mut consumer = queue
        .consumer("w1", Duration::from_secs(1))
        .await
        .expect("consumer");
    let mut seen = Vec::new();
    while seen.len() < all.len() {
        // The TAKE script; a BLPOP on the wake list when it found nothing.
        let batch = consumer.fetch(7).await.expect("fetch");
        assert!(!batch.is_empty() && batch.len() <= 7);
        seen.extend(batch);
    }
    assert_eq!(seen, all);
    assert_eq!(consumer.in_flight().ids().await.expect("held").len(), 100);
    consumer.in_flight().ack(&seen).await.expect("ack");
    assert!(consumer.in_flight().ids().await.expect("held").is_empty());
    assert!(
        consumer.fetch(5).await.expect("fetch").is_empty(),
        "empty after the block"
    );
    cleanup(&redis).await;
}

#[tokio::test]
async fn an_idle_consumer_on_the_cluster_wakes_on_push() {
    let Some(redis) = cluster() else { return };
    let queue = Queue::new(redis.clone(), QueueName::Uploads);
    let mut consumer = queue
        .consumer("w1", Duration::from_secs(10))
        .await
        .expect("consumer");
    let started = std::time::Instant::now();
    let waiting = tokio::spawn(async move { consumer.fetch(10).await.expect("fetch") });
    // Let the BLMOVE block before the push; the assertion below does not rely on it.
    testkit::wait_out(
        Duration::from_millis(100),
        "the BLMOVE blocks before the push",
    )
    .await;
    queue.push(&["job-1"]).await.expect("push");
    assert_eq!(waiting.await.expect("joined"), vec!["job-1".to_owned()]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    cleanup(&redis).await;
}

#[tokio::test]
async fn the_fair_lane_and_its_scripts_work_on_the_cluster() {
    let Some(redis) = cluster() else { return };
    let queue = Queue::new(redis.clone(), QueueName::Emails);
    let (a, b) = (uuid::Uuid::from_u128(0xa), uuid::Uuid::from_u128(0xb));
    queue
        .push_to(Lane::Fair(a), &ids(0..4))
        .await
        .expect("push a");
    let now = SystemTime::now();
    queue
        .schedule_in(Lane::Fair(b), &[("other", now)])
        .await
        .expect("schedule b");
    assert_eq!(queue.promote_due(now).await.expect("promote"), 1);
    queue.push(&["urgent"]).await.expect("push");
    let mut consumer = queue
        .consumer("w1", Duration::from_secs(1))
        .await
        .expect("consumer");
    let mut seen = Vec::new();
    while seen.len() < 6 {
        seen.extend(consumer.fetch(2).await.expect("fetch"));
    }
    assert_eq!(
        seen,
        [
            "urgent",
            "job-000000",
            "other",
            "job-000001",
            "job-000002",
            "job-000003"
        ]
    );
    cleanup(&redis).await;
}

#[tokio::test]
async fn scheduled_ids_are_promoted_when_due_on_the_cluster() {
    let Some(redis) = cluster() else { return };
    let queue = Queue::new(redis.clone(), QueueName::Scans);
    let now = SystemTime::now();
    let due: Vec<(String, SystemTime)> = ids(0..2500).into_iter().map(|id| (id, now)).collect();
    queue.schedule(&due).await.expect("schedule");
    queue
        .schedule(&[("later", now + Duration::from_secs(3600))])
        .await
        .expect("schedule");
    // More than one PROMOTE chunk.
    assert_eq!(queue.promote_due(now).await.expect("promote"), 2500);
    assert_eq!(queue.depth().await.expect("depth"), (2500, 1));
    assert_eq!(queue.promote_due(now).await.expect("promote"), 0);
    cleanup(&redis).await;
}

#[tokio::test]
async fn the_reaper_on_the_cluster_returns_a_dead_consumers_ids_and_spares_the_living() {
    let Some(redis) = cluster() else { return };
    let queue = Queue::new(redis.clone(), QueueName::Canary);
    queue.push(&ids(0..30)).await.expect("push");
    let mut dead = queue
        .consumer("dead", Duration::from_secs(1))
        .await
        .expect("consumer");
    let mut alive = queue
        .consumer("alive", Duration::from_secs(1))
        .await
        .expect("consumer");
    dead.in_flight()
        .heartbeat(Duration::from_millis(100))
        .await
        .expect("heartbeat");
    alive
        .in_flight()
        .heartbeat(Duration::from_secs(30))
        .await
        .expect("heartbeat");
    assert_eq!(queue.workers_alive().await.expect("alive"), 2);
    assert_eq!(dead.fetch(10).await.expect("fetch"), ids(0..10));
    assert_eq!(alive.fetch(5).await.expect("fetch"), ids(10..15));
    testkit::eventually(
        Duration::from_secs(5),
        "the dead heartbeat expires",
        || async { (queue.workers_alive().await.expect("alive") == 1).then_some(()) },
    )
    .await;

    assert_eq!(queue.reap().await.expect("reap"), 10);
    let mut conn = redis.connection();
    let mut ready: Vec<String> = conn.lrange(queue.ready_key(), 0, -1).await.expect("lrange");
    ready.reverse();
    let mut expected = ids(0..10);
    expected.extend(ids(15..30));
    assert_eq!(ready, expected, "the dead consumer's ids are next in line");
    assert_eq!(alive.in_flight().ids().await.expect("held").len(), 5);
    assert_eq!(queue.reap().await.expect("reap"), 0);

    // A clean shutdown puts the living consumer's ids back first in line.
    assert_eq!(alive.in_flight().release().await.expect("release"), 5);
    assert_eq!(queue.workers_alive().await.expect("alive"), 0);
    let next = alive.fetch(5).await.expect("fetch");
    assert_eq!(next, ids(10..15));
    cleanup(&redis).await;
}

#[tokio::test]
async fn the_pause_set_works_on_the_cluster() {
    let Some(redis) = cluster() else { return };
    assert!(
        pause::pause(&redis, QueueName::Emails)
            .await
            .expect("pause")
    );
    assert!(
        !pause::pause(&redis, QueueName::Emails)
            .await
            .expect("again")
    );
    let (stop_tx, stop) = watch::channel(false);
    let mut watch = PauseWatch::start(redis.clone(), Duration::from_millis(50), stop).await;
    assert!(watch.is_paused(QueueName::Emails));
    assert!(
        pause::resume(&redis, QueueName::Emails)
            .await
            .expect("resume")
    );
    let running = tokio::time::timeout(
        Duration::from_secs(2),
        watch.wait_running(QueueName::Emails),
    )
    .await;
    assert_eq!(running, Ok(true));
    assert!(pause::paused(&redis).await.expect("paused").is_empty());
    stop_tx.send(true).expect("the refresher listens");
    cleanup(&redis).await;
}

#[tokio::test]
async fn events_published_in_one_pipeline_reach_a_subscriber_on_any_node() {
    let Some(redis) = cluster() else { return };
    let pattern = shared::events::channel_pattern(&redis);
    // One subscriber per seed node: classic PUBLISH reaches every node.
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        let mut pubsub = redis.pubsub().await.expect("pubsub");
        pubsub.psubscribe(&pattern).await.expect("psubscribe");
        subscribers.push(pubsub);
    }
    let requests: Vec<uuid::Uuid> = (0..5).map(|_| uuid::Uuid::now_v7()).collect();
    let mut pipe = redis::pipe();
    for id in &requests {
        pipe.publish(shared::events::channel(&redis, *id), id.to_string())
            .ignore();
    }
    // What `events::publish` sends: one pipeline, so one slot.
    pipe.query_async::<()>(&mut redis.connection())
        .await
        .expect("one pipeline of PUBLISHes to many channels");
    for pubsub in subscribers {
        let mut messages = pubsub.into_on_message();
        let mut heard = Vec::new();
        while heard.len() < requests.len() {
            let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
                .await
                .expect("an event within 5 s")
                .expect("the subscription is open");
            heard.push(message.get_payload::<String>().expect("text"));
        }
        let expected: Vec<String> = requests.iter().map(ToString::to_string).collect();
        assert_eq!(heard, expected);
    }
}

/// Why every pipeline must stay in one slot: redis-rs 1.8 refuses a pipeline whose
/// keys span slots (it sends a pipeline to one node), and Redis refuses a script
/// whose keys do.
#[tokio::test]
async fn the_cluster_refuses_pipelines_and_scripts_across_slots() {
    let Some(redis) = cluster() else { return };
    let a = redis.key("a");
    let b = (0..)
        .map(|i| redis.key(&format!("b{i}")))
        .find(|b| !same_slot(&[&a, b]))
        .expect("a key in another slot");
    let mut conn = redis.connection();
    let across: redis::RedisResult<()> = redis::pipe()
        .set(&a, 1)
        .ignore()
        .set(&b, 1)
        .ignore()
        .query_async(&mut conn)
        .await;
    assert!(across.is_err(), "a pipeline across slots: {across:?}");
    let script: redis::RedisResult<()> =
        redis::Script::new("redis.call('SET', KEYS[1], 1); redis.call('SET', KEYS[2], 1)")
            .key(&a)
            .key(&b)
            .invoke_async(&mut conn)
            .await;
    assert!(script.is_err(), "a script across slots: {script:?}");
    cleanup(&redis).await;
}
