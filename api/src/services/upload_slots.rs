//! At most `UPLOAD_MAX_IN_FLIGHT` uploads in flight per account, across every api
//! replica: without it one verified account could hold any number of connections for
//! the whole `UPLOAD_TIMEOUT_SECS` by trickling bytes. Each upload takes a slot — a
//! member of the account's sorted set in Redis, scored by when it expires (the upload
//! timeout, so a replica that dies mid-upload frees its slots by then) — and gives it
//! back when its request ends, however it ends. Past the cap: 429 `rate_limited` with
//! `Retry-After`, before a byte of the body is read.
//!
//! Redis unreachable: uploads go through without a slot (fail open, like the rate
//! limiter, logged and counted in `conveyor_rate_limit_skipped_total{group="uploads"}`);
//! the upload timeout still bounds each one.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shared::redis::Redis;
use shared::telemetry::metric;
use uuid::Uuid;

use crate::error::ApiError;

/// Drops expired slots, then takes one if fewer than `ARGV[4]` are held. Returns 1
/// when taken, else 0.
const TAKE: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
";

/// How long a refused client is asked to wait: uploads end at times nobody knows, and
/// a slot is free the moment one does.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// A slot held for one upload; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    redis: Redis,
    key: String,
    member: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (redis, key, member) = (
            self.redis.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.member),
        );
        // Dropping cannot wait for Redis; a slot not given back expires with its score.
        tokio::spawn(async move {
            let mut conn = redis.connection();
            let freed: redis::RedisResult<i64> = redis::cmd("ZREM")
                .arg(&key)
                .arg(&member)
                .query_async(&mut conn)
                .await;
            if let Err(err) = freed {
                tracing::debug!(error = %err, "cannot give an upload slot back; it expires");
            }
        });
    }
}

fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Takes one of `owner`'s `cap` slots for an upload that may last `timeout`; `None`
/// when Redis cannot say (fail open).
pub async fn take(
    redis: &Redis,
    owner: Uuid,
    cap: u32,
    timeout: Duration,
) -> Result<Option<Slot>, ApiError> {
    static SCRIPT: OnceLock<redis::Script> = OnceLock::new();
    let script = SCRIPT.get_or_init(|| redis::Script::new(TAKE));
    let now = SystemTime::now();
    let key = redis.key(&format!("uploads-in-flight:{owner}"));
    let member = Uuid::new_v4().simple().to_string();
    let mut conn = redis.connection();
    let taken: redis::RedisResult<i64> = script
        .key(&key)
        .arg(millis(now))
        .arg(millis(now + timeout + Duration::from_secs(5)))
        .arg(&member)
        .arg(cap)
        .invoke_async(&mut conn)
        .await;
    match taken {
        Ok(1) => Ok(Some(Slot {
            redis: redis.clone(),
            key,
            member,
        })),
        Ok(_) => {
            metrics::counter!(metric::RATE_LIMITED_TOTAL, "group" => "uploads").increment(1);
            Err(ApiError::TooManyInFlight {
                limit: cap,
                retry_after: RETRY_AFTER,
            })
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot count uploads in flight; letting this one through");
            metrics::counter!(metric::RATE_LIMIT_SKIPPED_TOTAL, "group" => "uploads").increment(1);
            Ok(None)
        }
    }
}
