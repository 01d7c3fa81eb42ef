//! The per-request session check, cached in process. Every authenticated request
//! must know that its session is still active and what the user's role and email
//! verification are now; asking PostgreSQL each time was one query per request.
//! An entry is used only while the user's session epoch ([`shared::session_epoch`]),
//! read by the rate limiter in the same Redis round trip as the limit, is the one the
//! entry was filled under: every change the check depends on replaces the epoch
//! after it commits, so no replica trusts an entry past the change. Without an epoch
//! (Redis unreachable, or a route the limiter does not see) PostgreSQL is asked.
//!
//! An entry also ends with its session and after [`ENTRY_TTL`]: the bound on a
//! stale answer if Redis was unreachable exactly when an epoch had to be replaced.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shared::domain::Role;
use time::OffsetDateTime;
use uuid::Uuid;

/// The longest an entry is trusted, even under an unchanged epoch.
pub const ENTRY_TTL: Duration = Duration::from_secs(30);
/// Sessions held at most; when full, expired entries go, then (if none) all.
const CAPACITY: usize = 100_000;

/// The user's session epoch as the rate limiter read it for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionEpoch(pub u64);

#[derive(Debug, Clone, Copy)]
struct Entry {
    user: Uuid,
    epoch: u64,
    role: Role,
    email_verified: bool,
    until: Instant,
}

#[derive(Debug, Default)]
pub struct SessionCache {
    entries: Mutex<HashMap<Uuid, Entry>>,
}

impl SessionCache {
    /// The cached (role, email verified) of an active session, if filled under
    /// `epoch` and not expired.
    pub fn get(&self, session: Uuid, user: Uuid, epoch: SessionEpoch) -> Option<(Role, bool)> {
        let entries = self.entries.lock().ok()?;
        let entry = entries.get(&session)?;
        (entry.user == user && entry.epoch == epoch.0 && entry.until > Instant::now())
            .then_some((entry.role, entry.email_verified))
    }

    /// Remembers an active session's check, read after `epoch` was.
    pub fn put(
        &self,
        session: Uuid,
        user: Uuid,
        epoch: SessionEpoch,
        (role, email_verified): (Role, bool),
        session_expires: OffsetDateTime,
    ) {
        let left = (session_expires - OffsetDateTime::now_utc())
            .try_into()
            .unwrap_or(Duration::ZERO);
        if left.is_zero() {
            return;
        }
        let now = Instant::now();
        let entry = Entry {
            user,
            epoch: epoch.0,
            role,
            email_verified,
            until: now + left.min(ENTRY_TTL),
        };
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= CAPACITY && !entries.contains_key(&session) {
            entries.retain(|_, entry| entry.until > now);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(session, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_serves_only_its_epoch_user_and_lifetime() {
        let cache = SessionCache::default();
        let (session, user) = (Uuid::now_v7(), Uuid::now_v7());
        let later = OffsetDateTime::now_utc() + time::Duration::hours(1);
        cache.put(session, user, SessionEpoch(7), (Role::User, true), later);
        assert_eq!(
            cache.get(session, user, SessionEpoch(7)),
            Some((Role::User, true))
        );
        assert_eq!(
            cache.get(session, user, SessionEpoch(8)),
            None,
            "epoch replaced"
        );
        assert_eq!(
            cache.get(session, Uuid::now_v7(), SessionEpoch(7)),
            None,
            "another user's token naming this session"
        );
        assert_eq!(cache.get(Uuid::now_v7(), user, SessionEpoch(7)), None);
        let ended = OffsetDateTime::now_utc() - time::Duration::seconds(1);
        let other = Uuid::now_v7();
        cache.put(other, user, SessionEpoch(7), (Role::User, true), ended);
        assert_eq!(
            cache.get(other, user, SessionEpoch(7)),
            None,
            "an expired session is never cached"
        );
    }
}
