//! The queues a worker runs: one line each — the queue, its handler, its settings.
//! Everything else (fetching, claiming, timeouts, retries, completion, heartbeats,
//! shutdown) is the runtime's, the same for every queue.

use shared::queue::QueueName;

use crate::handlers::{canary::Canary, emails::Mailer};
use crate::runtime::Runtime;

pub fn register(runtime: &mut Runtime) -> anyhow::Result<()> {
    let (config, pool, redis) = (
        runtime.config.clone(),
        runtime.pool.clone(),
        runtime.redis.clone(),
    );
    runtime.queue(
        QueueName::Emails,
        Mailer::from_config(&config, pool, redis)?,
        config.queues.emails,
    );
    runtime.queue(QueueName::Canary, Canary, config.queues.canary);
    Ok(())
}
