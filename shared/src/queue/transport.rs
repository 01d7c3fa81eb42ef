//! Conveyor's reliable Redis queue (the "reliable queue" pattern). Per queue `<q>`,
//! under the prefix `<p>` (`REDIS_PREFIX`); the braces are literal:
//!
//! - `<p>:queue:{<q>}:ready` — a list of job ids; producers `LPUSH`, consumers take
//!   from the right, so it is FIFO.
//! - `<p>:queue:{<q>}:inflight:<worker>` — each consumer moves ids here with a
//!   blocking `BLMOVE` (several at once with `LMOVE` when busy) and removes them once
//!   the job's outcome is recorded in PostgreSQL. The list is the consumer's own, so
//!   removal scans at most its concurrency, never the whole queue.
//! - `<p>:queue:{<q>}:workers` and `<p>:queue:{<q>}:alive:<worker>` — consumers
//!   register and keep a heartbeat key with a TTL; [`Queue::reap`] moves the in-flight
//!   ids of a consumer whose heartbeat expired back to the ready list, oldest first.
//! - `<p>:queue:{<q>}:delayed` — a sorted set of ids by due time (retries); promoted to
//!   ready in bounded chunks by a Lua script with a `LIMIT`, so a backlog of any size
//!   never hits Lua's `unpack` limit.
//!
//! `{<q>}` is a Redis Cluster hash tag (e.g. `conveyor:queue:{emails}:ready`): a
//! cluster hashes only the part in braces, so every key of one queue is in one hash
//! slot and the scripts and pipelines here, which use several of them at once, are
//! valid on a cluster. One queue is therefore served by one node; different queues
//! hash to their own slots.
//!
//! Redis may lose any of this: PostgreSQL is the record and the api's reconciler
//! re-pushes jobs that are not claimed in time.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::AsyncCommands as _;

use super::QueueName;
use crate::redis::{Connection, Redis, hash_tag};

/// Ids per `LPUSH` / `ZADD` round trip.
const PUSH_CHUNK: usize = 1000;
/// Ids promoted or reaped per script call.
pub const MOVE_CHUNK: usize = 1000;

