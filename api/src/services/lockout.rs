//! Login throttling in Redis, so it holds across api replicas and under a burst.
//!
//! Every attempt is counted *before* its password is verified, atomically (see
//! [`super::attempts`]). So N simultaneous guesses get at most `limit` verifications,
//! never N. An attempt that turns out right gives its reservation back (and clears the
//! pair's failures); one that was never judged (hashing saturated, database down) gives
//! it back too; a wrong one stays counted. Counters live in a fixed window that starts
//! with the first attempt, so a lock never outlives `LOGIN_WINDOW_SECS`.
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
//!
//! Keys: `<p>:{login}:fail:pair:<account>:<ip>`, `<p>:{login}:fail:account:<account>`,
//! `<p>:{login}:fail:ip:<ip>` and `<p>:{login}:known:<account>:<ip>`. One script call
//! uses all four, so on a Redis Cluster they must share a hash slot; the address
//! counter is shared by every account and the account counter by every address, so
//! no tag narrower than a constant covers all of them: every login counter lives in
//! the slot of `{login}`. A login costs one script call next to a password hash that
//! takes far longer, so one node is not what bounds logins.

use std::net::IpAddr;
use std::time::Duration;

use shared::config::LoginLimits;
use shared::redis::{Redis, hash_tag};

use super::attempts::{Attempts, Reserved, Waiver};

#[derive(Debug, Clone)]
pub struct Lockout {
    attempts: Attempts,
    known_address_ttl: Duration,
    /// Pair, account, ip.
    limits: [u32; 3],
}

/// Keys for one attempt: (account, ip), account, ip, and the (account, ip) known mark.
#[derive(Debug)]
struct Keys([String; 4]);

impl Keys {
    fn counters(&self) -> [&str; 3] {
        [&self.0[0], &self.0[1], &self.0[2]]
    }

    fn known(&self) -> &str {
        &self.0[3]
    }
}

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
            attempts: Attempts::new(redis, limits.window),
            known_address_ttl: limits.known_address_ttl,
            limits: [
                limits.max_failures_account_ip,
                limits.max_failures_account,
                limits.max_failures_ip,
            ],
        }
    }

    fn keys(&self, account: &[u8], ip: IpAddr) -> Keys {
        let account = hex(account);
        let tag = hash_tag("login");
        Keys([
            self.attempts
                .key(&format!("{tag}:fail:pair:{account}:{ip}")),
            self.attempts.key(&format!("{tag}:fail:account:{account}")),
            self.attempts.key(&format!("{tag}:fail:ip:{ip}")),
            self.attempts.key(&format!("{tag}:known:{account}:{ip}")),
        ])
    }

    /// Counts this attempt, or `Err(retry_after)` when it must be refused.
    pub async fn reserve(&self, account: &[u8], ip: IpAddr) -> Result<Reservation, Duration> {
        let keys = self.keys(account, ip);
        let [pair, account, ip] = keys.counters();
        let counters = [
            (pair, self.limits[0]),
            (account, self.limits[1]),
            (ip, self.limits[2]),
        ];
        // The account's limit does not apply to an address it signs in from.
        let known = Waiver {
            counter: 1,
            marker: keys.known(),
        };
        match self.attempts.reserve(&counters, Some(known)).await {
            Ok(Reserved::Counted) => Ok(Reservation { keys: Some(keys) }),
            Ok(Reserved::Refused { retry_after }) => Err(retry_after),
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
        let [pair, account, ip] = keys.counters();
        let known = (keys.known(), self.known_address_ttl);
        if let Err(err) = self
            .attempts
            .settle(&[pair], &[account, ip], Some(known))
            .await
        {
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
        if let Err(err) = self.attempts.give_back(&keys.counters()).await {
            tracing::warn!(error = %err, "cannot release a login attempt: Redis unavailable");
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_keys_of_one_attempt_share_a_hash_slot_and_keep_the_prefix() {
        let redis = Redis::connect_lazy_to("redis://127.0.0.1:1", "p").expect("url");
        let limits = LoginLimits {
            window: Duration::from_secs(900),
            max_failures_account_ip: 5,
            max_failures_account: 20,
            max_failures_ip: 50,
            known_address_ttl: Duration::from_secs(86_400),
            max_factor_failures: 5,
        };
        let lockout = Lockout::new(limits, redis);
        for ip in ["203.0.113.7", "2001:db8::1"] {
            let keys = lockout.keys(b"account-blind-index", ip.parse().expect("ip"));
            assert!(shared::redis::same_slot(&keys.0), "{keys:?}");
            assert!(
                keys.0.iter().all(|k| k.starts_with("p:{login}:")),
                "{keys:?}"
            );
        }
    }
}
