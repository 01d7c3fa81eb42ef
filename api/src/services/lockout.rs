//! Login throttling in Redis, so it holds across api replicas and under a burst.
//!
//! Every attempt is counted *before* its password is verified: one Lua script checks
//! the counters and, if none is at its limit, increments them, atomically. So N
//! simultaneous guesses get at most `limit` verifications, never N. An attempt that
//! turns out right gives its reservation back (and clears the pair's failures); one
//! that was never judged (hashing saturated, database down) gives it back too; a
//! wrong one stays counted. Counters live in a fixed window that starts with the
//! first attempt, so a lock never outlives `LOGIN_WINDOW_SECS`.
//!
//! Three counters, and who each may refuse:
//! - per (account, address): strict, for everyone. The guesses one address may make
//!   against one account.
//! - per account: only for addresses the account has not *proven* — an address
//!   remembered for `LOGIN_KNOWN_ADDRESS_TTL_SECS` after a correct password from it.
//!   Spread guessing from many addresses stops at this limit for every new address,
//!   yet an attacker who fills it cannot lock the owner out of places the owner signs
//!   in from. (Refusing every address, as before, let five guesses from each of four
//!   addresses lock the owner out everywhere for the whole window.) A known address
//!   still has its strict pair limit, so sharing a NAT with the owner buys an attacker
//!   `LOGIN_MAX_FAILURES_ACCOUNT_IP` guesses per window, no more.
//! - per address: for everyone, against one address spraying many accounts.
//!
//! What this does not cover: an owner on a *new* address while the account is under
//! attack waits for the window to end (a device cookie would fix that). If Redis is
//! unreachable the check is skipped and logged: logins stay possible during an outage.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use shared::config::LoginLimits;
use shared::redis::Redis;

/// KEYS: pair, account, ip, known address. ARGV: window (s), then the pair, account
/// and ip limits. Returns `{1}` when reserved, `{0, ttl}` with the tripped counter's
/// remaining seconds when refused. Nothing is incremented on a refusal, so refused
/// attempts do not extend a lock.
const RESERVE: &str = r"
local known = redis.call('EXISTS', KEYS[4]) == 1
for i = 1, 3 do
  if not (i == 2 and known) then
    local count = tonumber(redis.call('GET', KEYS[i]) or '0')
    if count >= tonumber(ARGV[i + 1]) then
      return {0, redis.call('TTL', KEYS[i])}
    end
  end
end
for i = 1, 3 do
  redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[1], 'NX')
end
return {1}
";

/// KEYS: the counters to give one attempt back to. A counter that has expired
/// meanwhile is left absent rather than recreated without a window.
const RELEASE: &str = r"
for i = 1, #KEYS do
  if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then
    redis.call('DECR', KEYS[i])
  end
end
return 0
";

/// KEYS: pair, account, ip, known address. ARGV: how long the address stays known.
/// The pair's failures are forgiven, the attempt given back to the others.
const SUCCEED: &str = r"
redis.call('DEL', KEYS[1])
for i = 2, 3 do
  if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then
    redis.call('DECR', KEYS[i])
  end
end
redis.call('SET', KEYS[4], '1', 'EX', ARGV[1])
return 0
";

#[derive(Debug, Clone)]
pub struct Lockout {
    redis: Redis,
    window: Duration,
    known_address_ttl: Duration,
    /// Pair, account, ip.
    limits: [u32; 3],
    scripts: Arc<Scripts>,
}

#[derive(Debug)]
struct Scripts {
    reserve: Script,
    release: Script,
    succeed: Script,
}

/// Keys for one attempt: (account, ip), account, ip, and the (account, ip) known mark.
#[derive(Debug)]
struct Keys([String; 4]);

/// One attempt, counted. Settle it with [`Lockout::succeeded`], [`Lockout::failed`]
/// or [`Lockout::release`].
#[derive(Debug)]
#[must_use = "a reservation is settled by succeeded, failed or release"]
pub struct Reservation {
    /// `None` when Redis was unreachable and nothing was counted.
    keys: Option<Keys>,
}

impl Lockout {
    pub fn new(limits: LoginLimits, redis: Redis) -> Self {
        Lockout {
            redis,
            window: limits.window,
            known_address_ttl: limits.known_address_ttl,
            limits: [
                limits.max_failures_account_ip,
                limits.max_failures_account,
                limits.max_failures_ip,
            ],
            scripts: Arc::new(Scripts {
                reserve: Script::new(RESERVE),
                release: Script::new(RELEASE),
                succeed: Script::new(SUCCEED),
            }),
        }
    }

    fn keys(&self, account: &[u8], ip: IpAddr) -> Keys {
        let account = hex(account);
        Keys([
            self.redis.key(&format!("login-fail:pair:{account}:{ip}")),
            self.redis.key(&format!("login-fail:account:{account}")),
            self.redis.key(&format!("login-fail:ip:{ip}")),
            self.redis.key(&format!("login-known:{account}:{ip}")),
        ])
    }

    /// Counts this attempt, or `Err(retry_after)` when it must be refused.
    pub async fn reserve(&self, account: &[u8], ip: IpAddr) -> Result<Reservation, Duration> {
        let keys = self.keys(account, ip);
        let mut invocation = self.scripts.reserve.prepare_invoke();
        for key in &keys.0 {
            invocation.key(key);
        }
        invocation.arg(self.window.as_secs());
        for limit in self.limits {
            invocation.arg(limit);
        }
        let mut conn = self.redis.connection();
        match invocation.invoke_async::<Vec<i64>>(&mut conn).await {
            Ok(reply) if reply.first() == Some(&1) => Ok(Reservation { keys: Some(keys) }),
            Ok(reply) => {
                let ttl = reply.get(1).copied().unwrap_or(0);
                Err(Duration::from_secs(u64::try_from(ttl).unwrap_or(0).max(1)))
            }
            Err(err) => {
                tracing::warn!(error = %err, "login throttling skipped: Redis unavailable");
                Ok(Reservation { keys: None })
            }
        }
    }

    /// The password was right: forgive the pair's failures, give the attempt back and
    /// remember the address as one the account signs in from.
    pub async fn succeeded(&self, reservation: Reservation) {
        let Some(keys) = reservation.keys else {
            return;
        };
        let mut invocation = self.scripts.succeed.prepare_invoke();
        for key in &keys.0 {
            invocation.key(key);
        }
        invocation.arg(self.known_address_ttl.as_secs());
        let mut conn = self.redis.connection();
        if let Err(err) = invocation.invoke_async::<()>(&mut conn).await {
            tracing::warn!(error = %err, "cannot settle a login: Redis unavailable");
        }
    }

    /// The password was wrong: the attempt stays counted.
    pub fn failed(&self, reservation: Reservation) {
        drop(reservation);
    }

    /// No password was judged (the attempt ended on an error): give the attempt back.
    pub async fn release(&self, reservation: Reservation) {
        let Some(keys) = reservation.keys else {
            return;
        };
        let mut invocation = self.scripts.release.prepare_invoke();
        for key in &keys.0[..3] {
            invocation.key(key);
        }
        let mut conn = self.redis.connection();
        if let Err(err) = invocation.invoke_async::<()>(&mut conn).await {
            tracing::warn!(error = %err, "cannot release a login attempt: Redis unavailable");
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().take(16).map(|b| format!("{b:02x}")).collect()
}
