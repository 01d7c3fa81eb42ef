//! Per recipient domain pacing, so a campaign to one mailbox provider stays inside
//! what that provider accepts from one sender:
//!
//! - **messages per second**, across every worker: a counter per domain and second
//!   in Redis (one script call per message). Over the rate, a send waits for the
//!   next second (at most [`MAX_WAIT`] in all), then is deferred;
//! - **sends in flight**, per worker process: a semaphore per domain, so one domain
//!   cannot take every executor slot (the others keep sending);
//! - **backoff after a 4xx**: a recipient's deferral (`450`, `451`, … to `RCPT TO`)
//!   pauses its domain for every worker, `EMAIL_DOMAIN_BACKOFF_SECS` doubled for each
//!   further deferral while the pause lasts, up to `EMAIL_DOMAIN_BACKOFF_CAP_SECS`;
//!   messages to it are deferred until then without spending an attempt. The paused
//!   domains are one Redis hash each worker reads at most every
//!   [`PAUSED_REFRESH`] (so a pause reaches every worker within that), not per message.
//!
//! Domains without a configured pace (`EMAIL_DOMAIN_PACE`, defaults for the large
//! providers; `EMAIL_DOMAIN_DEFAULT_PACE` for the rest, unlimited unless set) pass
//! straight through. Redis unreachable: the rate and the backoff are skipped (logged),
//! as for `EMAILS_PER_SECOND`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use shared::config::Pacing;
use shared::redis::Redis;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The longest a send waits for its domain's next second before it is deferred.
pub const MAX_WAIT: Duration = Duration::from_secs(2);

/// Counts a send against its domain's second. KEYS: the second's counter.
const COUNT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], 2) end
return n
";

/// How long a worker trusts its copy of the paused domains before reading them again.
pub const PAUSED_REFRESH: Duration = Duration::from_millis(500);

/// Why a send must wait: run it again at `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deferral {
    pub until: SystemTime,
    pub reason: String,
}

pub struct Pacer {
    redis: Redis,
    pacing: Pacing,
    count: redis::Script,
    in_flight: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Domains paused after a deferral (until, ms since the epoch), as read from Redis
    /// at most [`PAUSED_REFRESH`] ago: one read per worker and period, not per message.
    paused: tokio::sync::Mutex<(Option<Instant>, HashMap<String, u64>)>,
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
            count: redis::Script::new(COUNT),
            in_flight: Mutex::new(HashMap::new()),
            paused: tokio::sync::Mutex::new((None, HashMap::new())),
        }
    }

    /// Waits (briefly) until a message to `domains` may go, or says when to try again.
    pub async fn admit(&self, domains: &[&str]) -> Result<Admission, Deferral> {
        self.check_paused(domains).await?;
        let mut permits = Vec::new();
        for &domain in domains {
            let pace = self.pacing.pace_of(domain);
            if pace.connections > 0 {
                permits.push(self.in_flight_place(domain, pace.connections).await?);
            }
            if pace.per_second > 0 {
                self.take_second(domain, pace.per_second).await?;
            }
        }
        Ok(Admission { _permits: permits })
    }

    /// A 4xx deferral of a recipient of `domain`: pause the domain for every worker,
    /// twice as long as the last time while deferrals keep coming.
    pub async fn deferred_by(&self, domain: &str) {
        use redis::AsyncCommands as _;
        let mut conn = self.redis.connection();
        let counter = self.key(&format!("pace:{domain}:deferrals"));
        let recorded: redis::RedisResult<u64> = async {
            let n: u32 = conn.incr(&counter, 1).await?;
            let pause = self
                .pacing
                .backoff
                .saturating_mul(1 << n.saturating_sub(1).min(20))
                .min(self.pacing.backoff_cap);
            let until = epoch_millis(SystemTime::now() + pause);
            let keep = i64::try_from(millis(pause + self.pacing.backoff_cap)).unwrap_or(i64::MAX);
            let (): () = redis::pipe()
                .pexpire(&counter, keep)
                .ignore()
                .hset(self.key("pace:paused"), domain, until)
                .ignore()
                .query_async(&mut conn)
                .await?;
            Ok(until)
        }
        .await;
        match recorded {
            Ok(until) => {
                self.paused.lock().await.1.insert(domain.to_owned(), until);
                tracing::warn!(
                    domain,
                    until_ms = until,
                    "recipient domain deferred mail; pausing it"
                );
            }
            Err(err) => {
                tracing::warn!(error = %err, domain, "cannot record a domain's backoff: Redis unavailable")
            }
        }
    }

    /// Defers if one of `domains` is paused, from this worker's copy of the paused
    /// domains (read again when older than [`PAUSED_REFRESH`]; expired entries are
    /// removed from Redis then).
    async fn check_paused(&self, domains: &[&str]) -> Result<(), Deferral> {
        let now = epoch_millis(SystemTime::now());
        let mut paused = self.paused.lock().await;
        if paused.0.is_none_or(|at| at.elapsed() > PAUSED_REFRESH) {
            let key = self.key("pace:paused");
            let mut conn = self.redis.connection();
            let read: redis::RedisResult<HashMap<String, u64>> =
                redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await;
            match read {
                Ok(map) => {
                    let expired: Vec<&String> = map
                        .iter()
                        .filter(|(_, until)| **until <= now)
                        .map(|(domain, _)| domain)
                        .collect();
                    if !expired.is_empty() {
                        let _: redis::RedisResult<()> = redis::cmd("HDEL")
                            .arg(&key)
                            .arg(&expired)
                            .query_async(&mut conn)
                            .await;
                    }
                    paused.1 = map;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "paused domains not read: Redis unavailable")
                }
            }
            paused.0 = Some(Instant::now());
        }
        for &domain in domains {
            if let Some(&until) = paused.1.get(domain).filter(|until| **until > now) {
                return Err(Deferral {
                    until: SystemTime::UNIX_EPOCH + Duration::from_millis(until),
                    reason: format!("{domain} deferred mail lately; backing off"),
                });
            }
        }
        Ok(())
    }

    fn key(&self, name: &str) -> String {
        self.redis.key(name)
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
            let result: Result<i64, _> = self
                .count
                .key(self.key(&format!("pace:{domain}:{second}")))
                .invoke_async(&mut conn)
                .await;
            let count = match result {
                Ok(count) => count,
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
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn epoch_millis(at: SystemTime) -> u64 {
    millis(
        at.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}
