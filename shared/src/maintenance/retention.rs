//! Retention: finished requests older than `RETENTION_DAYS` are deleted with their
//! jobs, in bounded batches so a large backlog never holds long locks; idempotency
//! keys are forgotten after their 24 hours; accounts that never confirmed their email
//! go after `UNVERIFIED_ACCOUNT_TTL_SECS` (freeing the address), expired verification
//! links and message-quota hours older than two days with them. Safe in every
//! replica (`SKIP LOCKED`).

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
    pub idempotency_keys: u64,
    pub unverified_accounts: u64,
}

/// Message-quota hours are kept this long (the daily window needs 25 hours).
const QUOTA_USAGE_KEPT: Duration = Duration::from_secs(48 * 3600);

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

    pub async fn round(&self) -> Result<Pruned, sqlx::Error> {
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
        pruned.idempotency_keys =
            idempotency::purge_expired(&self.pool, now - IDEMPOTENCY_TTL).await?;
        loop {
            let deleted =
                users::delete_unverified_before(&self.pool, now - self.unverified_ttl, BATCH)
                    .await?;
            // Their sessions went with them: no api replica may still trust one.
            crate::session_epoch::bump(&self.redis, &deleted).await;
            let n = deleted.len() as u64;
            pruned.unverified_accounts += n;
            if n < u64::try_from(BATCH).unwrap_or(u64::MAX) {
                break;
            }
        }
        users::purge_verifications(&self.pool, now).await?;
        users::purge_quota_usage(&self.pool, now - QUOTA_USAGE_KEPT).await?;
        if pruned.unverified_accounts > 0 {
            tracing::info!(
                accounts = pruned.unverified_accounts,
                "deleted accounts that never confirmed their email address"
            );
        }
        if pruned.requests > 0 {
            metrics::counter!(metric::REQUESTS_PRUNED_TOTAL).increment(pruned.requests);
            tracing::info!(
                requests = pruned.requests,
                "pruned finished requests past retention"
            );
        }
        Ok(pruned)
    }
}
