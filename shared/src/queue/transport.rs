//! Conveyor's reliable Redis queue (the "reliable queue" pattern). Per queue `<q>`,
//! under the prefix `<p>` (`REDIS_PREFIX`); the braces are literal:
//!
//! - `<p>:queue:{<q>}:ready` — the **priority lane**: a list of job ids; producers
//!   `LPUSH`, consumers take from the right, so it is FIFO. Transactional work (a
//!   single email, an account email, an upload) goes here.
//! - `<p>:queue:{<q>}:fair` — the **fair lane** for bulk work (a campaign's messages):
//!   a sorted set of job ids scored by virtual time, so that owners take turns. Each
//!   owner's next virtual time is kept in `…:fair:owners` (a sorted set of owners) and
//!   the lane's clock — the score of the last id taken — in `…:fair:clock`. A batch
//!   of `n` ids from an owner is scored `t+1 … t+n` where `t` is the larger of the
//!   owner's next time and the clock: an owner arriving behind another's 100,000 ids
//!   is interleaved with them one for one instead of waiting for them all (start-time
//!   fair queuing with one unit per job). Owners whose time the clock has passed are
//!   forgotten, so the set holds only owners with work queued.
//! - `<p>:queue:{<q>}:inflight:<worker>` — each consumer moves ids here, the priority
//!   lane first and then the fair lane, with one script per fetch, and removes them once
//!   the job's outcome is recorded in PostgreSQL. The list is the consumer's own, so
//!   removal scans at most its concurrency, never the whole queue. A bulk job that a
//!   dead consumer held comes back on the priority lane (it already had its turn).
//! - `<p>:queue:{<q>}:wake` — a list of tokens: every push adds some (one per id, at
//!   most [`WAKE_TOKENS`]) after its ids, an idle consumer waits on it with `BLPOP`
//!   then fetches, and a fetch that finds both lanes empty deletes it (any later push
//!   adds a fresh token, so no wake-up is lost); a fetch that fills its batch with
//!   work left passes a token on to the next idle consumer.
//! - `<p>:queue:{<q>}:workers` and `<p>:queue:{<q>}:alive:<worker>` — consumers
//!   register and keep a heartbeat key with a TTL; [`Queue::reap`] moves the in-flight
//!   ids of a consumer whose heartbeat expired back to the ready list, oldest first.
//! - `<p>:queue:{<q>}:delayed` — a sorted set of ids by due time (retries, scheduled
//!   sends); a fair-lane id is stored as `<id>@<owner>`. Promoted to its lane in
//!   bounded chunks by a Lua script with a `LIMIT`, so a backlog of any size never hits
//!   Lua's `unpack` limit.
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

/// Wake tokens a push adds at most (one per id); the wake list is capped at this.
pub const WAKE_TOKENS: usize = 64;