/// Moves up to `ARGV[1]` ids from ready to a consumer's in-flight list.
const TAKE_MORE: &str = r"
local moved = {}
for i = 1, tonumber(ARGV[1]) do
  local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not id then break end
  moved[#moved + 1] = id
end
return moved
";

/// Promotes due ids (score <= ARGV[1]) from delayed to ready, at most ARGV[2] per call.
const PROMOTE: &str = r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #ids > 0 then
  redis.call('ZREM', KEYS[1], unpack(ids))
  redis.call('LPUSH', KEYS[2], unpack(ids))
end
return #ids
";

/// Moves up to ARGV[1] ids from an in-flight list back to ready, keeping their order
/// (the oldest ends next in line). Returns how many moved.
const REQUEUE: &str = r"
local n = 0
for i = 1, tonumber(ARGV[1]) do
  local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  if not id then break end
  n = n + 1
end
return n
";

/// One queue's keys and the operations producers and the reaper use.
#[derive(Clone, Debug)]
pub struct Queue {
    redis: Redis,
    name: QueueName,
}

fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Queue {
    pub fn new(redis: Redis, name: QueueName) -> Self {
        Queue { redis, name }
    }

    pub fn name(&self) -> QueueName {
        self.name
    }

    /// `<p>:queue:{<q>}:<name>`: a key of this queue, in its hash slot.
    fn queue_key(&self, name: &str) -> String {
        self.redis
            .key(&format!("queue:{}:{name}", hash_tag(self.name.as_str())))
    }

    pub fn ready_key(&self) -> String {
        self.queue_key("ready")
    }

    pub fn delayed_key(&self) -> String {
        self.queue_key("delayed")
    }

    pub fn workers_key(&self) -> String {
        self.queue_key("workers")
    }

    pub fn inflight_key(&self, worker: &str) -> String {
        self.queue_key(&format!("inflight:{worker}"))
    }

    pub fn alive_key(&self, worker: &str) -> String {
        self.queue_key(&format!("alive:{worker}"))
    }

    /// Appends ids to the ready list, in order.
    pub async fn push<S: AsRef<str>>(&self, ids: &[S]) -> redis::RedisResult<()> {
        let mut conn = self.redis.connection();
        let ready = self.ready_key();
        for chunk in ids.chunks(PUSH_CHUNK) {
            let chunk: Vec<&str> = chunk.iter().map(AsRef::as_ref).collect();
            conn.lpush::<_, _, ()>(&ready, chunk).await?;
        }
        Ok(())
    }

    /// Schedules ids to become ready at `at`.
    pub async fn schedule<S: AsRef<str>>(
        &self,
        items: &[(S, SystemTime)],
    ) -> redis::RedisResult<()> {
        let mut conn = self.redis.connection();
        let delayed = self.delayed_key();
        for chunk in items.chunks(PUSH_CHUNK) {
            let members: Vec<(u64, &str)> = chunk
                .iter()
                .map(|(id, at)| (millis(*at), id.as_ref()))
                .collect();
            conn.zadd_multiple::<_, _, _, ()>(&delayed, &members)
                .await?;
        }
        Ok(())
    }

    /// Moves every id due by `now` to ready, `MOVE_CHUNK` per script call.
    pub async fn promote_due(&self, now: SystemTime) -> redis::RedisResult<usize> {
        self.in_chunks(
            PROMOTE,
            [self.delayed_key(), self.ready_key()],
            Some(millis(now)),
        )
        .await
    }

    /// Runs a moving script (`KEYS[1]` → `KEYS[2]`, optional `ARGV[1]`, then the chunk
    /// size) until a call moves less than a full chunk; returns the total moved.
    async fn in_chunks(
        &self,
        source: &str,
        keys: [String; 2],
        arg: Option<u64>,
    ) -> redis::RedisResult<usize> {
        let mut conn = self.redis.connection();
        let script = redis::Script::new(source);
        let mut total = 0;
        loop {
            let mut invocation = script.key(&keys[0]);
            invocation.key(&keys[1]);
            if let Some(arg) = arg {
                invocation.arg(arg);
            }
            let moved: usize = invocation.arg(MOVE_CHUNK).invoke_async(&mut conn).await?;
            total += moved;
            if moved < MOVE_CHUNK {
                return Ok(total);
            }
        }
    }

    /// Returns the in-flight ids of consumers whose heartbeat expired to the ready
    /// list, and forgets those consumers. Returns how many ids moved.
    pub async fn reap(&self) -> redis::RedisResult<usize> {
        let mut conn = self.redis.connection();
        let workers: Vec<String> = conn.smembers(self.workers_key()).await?;
        let mut total = 0;
        for worker in workers {
            let alive: bool = conn.exists(self.alive_key(&worker)).await?;
            if alive {
                continue;
            }
            total += self.release(&worker).await?;
            tracing::warn!(queue = %self.name, worker = %worker, "reaped the jobs of a dead consumer");
        }
        Ok(total)
    }

    /// Registers consumer `worker` and (re)sets its heartbeat key for `ttl`.
    pub async fn heartbeat(&self, worker: &str, ttl: Duration) -> redis::RedisResult<()> {
        let mut conn = self.redis.connection();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        redis::pipe()
            .sadd(self.workers_key(), worker)
            .ignore()
            .cmd("SET")
            .arg(self.alive_key(worker))
            .arg(1)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
    }

    /// Puts every id consumer `worker` still holds back on the ready list, first in
    /// line, and unregisters it (a clean shutdown with unfinished work).
    pub async fn release(&self, worker: &str) -> redis::RedisResult<usize> {
        let total = self
            .in_chunks(REQUEUE, [self.inflight_key(worker), self.ready_key()], None)
            .await?;
        let mut conn = self.redis.connection();
        redis::pipe()
            .srem(self.workers_key(), worker)
            .ignore()
            .del(self.alive_key(worker))
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(total)
    }

    /// Consumers of this queue whose heartbeat is live (worker processes taking it).
    pub async fn workers_alive(&self) -> redis::RedisResult<u64> {
        let mut conn = self.redis.connection();
        let workers: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.workers_key())
            .query_async(&mut conn)
            .await?;
        if workers.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for worker in &workers {
            pipe.exists(self.alive_key(worker));
        }
        let alive: Vec<bool> = pipe.query_async(&mut conn).await?;
        Ok(alive.into_iter().filter(|a| *a).count() as u64)
    }

    /// Lengths of the ready list and the delayed set (for metrics).
    pub async fn depth(&self) -> redis::RedisResult<(u64, u64)> {
        let mut conn = self.redis.connection();
        let (ready, delayed): (u64, u64) = redis::pipe()
            .llen(self.ready_key())
            .zcard(self.delayed_key())
            .query_async(&mut conn)
            .await?;
        Ok((ready, delayed))
    }

    /// A consumer named `worker` (unique per process and queue), with a connection
    /// of its own for blocking moves of up to `block`.
    pub async fn consumer(&self, worker: &str, block: Duration) -> redis::RedisResult<Consumer> {
        let blocking = self.redis.dedicated(block).await?;
        Ok(Consumer {
            in_flight: self.in_flight(worker),
            blocking,
            block,
        })
    }

    /// Consumer `worker`'s in-flight list.
    pub fn in_flight(&self, worker: &str) -> InFlight {
        InFlight {
            queue: self.clone(),
            worker: worker.to_owned(),
            key: self.inflight_key(worker),
        }
    }
}

