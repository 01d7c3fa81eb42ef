//! The reliable Redis transport against a real Redis: order, instant wake-up, the
//! priority lane ahead of the fair lane and owners taking turns in it, the reaper
//! losing nothing, chunked promotion of a huge delayed set, and a randomized property
//! check that every id is always in exactly one place.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime};

use redis::AsyncCommands as _;
use shared::queue::{Lane, Queue, QueueName};
use shared::redis::Redis;

fn redis() -> Redis {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    Redis::connect_lazy_to(&url, &prefix).expect("redis url")
}

fn ids(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("job-{i:06}")).collect()
}

async fn ready(redis: &Redis, queue: &Queue) -> Vec<String> {
    let mut conn = redis.connection();
    let mut list: Vec<String> = conn.lrange(queue.ready_key(), 0, -1).await.expect("lrange");
    list.reverse(); // consumption order
    list
}

/// The fair lane's ids in consumption order.
async fn fair(redis: &Redis, queue: &Queue) -> Vec<String> {
    let mut conn = redis.connection();
    conn.zrange(queue.fair_key(), 0, -1).await.expect("zrange")
}

fn named(prefix: &str, range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i:06}")).collect()
}

/// Fetches `n` ids one batch of at most `max` at a time.
async fn drain(consumer: &mut shared::queue::Consumer, n: usize, max: usize) -> Vec<String> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let batch = consumer.fetch(max).await.expect("fetch");
        assert!(!batch.is_empty(), "fetched nothing after {seen:?}");
        seen.extend(batch);
    }
    seen
}

/// Deletes every key of the test's prefix.
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
async fn ids_come_out_in_the_order_they_went_in() {
    let redis = redis();
    let queue = Queue::new(redis.clone(), QueueName::Emails);
    let all = ids(0..100);
    queue.push(&all).await.expect("push");
    let mut consumer = queue
        .consumer("w1", Duration::from_secs(1))
        .await
        .expect("consumer");
    let mut seen = Vec::new();
    while seen.len() < all.len() {
        let batch = consumer.fetch(7).await.expect("fetch");
        assert!(!batch.is_empty() && batch.len() <= 7);
        seen.extend(batch);
    }
    assert_eq!(seen, all);
    assert_eq!(
        consumer.in_flight().ids().await.expect("inflight").len(),
        100
    );
    consumer.in_flight().ack(&seen).await.expect("ack");
    assert!(
        consumer
            .in_flight()
            .ids()
            .await
            .expect("inflight")
            .is_empty()
    );
    cleanup(&redis).await;
}

#[tokio::test]
async fn an_idle_consumer_wakes_on_push_not_on_a_timer() {
    let redis = redis();
    let queue = Queue::new(redis.clone(), QueueName::Emails);
    let mut consumer = queue
        .consumer("w1", Duration::from_secs(10))
        .await
        .expect("consumer");
    let started = Instant::now();
    let waiting = tokio::spawn(async move { consumer.fetch(10).await.expect("fetch") });
    testkit::wait_out(
        Duration::from_millis(100),
        "the fetch blocks before the push",
    )
    .await;
    queue.push(&["job-1"]).await.expect("push");
    let got = waiting.await.expect("joined");
    assert_eq!(got, vec!["job-1".to_owned()]);
    // Woken by the push, long before the 10 s blocking timeout.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    cleanup(&redis).await;
}

#[tokio::test]
async fn the_priority_lane_goes_first_and_owners_take_turns_in_the_fair_lane() {
    let redis = redis();
    let queue = Queue::new(redis.clone(), QueueName::Emails);
    let (a, b) = (uuid::Uuid::from_u128(0xa), uuid::Uuid::from_u128(0xb));
    queue
        .push_to(Lane::Fair(a), &named("a", 0..100))
        .await
        .expect("push a");
    let mut consumer = queue
        .consumer("w1", Duration::from_secs(1))
        .await
        .expect("consumer");
    assert_eq!(
        drain(&mut consumer, 10, 10).await,
        named("a", 0..10),
        "one owner alone: its order"
    );
    // Another owner's bulk and transactional work arrive behind a's 90 left.
    queue
        .push_to(Lane::Fair(b), &named("b", 0..3))
        .await
        .expect("push b");
    queue.push(&named("p", 0..2)).await.expect("push priority");
    let mut expected = named("p", 0..2);
    for i in 0..3 {
        expected.push(format!("a-{:06}", 10 + i));
        expected.push(format!("b-{i:06}"));
    }
    expected.extend(named("a", 13..21));
    assert_eq!(drain(&mut consumer, 16, 4).await, expected);
    // An owner back after its turns were used up starts at the lane's clock, not
    // behind its own old work.
    queue
        .push_to(Lane::Fair(b), &named("b", 3..5))
        .await
        .expect("push b again");
    let mut expected = Vec::new();
    for i in 0..2 {
        expected.push(format!("a-{:06}", 21 + i));
        expected.push(format!("b-{:06}", 3 + i));
    }
    expected.push("a-000023".to_owned());
    assert_eq!(drain(&mut consumer, 5, 5).await, expected);
    assert_eq!(queue.lane_depths().await.expect("depths"), (0, 76, 0));
    assert_eq!(fair(&redis, &queue).await, named("a", 24..100));
    cleanup(&redis).await;
}

