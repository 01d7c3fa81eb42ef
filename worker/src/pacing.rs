//! Per recipient domain pacing, so a campaign to one mailbox provider stays inside
//! what that provider accepts from one sender:
//!
//! - **messages per second**, across every worker: a counter per domain and second
//!   in Redis (one script call per message). Over the rate, a send waits for the
//!   next second (at most [`MAX_WAIT`] in all), then is deferred;
//! - **sends in flight**, per worker process: a semaphore per domain, so one domain
//!   cannot take every executor slot (the others keep sending);
//! - **backoff after a 4xx**: a deferral (`421`, `450`, `451`, …) pauses the domain for
//!   every worker, `EMAIL_DOMAIN_BACKOFF_SECS` doubled for each further deferral while
//!   the pause lasts, up to `EMAIL_DOMAIN_BACKOFF_CAP_SECS`; messages to it are
//!   deferred until then without spending an attempt.
//!
//! Domains without a configured pace (`EMAIL_DOMAIN_PACE`, defaults for the large
//! providers; `EMAIL_DOMAIN_DEFAULT_PACE` for the rest, unlimited unless set) pass
//! straight through. Redis unreachable: the rate and the backoff are skipped (logged),
//! as for `EMAILS_PER_SECOND`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use shared::config::Pacing;
use shared::redis::Redis;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The longest a send waits for its domain's next second before it is deferred.
pub const MAX_WAIT: Duration = Duration::from_secs(2);

/// Counts a send against its domain's second; returns the count, or -1 while the
/// domain is backing off (then the second value is the pause left, in ms).
/// KEYS: the second's counter, the backoff key. ARGV: none.
const ADMIT: &str = r"
local left = redis.call('PTTL', KEYS[2])
if left > 0 then return {-1, left} end
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], 2) end
return {n, 0}
";

/// A 4xx from the domain: pause it, longer for each deferral while paused.
/// KEYS: the backoff key, the deferral counter. ARGV: base ms, cap ms.
const BACK_OFF: &str = r"
local n = redis.call('INCR', KEYS[2])
local base = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local pause = base
for _ = 2, math.min(n, 20) do pause = math.min(pause * 2, cap) end
pause = math.min(pause, cap)
redis.call('SET', KEYS[1], n, 'PX', pause)
redis.call('PEXPIRE', KEYS[2], pause + cap)
return pause
";

/// Why a send must wait: run it again at `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deferral {
    pub until: SystemTime,
    pub reason: String,
}

pub struct Pacer {
    redis: Redis,
    pacing: Pacing,
    admit: redis::Script,
    back_off: redis::Script,
    in_flight: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// What a send holds while it runs: its domains' in-flight places.
pub struct Admission {
    _permits: Vec<OwnedSemaphorePermit>,
}

impl Pacer {
    pub fn new(redis: Redis, pacing: Pacing) -> Self {
        Pacer {
            redis,
            pacing,
            admit: redis::Script::new(ADMIT),
            back_off: redis::Script::new(BACK_OFF),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// Waits (briefly) until a message to `domains` may go, or says when to try again.
    pub async fn admit(&self, domains: &[&str]) -> Result<Admission, Deferral> {
        let mut permits = Vec::new();
        for &domain in domains {
            let pace = self.pacing.pace_of(domain);
            if pace.connections > 0 {
                permits.push(self.in_flight_place(domain, pace.connections).await?);
            }
            if pace.per_second > 0 {
                self.take_second(domain, pace.per_second).await?;
            } else {
                // Unpaced domains still honour a backoff their own deferrals started.
                self.backing_off(domain).await?;
            }
        }
        Ok(Admission { _permits: permits })
    }

    /// A 4xx deferral from `domain`: pause it for every worker.
    pub async fn deferred_by(&self, domain: &str) {
        let mut conn = self.redis.connection();
        let result: Result<i64, _> = self
            .back_off
            .key(self.key(domain, "backoff"))
            .key(self.key(domain, "deferrals"))
            .arg(millis(self.pacing.backoff))
            .arg(millis(self.pacing.backoff_cap))
            .invoke_async(&mut conn)
            .await;
        match result {
            Ok(pause) => tracing::warn!(
                domain,
                pause_ms = pause,
                "recipient domain deferred mail; pausing it"
            ),
            Err(err) => {
                tracing::warn!(error = %err, domain, "cannot record a domain's backoff: Redis unavailable")
            }
        }
    }

    fn key(&self, domain: &str, what: &str) -> String {
        self.redis.key(&format!("pace:{domain}:{what}"))
    }

    async fn in_flight_place(
        &self,
        domain: &str,
        connections: u32,
    ) -> Result<OwnedSemaphorePermit, Deferral> {
        let semaphore = match self.in_flight.lock() {
            Ok(mut map) => map
                .entry(domain.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(connections as usize)))
                .clone(),
            Err(_) => Arc::new(Semaphore::new(connections as usize)),
        };
        match tokio::time::timeout(MAX_WAIT, semaphore.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Deferral {
                until: SystemTime::now() + Duration::from_secs(1),
                reason: format!("{domain}: {connections} sends in flight on this worker"),
            }),
        }
    }

    /// One message of `domain`'s rate, waiting for the next second while it is spent.
    async fn take_second(&self, domain: &str, per_second: u32) -> Result<(), Deferral> {
        let waited_until = SystemTime::now() + MAX_WAIT;
        loop {
            let now = SystemTime::now();
            let since_epoch = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            let second = since_epoch.as_secs();
            let mut conn = self.redis.connection();
            let result: Result<(i64, i64), _> = self
                .admit
                .key(self.key(domain, &second.to_string()))
                .key(self.key(domain, "backoff"))
                .invoke_async(&mut conn)
                .await;
            let count = match result {
                Ok((-1, left)) => {
                    return Err(Deferral {
                        until: now + Duration::from_millis(u64::try_from(left).unwrap_or(1000)),
                        reason: format!("{domain} deferred mail lately; backing off"),
                    });
                }
                Ok((count, _)) => count,
                Err(err) => {
                    tracing::warn!(error = %err, domain, "domain pace skipped: Redis unavailable");
                    return Ok(());
                }
            };
            if count <= i64::from(per_second) {
                return Ok(());
            }
            let next_second = SystemTime::UNIX_EPOCH + Duration::from_secs(second + 1);
            if next_second > waited_until {
                return Err(Deferral {
                    until: next_second,
                    reason: format!("{domain}: {per_second} messages per second spent"),
                });
            }
            tokio::time::sleep(next_second.duration_since(now).unwrap_or_default()).await;
        }
    }

    /// Whether `domain` is paused after a deferral (an unpaced domain).
    async fn backing_off(&self, domain: &str) -> Result<(), Deferral> {
        use redis::AsyncCommands as _;
        let mut conn = self.redis.connection();
        let left: Result<i64, _> = conn.pttl(self.key(domain, "backoff")).await;
        match left {
            Ok(left) if left > 0 => Err(Deferral {
                until: SystemTime::now() + Duration::from_millis(left.unsigned_abs()),
                reason: format!("{domain} deferred mail lately; backing off"),
            }),
            _ => Ok(()),
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
