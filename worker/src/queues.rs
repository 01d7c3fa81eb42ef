//! The queues a worker runs: one line each — the queue, its handler, its settings —
//! and the periodic jobs its scheduler enqueues. Everything else (fetching, claiming,
//! timeouts, retries, completion, heartbeats, shutdown, ticks) is the runtime's, the
//! same for every queue.

use shared::jobs::NewJob;
use shared::jobs::schedule::{Chore, ChoreJob, Every};
use shared::maintenance::retention::Pruner;

use crate::handlers::{
    canary::Canary, chores::Chores, emails::Mailer, operations::Operations, scans::Scans,
    uploads::Uploads, webhooks::Webhooks,
};
use crate::runtime::Runtime;
use crate::scanner::Scanner;

pub fn register(runtime: &mut Runtime) -> anyhow::Result<()> {
    let (config, pool, redis) = (
        runtime.config.clone(),
        runtime.pool.clone(),
        runtime.redis.clone(),
    );
    let storage = config.storage.open()?;
    storage.announce("worker");
    runtime.queue(
        Mailer::from_config(&config, pool.clone(), redis.clone(), storage.clone())?,
        config.queues.emails,
    );
    runtime.queue(
        Uploads::new(&config, pool.clone(), storage.clone()),
        config.queues.uploads,
    );
    runtime.queue(
        Scans::new(pool.clone(), storage, Scanner::from_config(&config.scanner)),
        config.queues.scans,
    );
    runtime.queue(
        Webhooks::new(&config, pool.clone())?,
        config.queues.webhooks,
    );
    runtime.queue(
        Operations::new(config.clone(), pool.clone(), redis.clone()),
        config.queues.operations,
    );
    let pruner = Pruner::new(
        pool.clone(),
        redis.clone(),
        config.pipeline.retention,
        config.accounts.unverified_ttl,
    );
    runtime.queue(
        Chores::new(pruner, pool.clone(), redis.clone()),
        config.queues.chores,
    );
    runtime.queue(Canary, config.queues.canary);
    for chore in Chore::ALL {
        runtime.scheduler.schedule(
            chore.name(),
            Every::Interval(match chore {
                Chore::PruneRetention | Chore::CleanupUnverifiedAccounts => {
                    config.pipeline.prune_interval
                }
                Chore::SampleQueues => shared::maintenance::sample::INTERVAL,
            }),
            NewJob::of(&ChoreJob { chore })?,
        );
    }
    Ok(())
}
