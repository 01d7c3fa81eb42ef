//! Attempt counters in Redis, shared by the login throttle ([`super::lockout`]) and the
//! second-factor limit ([`super::factor_limit`]).
//!
//! An attempt is *reserved* before it is judged: one Lua script checks every counter
//! and, if none is at its limit, increments them all, atomically, so N simultaneous
//! attempts get at most `limit` checks, never N. Nothing is counted on a refusal, so
//! refused attempts do not extend a lock. Each counter lives in a fixed window that
//! starts with its first attempt (`EXPIRE … NX`), so a lock never outlives the window.
//! An attempt that was right, or never judged, is *given back* afterwards; a wrong one
//! stays counted.
//!
//! What to do when Redis is unreachable (count nothing, or refuse) is the caller's
//! choice: every call returns the Redis error.
//!
//! On a Redis Cluster the keys of one call must share a hash slot (a script runs on
//! one node): callers give them a common hash tag (checked in debug builds).

use std::sync::LazyLock;
use std::time::Duration;

use redis::{RedisResult, Script};
use shared::redis::Redis;

/// KEYS: the counters, then (when ARGV[2] > 0) a marker. ARGV: window (s), the index
/// of the counter whose limit the marker waives (0: none), then one limit per counter.
/// Returns `{1}` when counted, `{0, ttl}` with the tripped counter's remaining seconds
/// when refused (the window when it has no expiry).
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local waived = tonumber(ARGV[2])
local counters = #ARGV - 2
if waived > 0 and redis.call('EXISTS', KEYS[counters + 1]) == 0 then
  waived = 0
end
for i = 1, counters do
  if i ~= waived then
    local count = tonumber(redis.call('GET', KEYS[i]) or '0')
    if count >= tonumber(ARGV[i + 2]) then
      local ttl = redis.call('TTL', KEYS[i])
      if ttl < 0 then ttl = tonumber(ARGV[1]) end
      return {0, ttl}
    end
  end
end
for i = 1, counters do
  redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[1], 'NX')
end
return {1}
",
    )
});

/// KEYS: the counters to clear, then those to give one attempt back to, then (when
/// ARGV[2] > 0) a marker to set for ARGV[2] seconds. ARGV[1]: how many are cleared.
/// A counter that has expired meanwhile is left absent rather than recreated without
/// a window; none goes below zero.
static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cleared = tonumber(ARGV[1])
local marker_ttl = tonumber(ARGV[2])
local counters = #KEYS
if marker_ttl > 0 then counters = counters - 1 end
for i = 1, counters do
  if i <= cleared then
    redis.call('DEL', KEYS[i])
  elseif tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then
    redis.call('DECR', KEYS[i])
  end
end
if marker_ttl > 0 then
  redis.call('SET', KEYS[#KEYS], '1', 'EX', marker_ttl)
end
return 0
",
    )
});

/// Counters of one kind of attempt, all in the same window.
#[derive(Debug, Clone)]
pub struct Attempts {
    redis: Redis,
    window: Duration,
}

/// What [`Attempts::reserve`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// Counted on every counter: go ahead and judge it.
    Counted,
    /// A counter is at its limit; nothing was counted.
    Refused { retry_after: Duration },
}

/// A counter's limit that does not apply while `marker` exists (the counter still
/// counts). Markers are set by [`Attempts::settle`].
#[derive(Debug, Clone, Copy)]
pub struct Waiver<'a> {
    /// Index into the counters given to [`Attempts::reserve`].
    pub counter: usize,
    pub marker: &'a str,
}

impl Attempts {
    pub fn new(redis: Redis, window: Duration) -> Self {
        Attempts { redis, window }
    }

    /// `"{prefix}:{name}"`, for counter and marker keys.
    pub fn key(&self, name: &str) -> String {
        self.redis.key(name)
    }

    /// Counts one attempt on every counter (a key and the attempts it allows per
    /// window), or counts nothing when one of them is at its limit.
    pub async fn reserve(
        &self,
        counters: &[(&str, u32)],
        waiver: Option<Waiver<'_>>,
    ) -> RedisResult<Reserved> {
        debug_assert!(
            shared::redis::same_slot(
                &counters
                    .iter()
                    .map(|(key, _)| *key)
                    .chain(waiver.map(|w| w.marker))
                    .collect::<Vec<_>>()
            ),
            "the keys of one reservation must share a hash slot"
        );
        let mut invocation = RESERVE.prepare_invoke();
        for (key, _) in counters {
            invocation.key(*key);
        }
        invocation.arg(self.window.as_secs());
        match waiver {
            Some(waiver) => {
                invocation.key(waiver.marker);
                invocation.arg(waiver.counter + 1);
            }
            None => {
                invocation.arg(0);
            }
        }
        for (_, limit) in counters {
            invocation.arg(*limit);
        }
        let reply: Vec<i64> = invocation
            .invoke_async(&mut self.redis.connection())
            .await?;
        if reply.first() == Some(&1) {
            return Ok(Reserved::Counted);
        }
        let ttl = reply.get(1).copied().unwrap_or(0);
        Ok(Reserved::Refused {
            retry_after: Duration::from_secs(u64::try_from(ttl).unwrap_or(0).max(1)),
        })
    }

    /// Gives one reserved attempt back to each of `counters`.
    pub async fn give_back(&self, counters: &[&str]) -> RedisResult<()> {
        self.settle(&[], counters, None).await
    }

    /// Settles a reserved attempt in one step: clears `cleared`, gives the attempt back
    /// to `given_back`, and sets `marker` (a [`Waiver`]'s) for its duration.
    pub async fn settle(
        &self,
        cleared: &[&str],
        given_back: &[&str],
        marker: Option<(&str, Duration)>,
    ) -> RedisResult<()> {
        debug_assert!(
            shared::redis::same_slot(
                &cleared
                    .iter()
                    .chain(given_back)
                    .copied()
                    .chain(marker.map(|(key, _)| key))
                    .collect::<Vec<_>>()
            ),
            "the keys of one settlement must share a hash slot"
        );
        let mut invocation = SETTLE.prepare_invoke();
        for key in cleared.iter().chain(given_back) {
            invocation.key(*key);
        }
        invocation.arg(cleared.len());
        // A marker that would expire at once is not set at all.
        match marker.filter(|(_, ttl)| ttl.as_secs() > 0) {
            Some((key, ttl)) => {
                invocation.key(key);
                invocation.arg(ttl.as_secs());
            }
            None => {
                invocation.arg(0);
            }
        }
        invocation
            .invoke_async::<()>(&mut self.redis.connection())
            .await
    }
}