#[tokio::test]
async fn idle_consumers_wake_on_a_fair_push_and_pass_the_wake_on() {
    let redis = redis();
    let queue = Queue::new(redis.clone(), QueueName::Emails);
    let owner = uuid::Uuid::from_u128(7);
    let mut waiting = Vec::new();
    for n in 0..3 {
        let mut consumer = queue
            .consumer(&format!("w{n}"), Duration::from_secs(10))
            .await
            .expect("consumer");
        waiting.push(tokio::spawn(async move {
            consumer.fetch(10).await.expect("fetch")
        }));
    }
    testkit::wait_out(
        Duration::from_millis(100),
        "the fetches block before the push",
    )
    .await;
    let started = Instant::now();
    queue
        .push_to(Lane::Fair(owner), &named("c", 0..30))
        .await
        .expect("push");
    let mut got = Vec::new();
    for consumer in waiting {
        let batch = consumer.await.expect("joined");
        assert_eq!(batch.len(), 10, "each idle consumer woke and took a batch");
        got.extend(batch);
    }
    got.sort();
    assert_eq!(got, named("c", 0..30));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woken by the push, not the 10 s timeout: {:?}",
        started.elapsed()
    );
    cleanup(&redis).await;
}

#[tokio::test]
async fn delayed_ids_are_promoted_to_their_own_lane() {
    let redis = redis();
    let queue = Queue::new(redis.clone(), QueueName::Emails);
    let (a, b) = (uuid::Uuid::from_u128(0xa), uuid::Uuid::from_u128(0xb));
    let now = SystemTime::now();
    let at = |ids: Vec<String>| ids.into_iter().map(|id| (id, now)).collect::<Vec<_>>();
    queue
        .schedule_in(Lane::Fair(a), &at(named("a", 0..3)))
        .await
        .expect("schedule a");
    queue
        .schedule_in(Lane::Fair(b), &at(named("b", 0..3)))
        .await
        .expect("schedule b");
    queue
        .schedule(&at(named("p", 0..1)))
        .await
        .expect("schedule");
    assert_eq!(queue.promote_due(now).await.expect("promote"), 7);
    assert_eq!(queue.lane_depths().await.expect("depths"), (1, 6, 0));
    let mut consumer = queue
        .consumer("w1", Duration::from_secs(1))
        .await
        .expect("consumer");
    assert_eq!(
        drain(&mut consumer, 7, 7).await,
        [
            "p-000000", "a-000000", "b-000000", "a-000001", "b-000001", "a-000002", "b-000002"
        ]
    );
    cleanup(&redis).await;
}

#[tokio::test]
async fn the_reaper_returns_a_dead_consumers_ids_in_order_and_spares_the_living() {
    let redis = redis();
    let queue = Queue::new(redis.clone(), QueueName::Emails);
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
    let held_by_dead = dead.fetch(10).await.expect("fetch");
    let held_by_alive = alive.fetch(5).await.expect("fetch");
    assert_eq!(held_by_dead, ids(0..10));
    assert_eq!(held_by_alive, ids(10..15));
    // Once the dead consumer's 100 ms heartbeat lapses, the reaper takes its 10 ids.
    let reaped = testkit::eventually(Duration::from_secs(5), "the heartbeat lapses", || async {
        Some(queue.reap().await.expect("reap")).filter(|n| *n > 0)
    })
    .await;
    assert_eq!(reaped, 10);
    // The dead consumer's ids are next in line, oldest first; the rest follow.
    let mut expected = ids(0..10);
    expected.extend(ids(15..30));
    assert_eq!(ready(&redis, &queue).await, expected);
    assert_eq!(alive.in_flight().ids().await.expect("inflight").len(), 5);
    assert!(dead.in_flight().ids().await.expect("inflight").is_empty());
    // A second run finds nothing more to do.
    assert_eq!(queue.reap().await.expect("reap"), 0);
    cleanup(&redis).await;
}

