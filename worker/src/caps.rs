//! When a message may go out: a campaign's send window and daily cap, and the sending
//! account's own daily cap and warm-up (`/me/sending-limits`). Checked before a
//! message is built; a message that may not go out yet is deferred to when it may
//! (no attempt spent), with the reason recorded on its job.
//!
//! Caps are counted in PostgreSQL (`db::send_caps`, one row per scope and local day),
//! so they hold across every worker and restart. A message is admitted before it is
//! sent; one admitted and then not sent (a failure, a deferral by its domain's pace)
//! is given back ([`Caps::give_back`]). The accounts' limits are read all at once
//! and kept for [`REFRESH`]: a change takes effect within that time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use shared::db::send_caps::{self, Scope};
use shared::db::sending_limits;
use shared::mail::window::{self, AccountLimits, SendWindow, Tz};
use sqlx::PgPool;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

/// How long the accounts' limits are kept before they are read again.
pub const REFRESH: Duration = Duration::from_secs(5);

/// A campaign's own limits.
#[derive(Debug, Clone, Default)]
pub struct CampaignLimits {
    pub id: Uuid,
    pub window: Option<SendWindow>,
    pub daily_cap: Option<u32>,
}

/// Admissions to give back if the message is not sent.
#[derive(Debug, Default)]
pub struct Taken(Vec<(Scope, Date)>);

/// Why a message waits, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    pub until: SystemTime,
    pub reason: String,
}

pub struct Caps {
    pool: PgPool,
    accounts: Mutex<Option<(Instant, HashMap<Uuid, AccountLimits>)>>,
}

impl Caps {
    pub fn new(pool: PgPool) -> Self {
        Caps {
            pool,
            accounts: Mutex::new(None),
        }
    }

    /// Admits one message of `owner` (and of `campaign`, if it is a campaign's), or
    /// says how long it waits. An error is transient (the database).
    pub async fn admit(
        &self,
        now: OffsetDateTime,
        owner: Option<Uuid>,
        campaign: Option<&CampaignLimits>,
        taken: &mut Taken,
    ) -> Result<Option<Wait>, sqlx::Error> {
        if let Some(window) = campaign.and_then(|c| c.window.as_ref())
            && !window.is_open(now)
        {
            let opens = window.opens_at(now);
            return Ok(Some(Wait {
                until: opens.into(),
                reason: format!("outside the campaign's send window (opens {opens})"),
            }));
        }
        if let Some(c) = campaign
            && let Some(cap) = c.daily_cap
        {
            let zone = c.window.as_ref().map_or(Tz::UTC, SendWindow::time_zone);
            let day = window::day_in(zone, now);
            if !send_caps::take(&self.pool, Scope::Campaign(c.id), day, cap).await? {
                let next = window::next_day_in(zone, now);
                let until = c.window.as_ref().map_or(next, |w| w.opens_at(next));
                return Ok(Some(Wait {
                    until: until.into(),
                    reason: format!("the campaign's daily cap of {cap} is reached for {day}"),
                }));
            }
            taken.0.push((Scope::Campaign(c.id), day));
        }
        let Some(owner) = owner else {
            return Ok(None);
        };
        let Some(limits) = self.account(owner).await? else {
            return Ok(None);
        };
        let day = window::day_in(limits.zone, now);
        let Some(cap) = limits.cap_on(day) else {
            return Ok(None);
        };
        if send_caps::take(&self.pool, Scope::Account(owner), day, cap).await? {
            taken.0.push((Scope::Account(owner), day));
            return Ok(None);
        }
        // The account's cap is reached: the campaign's admission goes back too.
        self.give_back(std::mem::take(taken)).await;
        let next = window::next_day_in(limits.zone, now);
        let until = campaign
            .and_then(|c| c.window.as_ref())
            .map_or(next, |w| w.opens_at(next));
        let what = if limits.warmup.is_some() {
            "daily cap (with its warm-up)"
        } else {
            "daily cap"
        };
        Ok(Some(Wait {
            until: until.into(),
            reason: format!("the account's {what} of {cap} is reached for {day}"),
        }))
    }

    /// Gives back what [`Caps::admit`] took for a message that was not sent. A failure
    /// is logged: the day's count stays one too high (the cap errs on the safe side).
    pub async fn give_back(&self, taken: Taken) {
        for (scope, day) in taken.0 {
            if let Err(err) = send_caps::give_back(&self.pool, scope, day).await {
                tracing::warn!(error = %err, scope = %scope.key(), "cannot give back a daily cap admission");
            }
        }
    }

    /// `owner`'s limits, from the accounts' limits read at most [`REFRESH`] ago.
    async fn account(&self, owner: Uuid) -> Result<Option<AccountLimits>, sqlx::Error> {
        if let Ok(cache) = self.accounts.lock()
            && let Some((read, accounts)) = cache.as_ref()
            && read.elapsed() < REFRESH
        {
            return Ok(accounts.get(&owner).cloned());
        }
        let rows = sending_limits::all(&self.pool).await?;
        let accounts: HashMap<Uuid, AccountLimits> = rows
            .into_iter()
            .map(|row| {
                let limits = AccountLimits {
                    zone: row.time_zone.parse().unwrap_or(Tz::UTC),
                    daily_cap: row.daily_cap.and_then(|c| u32::try_from(c).ok()),
                    warmup: row.warmup.map(|w| w.0),
                };
                (row.owner_id, limits)
            })
            .collect();
        let found = accounts.get(&owner).cloned();
        if let Ok(mut cache) = self.accounts.lock() {
            *cache = Some((Instant::now(), accounts));
        }
        Ok(found)
    }
}