/// Lua: push ids ARGV[3..] of owner ARGV[1] to the fair lane (KEYS[1] the lane, KEYS[2]
/// its clock, KEYS[3] the owners' next times), then ARGV[2] wake tokens (KEYS[4]).
/// Shared by the push and the promotion scripts.
const FAIR_PUSH_FN: &str = r"
local function fair_push(lane, clock, owners, owner, ids)
  local now = tonumber(redis.call('GET', clock) or '0')
  local t = tonumber(redis.call('ZSCORE', owners, owner) or '0')
  if t < now then t = now end
  local members = {}
  for i = 1, #ids do
    t = t + 1
    members[#members + 1] = t
    members[#members + 1] = ids[i]
  end
  if #members > 0 then
    redis.call('ZADD', lane, unpack(members))
    redis.call('ZADD', owners, t, owner)
  end
end
local function wake(key, n)
  if n > 0 then
    local tokens = {}
    for i = 1, n do tokens[i] = '1' end
    redis.call('LPUSH', key, unpack(tokens))
    redis.call('LTRIM', key, 0, tonumber(ARGV_WAKE_CAP) - 1)
  end
end
";

/// Pushes ids of one owner to the fair lane: KEYS = fair, clock, owners, wake; ARGV =
/// owner, wake tokens, ids…
const PUSH_FAIR: &str = r"
local ids = {}
for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
fair_push(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ids)
wake(KEYS[4], tonumber(ARGV[2]))
return #ids
";

/// Moves up to ARGV[1] ids to a consumer's in-flight list, the priority lane first,
/// then the fair lane in score order. KEYS = ready, in-flight, fair, clock, owners,
/// wake. Deletes the wake list when both lanes are empty; passes a token on when the
/// batch is full and work is left.
const TAKE: &str = r"
local max = tonumber(ARGV[1])
local moved = {}
while #moved < max do
  local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not id then break end
  moved[#moved + 1] = id
end
if #moved < max then
  local popped = redis.call('ZPOPMIN', KEYS[3], max - #moved)
  local last = nil
  for i = 1, #popped, 2 do
    moved[#moved + 1] = popped[i]
    redis.call('LPUSH', KEYS[2], popped[i])
    last = popped[i + 1]
  end
  if last then
    redis.call('SET', KEYS[4], last)
    redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. last)
  end
end
if #moved == 0 then
  redis.call('DEL', KEYS[6])
elseif #moved == max and (redis.call('LLEN', KEYS[1]) > 0 or redis.call('ZCARD', KEYS[3]) > 0) then
  redis.call('LPUSH', KEYS[6], '1')
end
return moved
";

/// Promotes due ids (score <= ARGV[1]) from delayed to their lane, at most ARGV[2] per
/// call: `<id>@<owner>` to the fair lane as the owner's, a bare id to ready. KEYS =
/// delayed, ready, fair, clock, owners, wake. Returns how many moved.
const PROMOTE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #due == 0 then return 0 end
redis.call('ZREM', KEYS[1], unpack(due))
local ready, by_owner, order = {}, {}, {}
for _, member in ipairs(due) do
  local at = string.find(member, '@', 1, true)
  if at then
    local owner = string.sub(member, at + 1)
    if not by_owner[owner] then
      by_owner[owner] = {}
      order[#order + 1] = owner
    end
    table.insert(by_owner[owner], string.sub(member, 1, at - 1))
  else
    ready[#ready + 1] = member
  end
end
if #ready > 0 then redis.call('LPUSH', KEYS[2], unpack(ready)) end
for _, owner in ipairs(order) do
  fair_push(KEYS[3], KEYS[4], KEYS[5], owner, by_owner[owner])
end
wake(KEYS[6], math.min(#due, tonumber(ARGV_WAKE_CAP)))
return #due
";

/// Moves up to ARGV[1] ids from an in-flight list back to ready, keeping their order
/// (the oldest ends next in line), and wakes consumers (KEYS[3]). Returns how many
/// moved.
const REQUEUE: &str = r"
local n = 0
for i = 1, tonumber(ARGV[1]) do
  local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  if not id then break end
  n = n + 1
end
wake(KEYS[3], math.min(n, tonumber(ARGV_WAKE_CAP)))
return n
";

/// A script with the shared Lua functions in front of `body`.
fn script(body: &str) -> redis::Script {
    let prelude = FAIR_PUSH_FN.replace("ARGV_WAKE_CAP", &WAKE_TOKENS.to_string());
    redis::Script::new(&format!(
        "{prelude}\n{}",
        body.replace("ARGV_WAKE_CAP", &WAKE_TOKENS.to_string())
    ))
}

static PUSH_FAIR_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| script(PUSH_FAIR));
static TAKE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| script(TAKE));
static PROMOTE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| script(PROMOTE));
static REQUEUE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| script(REQUEUE));

/// Which lane of a queue a job travels in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// First come, first served, ahead of any bulk work.
    Priority,
    /// Bulk work of this owner, taking turns with other owners' bulk work.
    Fair(uuid::Uuid),
}

impl Lane {
    /// `Fair(owner)` when `owner` is given, else `Priority` (a job row's `lane_owner`).
    pub fn of(owner: Option<uuid::Uuid>) -> Lane {
        owner.map_or(Lane::Priority, Lane::Fair)
    }

    /// The lane's owner, if it is a fair lane (what a job row stores).
    pub fn owner(self) -> Option<uuid::Uuid> {
        match self {
            Lane::Priority => None,
            Lane::Fair(owner) => Some(owner),
        }
    }

    /// The member the delayed set holds for `id` in this lane.
    fn delayed_member(self, id: &str) -> String {
        match self {
            Lane::Priority => id.to_owned(),
            Lane::Fair(owner) => format!("{id}@{owner}"),
        }
    }
}

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

    pub fn fair_key(&self) -> String {
        self.queue_key("fair")
    }

    pub fn fair_clock_key(&self) -> String {
        self.queue_key("fair:clock")
    }

    pub fn fair_owners_key(&self) -> String {
        self.queue_key("fair:owners")
    }

    pub fn wake_key(&self) -> String {
        self.queue_key("wake")
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

    /// Appends ids to the priority lane, in order.
    pub async fn push<S: AsRef<str>>(&self, ids: &[S]) -> redis::RedisResult<()> {
        self.push_to(Lane::Priority, ids).await
    }

    /// Appends ids to `lane`, in order, and wakes idle consumers.
    pub async fn push_to<S: AsRef<str>>(&self, lane: Lane, ids: &[S]) -> redis::RedisResult<()> {
        let mut conn = self.redis.connection();
        for chunk in ids.chunks(PUSH_CHUNK) {
            let chunk: Vec<&str> = chunk.iter().map(AsRef::as_ref).collect();
            let tokens = chunk.len().min(WAKE_TOKENS);
            match lane {
                Lane::Priority => {
                    // One round trip; the ids go in before the tokens that announce them.
                    redis::pipe()
                        .lpush(self.ready_key(), &chunk)
                        .ignore()
                        .lpush(self.wake_key(), vec!["1"; tokens])
                        .ignore()
                        .ltrim(self.wake_key(), 0, WAKE_TOKENS as isize - 1)
                        .ignore()
                        .query_async::<()>(&mut conn)
                        .await?;
                }
                Lane::Fair(owner) => {
                    let mut invocation = PUSH_FAIR_SCRIPT.key(self.fair_key());
                    invocation
                        .key(self.fair_clock_key())
                        .key(self.fair_owners_key())
                        .key(self.wake_key())
                        .arg(owner.to_string())
                        .arg(tokens)
                        .arg(&chunk);
                    invocation.invoke_async::<usize>(&mut conn).await?;
                }
            }
        }
        Ok(())
    }

    /// Schedules ids of the priority lane to become ready at `at`.
    pub async fn schedule<S: AsRef<str>>(
        &self,
        items: &[(S, SystemTime)],
    ) -> redis::RedisResult<()> {
        self.schedule_in(Lane::Priority, items).await
    }

    /// Schedules ids to go to `lane` at `at`.
    pub async fn schedule_in<S: AsRef<str>>(
        &self,
        lane: Lane,
        items: &[(S, SystemTime)],
    ) -> redis::RedisResult<()> {
        let mut conn = self.redis.connection();
        let delayed = self.delayed_key();
        for chunk in items.chunks(PUSH_CHUNK) {
            let members: Vec<(u64, String)> = chunk
                .iter()
                .map(|(id, at)| (millis(*at), lane.delayed_member(id.as_ref())))
                .collect();
            conn.zadd_multiple::<_, _, _, ()>(&delayed, &members)
                .await?;
        }
        Ok(())
    }

    /// Moves every id due by `now` to its lane, `MOVE_CHUNK` per script call.
    pub async fn promote_due(&self, now: SystemTime) -> redis::RedisResult<usize> {
        self.in_chunks(
            &PROMOTE_SCRIPT,
            &[
                self.delayed_key(),
                self.ready_key(),
                self.fair_key(),
                self.fair_clock_key(),
                self.fair_owners_key(),
                self.wake_key(),
            ],
            Some(millis(now)),
        )
        .await
    }

    /// Runs a moving script (`keys`, optional `ARGV[1]`, then the chunk size) until a
    /// call moves less than a full chunk; returns the total moved.
    async fn in_chunks(
        &self,
        script: &redis::Script,
        keys: &[String],
        arg: Option<u64>,
    ) -> redis::RedisResult<usize> {
        let mut conn = self.redis.connection();
        let mut total = 0;
        loop {
            let mut invocation = script.prepare_invoke();
            for key in keys {
                invocation.key(key);
            }
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
            .in_chunks(
                &REQUEUE_SCRIPT,
                &[self.inflight_key(worker), self.ready_key(), self.wake_key()],
                None,
            )
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

    /// Ids waiting in both lanes, and in the delayed set (for metrics).
    pub async fn depth(&self) -> redis::RedisResult<(u64, u64)> {
        let (priority, fair, delayed) = self.lane_depths().await?;
        Ok((priority + fair, delayed))
    }

    /// Ids waiting in the priority lane, the fair lane and the delayed set.
    pub async fn lane_depths(&self) -> redis::RedisResult<(u64, u64, u64)> {
        let mut conn = self.redis.connection();
        redis::pipe()
            .llen(self.ready_key())
            .zcard(self.fair_key())
            .zcard(self.delayed_key())
            .query_async(&mut conn)
            .await
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

    /// Takes up to `max` ids without waiting, the priority lane first; if there are
    /// none, waits up to the blocking timeout for a wake token, then tries again. Ids
    /// land in this consumer's in-flight list first, so a crash loses none of them.
    /// A busy queue costs one round trip per fetch, an idle one blocks.
    pub async fn fetch(&mut self, max: usize) -> redis::RedisResult<Vec<String>> {
        let max = max.max(1);
        let taken = self.take(max).await?;
        if !taken.is_empty() {
            return Ok(taken);
        }
        let woken: Option<(String, String)> = self
            .blocking
            .blpop(self.in_flight.queue.wake_key(), self.block.as_secs_f64())
            .await?;
        if woken.is_none() {
            return Ok(Vec::new());
        }
        self.take(max).await
    }

    /// Moves up to `max` ids from the lanes to in flight, without waiting.
    async fn take(&mut self, max: usize) -> redis::RedisResult<Vec<String>> {
        let queue = &self.in_flight.queue;
        let mut invocation = TAKE_SCRIPT.key(queue.ready_key());
        invocation
            .key(&self.in_flight.key)
            .key(queue.fair_key())
            .key(queue.fair_clock_key())
            .key(queue.fair_owners_key())
            .key(queue.wake_key())
            .arg(max);
        invocation.invoke_async(&mut self.blocking).await
    }
}
