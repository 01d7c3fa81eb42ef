//! Retention, two periodic chores (`jobs::schedule::Chore`): finished requests older
//! than `RETENTION_DAYS` are deleted with their jobs (and finished jobs of no request
//! past it), in bounded batches so a large backlog never holds long locks; idempotency
//! keys are forgotten after their 24 hours; accounts that never confirmed their email
//! go after `UNVERIFIED_ACCOUNT_TTL_SECS` (freeing the address), expired verification
//! links, message-quota hours and daily-cap counts older than two days with them.
//! Safe in every replica (`SKIP LOCKED`).

use std::time::Duration;

use sqlx::PgPool;
use time::OffsetDateTime;

use crate::db::{idempotency, requests, users};
use crate::telemetry::metric;

/// How long an `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

/// Requests deleted per statement.
const BATCH: i64 = 1000;

/// What one round removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub requests: u64,
    /// Finished jobs of no request (webhook deliveries, operations, chores).
    pub jobs: u64,
    pub idempotency_keys: u64,
    pub unverified_accounts: u64,
}

/// Message-quota hours are kept this long (the daily window needs 25 hours).
const QUOTA_USAGE_KEPT: Duration = Duration::from_secs(48 * 3600);
/// Succeeded chores (the sample alone makes 17,280 a day) are kept a day; a dead one
/// stays for the retention period like any job.
pub const CHORES_KEPT: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone)]
pub struct Pruner {
    pub pool: PgPool,
    /// Where deleted accounts' session epochs are replaced.
    pub redis: crate::redis::Redis,
    /// Finished requests older than this go.
    pub retention: Duration,
    /// Accounts that never confirmed their email address go after this.
    pub unverified_ttl: Duration,
}

impl Pruner {
    pub fn new(
        pool: PgPool,
        redis: crate::redis::Redis,
        retention: Duration,
        unverified_ttl: Duration,
    ) -> Self {
        Pruner {
            pool,
            redis,
            retention,
            unverified_ttl,
        }
    }

    /// Both chores at once ([`Pruner::prune_retention`], then
    /// [`Pruner::cleanup_unverified_accounts`]).
    pub async fn round(&self) -> Result<Pruned, sqlx::Error> {
        let mut pruned = self.prune_retention().await?;
        pruned.unverified_accounts = self.cleanup_unverified_accounts().await?;
        Ok(pruned)
    }

    /// Finished requests past retention (with their jobs and deliveries), finished jobs
    /// of no request past it, expired idempotency keys, old quota hours.
    pub async fn prune_retention(&self) -> Result<Pruned, sqlx::Error> {
        let now = OffsetDateTime::now_utc();
        let before = now - self.retention;
        let mut pruned = Pruned::default();
        loop {
            let n = requests::delete_finished_before(&self.pool, before, BATCH).await?;
            pruned.requests += n;
            if n < u64::try_from(BATCH).unwrap_or(u64::MAX) {
                break;
            }
        }
        // Every job of no request past the retention; succeeded chores past a day.
        for (before, succeeded_of) in [
            (before, None),
            (now - CHORES_KEPT, Some(crate::queue::QueueName::Chores)),
        ] {
            loop {
                let n = crate::db::jobs::delete_unowned_finished_before(
                    &self.pool,
                    before,
                    succeeded_of,
                    BATCH,
                )
                .await?;
                pruned.jobs += n;
                if n < u64::try_from(BATCH).unwrap_or(u64::MAX) {
                    break;
                }
            }
        }
        pruned.idempotency_keys =
            idempotency::purge_expired(&self.pool, now - IDEMPOTENCY_TTL).await?;
        users::purge_quota_usage(&self.pool, now - QUOTA_USAGE_KEPT).await?;
        // Daily-cap counts: a day is over everywhere two days after (UTC±14).
        let two_days_ago = (now - time::Duration::days(2)).date();
        crate::db::send_caps::prune_before(&self.pool, two_days_ago).await?;
        if pruned.requests > 0 {
            metrics::counter!(metric::REQUESTS_PRUNED_TOTAL).increment(pruned.requests);
            tracing::info!(
                requests = pruned.requests,
                jobs = pruned.jobs,
                "pruned finished requests and jobs past retention"
            );
        }
        Ok(pruned)
    }

    /// Accounts that never confirmed their address past their time (their sessions
    /// end with them), and expired verification links. Returns how many accounts.
    pub async fn cleanup_unverified_accounts(&self) -> Result<u64, sqlx::Error> {
        let now = OffsetDateTime::now_utc();
        let mut accounts = 0;
        loop {
            let deleted =
                users::delete_unverified_before(&self.pool, now - self.unverified_ttl, BATCH)
                    .await?;
            // Their sessions went with them: no api replica may still trust one.
            crate::session_epoch::bump(&self.redis, &deleted).await;
            let n = deleted.len() as u64;
            accounts += n;
            if n < u64::try_from(BATCH).unwrap_or(u64::MAX) {
                break;
            }
        }
        users::purge_verifications(&self.pool, now).await?;
        if accounts > 0 {
            tracing::info!(
                accounts,
                "deleted accounts that never confirmed their email address"
            );
        }
        Ok(accounts)
    }
}
