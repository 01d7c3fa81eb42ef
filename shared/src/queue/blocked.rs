//! Which queues a worker found blocked on a down dependency (its gate closed; see the
//! worker's `gate`), kept in Redis for operators: per queue, a sorted set of the
//! blocking workers' records, each scored by when it expires unless its probe renews
//! it, so a worker that died while blocked stops counting on its own.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::QueueName;
use crate::redis::Redis;

/// Why and since when a queue is blocked in one worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocked {
    pub dependency: String,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    pub worker: String,
}

fn key(redis: &Redis, queue: QueueName) -> String {
    redis.key(&format!("blocked:{queue}"))
}

fn millis(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Records (or renews) `block` of `queue` until `until`.
pub async fn record(
    redis: &Redis,
    queue: QueueName,
    block: &Blocked,
    until: OffsetDateTime,
) -> redis::RedisResult<()> {
    let member = serde_json::to_string(block).unwrap_or_default();
    let mut conn = redis.connection();
    redis::cmd("ZADD")
        .arg(key(redis, queue))
        .arg(millis(until))
        .arg(member)
        .query_async(&mut conn)
        .await
}

/// Forgets `block` of `queue` (its dependency answers again).
pub async fn clear(redis: &Redis, queue: QueueName, block: &Blocked) -> redis::RedisResult<()> {
    let member = serde_json::to_string(block).unwrap_or_default();
    let mut conn = redis.connection();
    redis::cmd("ZREM")
        .arg(key(redis, queue))
        .arg(member)
        .query_async(&mut conn)
        .await
}

/// The live blocks of `queue`, earliest first.
pub async fn of(redis: &Redis, queue: QueueName) -> redis::RedisResult<Vec<Blocked>> {
    let now = millis(OffsetDateTime::now_utc());
    let mut conn = redis.connection();
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(key(redis, queue))
        .arg(now)
        .arg("+inf")
        .arg("BYSCORE")
        .query_async(&mut conn)
        .await?;
    let mut blocks: Vec<Blocked> = members
        .iter()
        .filter_map(|member| serde_json::from_str(member).ok())
        .collect();
    blocks.sort_by_key(|b| b.since);
    // Expired records go with the next read.
    let _: redis::RedisResult<()> = redis::cmd("ZREMRANGEBYSCORE")
        .arg(key(redis, queue))
        .arg("-inf")
        .arg(format!("({now}"))
        .query_async(&mut conn)
        .await;
    Ok(blocks)
}