/// One consumer's in-flight list: the ids it took and has not acknowledged. Cheap to
/// clone; the completer acknowledges through it, shutdown releases it.
#[derive(Clone, Debug)]
pub struct InFlight {
    queue: Queue,
    worker: String,
    key: String,
}

impl InFlight {
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// Forgets ids whose outcome is recorded (or that were duplicates).
    pub async fn ack<S: AsRef<str>>(&self, ids: &[S]) -> redis::RedisResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.queue.redis.connection();
        let mut pipe = redis::pipe();
        for id in ids {
            // From the tail, where the oldest ids are: they finish first.
            pipe.lrem(&self.key, -1, id.as_ref()).ignore();
        }
        pipe.query_async::<()>(&mut conn).await
    }

    /// Puts every id still in flight back on the ready list (a clean shutdown with
    /// unfinished work) and unregisters the consumer.
    pub async fn release(&self) -> redis::RedisResult<usize> {
        self.queue.release(&self.worker).await
    }

    /// Registers the consumer and (re)sets its heartbeat key for `ttl`.
    pub async fn heartbeat(&self, ttl: Duration) -> redis::RedisResult<()> {
        self.queue.heartbeat(&self.worker, ttl).await
    }

    /// The ids held (tests and diagnostics).
    pub async fn ids(&self) -> redis::RedisResult<Vec<String>> {
        let mut conn = self.queue.redis.connection();
        conn.lrange(&self.key, 0, -1).await
    }
}

/// One worker's end of a queue: a blocking connection of its own for fetches, and
/// its in-flight list.
pub struct Consumer {
    in_flight: InFlight,
    blocking: Connection,
    block: Duration,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("queue", &self.in_flight.queue.name)
            .field("worker", &self.in_flight.worker)
            .finish()
    }
}

impl Consumer {
    pub fn worker(&self) -> &str {
        &self.in_flight.worker
    }

    pub fn queue(&self) -> &Queue {
        &self.in_flight.queue
    }

    pub fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    /// Replaces the blocking connection (after Redis went away and came back).
    pub async fn reconnect(&mut self) -> redis::RedisResult<()> {
        self.blocking = self.in_flight.queue.redis.dedicated(self.block).await?;
        Ok(())
    }

    /// Takes up to `max` ids without waiting; if there are none, waits up to the
    /// blocking timeout for one, then takes up to `max - 1` more without waiting. Ids
    /// land in this consumer's in-flight list first, so a crash loses none of them.
    /// A busy queue costs one round trip per fetch, an idle one blocks.
    pub async fn fetch(&mut self, max: usize) -> redis::RedisResult<Vec<String>> {
        let max = max.max(1);
        let ready = self.in_flight.queue.ready_key();
        let taken = self.take(&ready, max).await?;
        if !taken.is_empty() {
            return Ok(taken);
        }
        let first: Option<String> = self
            .blocking
            .blmove(
                &ready,
                &self.in_flight.key,
                redis::Direction::Right,
                redis::Direction::Left,
                self.block.as_secs_f64(),
            )
            .await?;
        let Some(first) = first else {
            return Ok(Vec::new());
        };
        let mut ids = vec![first];
        if max > 1 {
            ids.extend(self.take(&ready, max - 1).await?);
        }
        Ok(ids)
    }

    /// Moves up to `max` ids from ready to in flight, without waiting.
    async fn take(&mut self, ready: &str, max: usize) -> redis::RedisResult<Vec<String>> {
        static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(TAKE_MORE));
        SCRIPT
            .key(ready)
            .key(&self.in_flight.key)
            .arg(max)
            .invoke_async(&mut self.blocking)
            .await
    }
}
