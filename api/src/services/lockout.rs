//! Login throttling in Redis, so it holds across api replicas. Failures are counted
//! per (account, client address), per account and per client address in a fixed
//! window; past a threshold the next attempts get 429 until the window ends. A lock
//! therefore never outlives `LOGIN_WINDOW_SECS`, and the per-pair counter (the one
//! that trips first) does not let an attacker elsewhere lock a user out. A correct
//! password clears the pair's counter. If Redis is unreachable the check is skipped
//! (and logged): logins stay possible during a Redis outage.

use std::net::IpAddr;
use std::time::Duration;

use redis::AsyncCommands as _;
use shared::config::LoginLimits;
use shared::redis::Redis;

#[derive(Debug, Clone)]
pub struct Lockout {
    redis: Redis,
    window: Duration,
    limits: [u32; 3],
}

/// Keys for one attempt: (account, ip), account, ip.
struct Keys([String; 3]);

impl Lockout {
    pub fn new(limits: LoginLimits, redis: Redis) -> Self {
        Lockout {
            redis,
            window: limits.window,
            limits: [
                limits.max_failures_account_ip,
                limits.max_failures_account,
                limits.max_failures_ip,
            ],
        }
    }

    fn keys(&self, account: &[u8], ip: IpAddr) -> Keys {
        let account = hex(account);
        Keys([
            self.redis.key(&format!("login-fail:pair:{account}:{ip}")),
            self.redis.key(&format!("login-fail:account:{account}")),
            self.redis.key(&format!("login-fail:ip:{ip}")),
        ])
    }

    /// `Some(retry_after)` when this attempt must be refused.
    pub async fn check(&self, account: &[u8], ip: IpAddr) -> Option<Duration> {
        let keys = self.keys(account, ip);
        let mut conn = self.redis.connection();
        let counts: Vec<Option<u32>> = match conn.mget(&keys.0).await {
            Ok(counts) => counts,
            Err(err) => {
                tracing::warn!(error = %err, "login throttling skipped: Redis unavailable");
                return None;
            }
        };
        for ((count, limit), key) in counts.iter().zip(self.limits).zip(&keys.0) {
            if count.unwrap_or(0) >= limit {
                let ttl: i64 = conn.ttl(key).await.unwrap_or(0);
                let secs = u64::try_from(ttl).unwrap_or(0).max(1);
                return Some(Duration::from_secs(secs));
            }
        }
        None
    }

    pub async fn record_failure(&self, account: &[u8], ip: IpAddr) {
        let keys = self.keys(account, ip);
        let window = i64::try_from(self.window.as_secs()).unwrap_or(i64::MAX);
        let mut pipe = redis::pipe();
        for key in &keys.0 {
            pipe.incr(key, 1).ignore();
            // NX: the window starts at the first failure and is not extended by later ones.
            pipe.cmd("EXPIRE").arg(key).arg(window).arg("NX").ignore();
        }
        let mut conn = self.redis.connection();
        if let Err(err) = pipe.query_async::<()>(&mut conn).await {
            tracing::warn!(error = %err, "cannot record a failed login: Redis unavailable");
        }
    }

    pub async fn record_success(&self, account: &[u8], ip: IpAddr) {
        let keys = self.keys(account, ip);
        let mut conn = self.redis.connection();
        if let Err(err) = conn.del::<_, ()>(&keys.0[0]).await {
            tracing::warn!(error = %err, "cannot clear failed logins: Redis unavailable");
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().take(16).map(|b| format!("{b:02x}")).collect()
}
