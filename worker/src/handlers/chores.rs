//! The `chores` queue: the periodic maintenance the scheduler enqueues (retention,
//! unconfirmed accounts, the sampled gauges). Each chore is idempotent and works in
//! bounded batches, so a retried or late chore simply does what is left.

use shared::db::jobs::ClaimedJob;
use shared::jobs::schedule::{Chore, ChoreJob};
use shared::maintenance::retention::Pruner;
use shared::maintenance::sample::Sample;
use shared::redis::Redis;
use sqlx::PgPool;

use crate::handler::{Handler, Outcome};

pub struct Chores {
    pruner: Pruner,
    pool: PgPool,
    redis: Redis,
}

impl Chores {
    pub fn new(pruner: Pruner, pool: PgPool, redis: Redis) -> Self {
        Chores {
            pruner,
            pool,
            redis,
        }
    }

    async fn sample_queues(&self) -> Result<(), String> {
        Sample::take(&self.pool, &self.redis)
            .await?
            .store(&self.redis)
            .await
    }
}

impl Handler for Chores {
    type Job = ChoreJob;

    async fn handle(&self, _job: &ClaimedJob, payload: ChoreJob) -> Outcome {
        let done = match payload.chore {
            Chore::PruneRetention => self
                .pruner
                .prune_retention()
                .await
                .map(drop)
                .map_err(|err| err.to_string()),
            Chore::CleanupUnverifiedAccounts => self
                .pruner
                .cleanup_unverified_accounts()
                .await
                .map(drop)
                .map_err(|err| err.to_string()),
            Chore::SampleQueues => self.sample_queues().await,
        };
        match done {
            Ok(()) => Outcome::Succeeded,
            Err(err) => Outcome::Retry(format!("{}: {err}", payload.chore.name())),
        }
    }
}
