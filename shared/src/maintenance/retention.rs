//! Retention: finished requests older than `RETENTION_DAYS` are deleted with their
//! jobs, in bounded batches so a large backlog never holds long locks; idempotency
//! keys are forgotten after their 24 hours. Safe in every replica (`SKIP LOCKED`).

use std::time::Duration;

use sqlx::PgPool;
use time::OffsetDateTime;

use crate::db::{idempotency, requests};
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
}

#[derive(Debug, Clone)]
pub struct Pruner {
    pub pool: PgPool,
    /// Finished requests older than this go.
    pub retention: Duration,
}

impl Pruner {
    pub fn new(pool: PgPool, retention: Duration) -> Self {
        Pruner { pool, retention }
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