#[tokio::test]
async fn a_hundred_thousand_delayed_ids_are_promoted_in_bounded_chunks() {
    let redis = redis();
    let queue = Queue::new(redis.clone(), QueueName::Emails);
    let now = SystemTime::now();
    let due: Vec<(String, SystemTime)> = ids(0..100_000).into_iter().map(|id| (id, now)).collect();
    queue.schedule(&due).await.expect("schedule");
    let later = vec![("later".to_owned(), now + Duration::from_secs(3600))];
    queue.schedule(&later).await.expect("schedule");

    assert_eq!(queue.promote_due(now).await.expect("promote"), 100_000);
    assert_eq!(queue.depth().await.expect("depth"), (100_000, 1));
    assert_eq!(
        queue.promote_due(now).await.expect("promote"),
        0,
        "the future id waits"
    );
    let mut consumer = queue
        .consumer("w1", Duration::from_secs(1))
        .await
        .expect("consumer");
    let batch = consumer.fetch(1000).await.expect("fetch");
    assert_eq!(batch.len(), 1000);
    cleanup(&redis).await;
}

#[tokio::test]
async fn release_puts_unfinished_work_back_first_in_line() {
    let redis = redis();
    let queue = Queue::new(redis.clone(), QueueName::Scans);
    queue.push(&ids(0..5)).await.expect("push");
    let mut consumer = queue
        .consumer("w1", Duration::from_secs(1))
        .await
        .expect("consumer");
    consumer
        .in_flight()
        .heartbeat(Duration::from_secs(30))
        .await
        .expect("heartbeat");
    let held = consumer.fetch(3).await.expect("fetch");
    consumer.in_flight().ack(&held[..1]).await.expect("ack");
    assert_eq!(consumer.in_flight().release().await.expect("release"), 2);
    assert_eq!(
        ready(&redis, &queue).await,
        vec!["job-000001", "job-000002", "job-000003", "job-000004"]
    );
    cleanup(&redis).await;
}

/// A small deterministic generator, so a failing seed can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

#[tokio::test]
async fn no_id_is_lost_or_duplicated_whatever_the_interleaving() {
    for seed in [1u64, 7, 42, 1234, 99_991] {
        let redis = redis();
        let queue = Queue::new(redis.clone(), QueueName::Uploads);
        let mut rng = Lcg(seed);
        let mut consumers = Vec::new();
        for n in 0..3 {
            let consumer = queue
                .consumer(&format!("w{n}"), Duration::from_millis(50))
                .await
                .expect("consumer");
            consumer
                .in_flight()
                .heartbeat(Duration::from_secs(30))
                .await
                .expect("heartbeat");
            consumers.push(consumer);
        }
        let mut pushed = 0u32;
        let mut acked: BTreeSet<String> = BTreeSet::new();
        let mut held: HashMap<usize, Vec<String>> = HashMap::new();
        for _ in 0..150 {
            let who = usize::try_from(rng.next(3)).unwrap_or(0);
            match rng.next(5) {
                0 => {
                    let n = u32::try_from(rng.next(20)).unwrap_or(0) + 1;
                    let lane = match rng.next(3) {
                        0 => Lane::Priority,
                        owner => Lane::Fair(uuid::Uuid::from_u128(u128::from(owner))),
                    };
                    queue
                        .push_to(lane, &ids(pushed..pushed + n))
                        .await
                        .expect("push");
                    pushed += n;
                }
                1 | 2 => {
                    let max = usize::try_from(rng.next(8)).unwrap_or(0) + 1;
                    let got = consumers[who].fetch(max).await.expect("fetch");
                    held.entry(who).or_default().extend(got);
                }
                3 => {
                    let mine = held.entry(who).or_default();
                    let k = usize::try_from(rng.next(mine.len() as u64 + 1)).unwrap_or(0);
                    let done: Vec<String> = mine.drain(..k).collect();
                    consumers[who].in_flight().ack(&done).await.expect("ack");
                    acked.extend(done);
                }
                _ => {
                    // The consumer dies: its heartbeat lapses and the reaper runs.
                    consumers[who]
                        .in_flight()
                        .heartbeat(Duration::from_millis(1))
                        .await
                        .expect("heartbeat");
                    testkit::wait_out(Duration::from_millis(5), "the 1 ms heartbeat lapses").await;
                    queue.reap().await.expect("reap");
                    held.remove(&who);
                    consumers[who]
                        .in_flight()
                        .heartbeat(Duration::from_secs(30))
                        .await
                        .expect("heartbeat");
                }
            }
            // The property: every pushed id is acked, ready, or in exactly one in-flight list.
            let mut everywhere: Vec<String> = ready(&redis, &queue).await;
            everywhere.extend(fair(&redis, &queue).await);
            for consumer in &consumers {
                everywhere.extend(consumer.in_flight().ids().await.expect("inflight"));
            }
            everywhere.extend(acked.iter().cloned());
            let unique: BTreeSet<&String> = everywhere.iter().collect();
            assert_eq!(
                unique.len(),
                everywhere.len(),
                "seed {seed}: an id is in two places"
            );
            assert_eq!(
                everywhere.len(),
                pushed as usize,
                "seed {seed}: an id was lost"
            );
        }
        cleanup(&redis).await;
    }
}
