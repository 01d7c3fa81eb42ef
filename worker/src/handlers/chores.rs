//! The `chores` queue: the periodic maintenance the scheduler enqueues (retention,
//! unconfirmed accounts). Each chore is idempotent and works in bounded batches, so a
//! retried or late chore simply does what is left.

use shared::db::jobs::ClaimedJob;
use shared::jobs::schedule::{Chore, ChoreJob};
use shared::maintenance::retention::Pruner;

use crate::handler::{Handler, Outcome};

pub struct Chores {
    pruner: Pruner,
}

impl Chores {
    pub fn new(pruner: Pruner) -> Self {
        Chores { pruner }
    }
}

impl Handler for Chores {
    type Job = ChoreJob;

    async fn handle(&self, _job: &ClaimedJob, payload: ChoreJob) -> Outcome {
        let done = match payload.chore {
            Chore::PruneRetention => self.pruner.prune_retention().await.map(drop),
            Chore::CleanupUnverifiedAccounts => {
                self.pruner.cleanup_unverified_accounts().await.map(drop)
            }
        };
        match done {
            Ok(()) => Outcome::Succeeded,
            Err(err) => Outcome::Retry(format!("{}: {err}", payload.chore.name())),
        }
    }
}
