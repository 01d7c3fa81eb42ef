//! The `operations` queue: an operator's bulk operation (a bulk retry, a rescan of
//! every upload), worked through in chunks by `shared::jobs::operations`. Each chunk
//! commits the jobs it sends back or adds with the operation's progress; the handler
//! then dispatches them and publishes the requests they reopened. A failed chunk retries the job, which resumes
//! from the last committed chunk (so does a worker that takes the job over after a
//! crash); when its last attempt fails, the operation is marked failed — it never
//! stays `running` with nobody running it.

use shared::Config;
use shared::db::jobs::ClaimedJob;
use shared::db::operations;
use shared::jobs::EnqueueError;
use shared::jobs::operations::{Chunk, OperationJob, next_chunk};
use shared::redis::Redis;
use sqlx::PgPool;

use crate::handler::{Handler, Outcome};

pub struct Operations {
    config: std::sync::Arc<Config>,
    pool: PgPool,
    redis: Redis,
}

impl Operations {
    pub fn new(config: std::sync::Arc<Config>, pool: PgPool, redis: Redis) -> Self {
        Operations {
            config,
            pool,
            redis,
        }
    }

    async fn run(&self, job: &ClaimedJob, id: uuid::Uuid) -> Result<(), EnqueueError> {
        if job.attempt > 1
            && let Some(row) = operations::resume(&self.pool, id, job.attempt).await?
        {
            tracing::warn!(operation = %id, done = row.done, total = row.total, attempt = job.attempt, "resuming a bulk operation");
        }
        loop {
            match next_chunk(&self.pool, &self.config.queues, id).await? {
                Chunk::Advanced {
                    row,
                    requeued,
                    reopened,
                } => {
                    requeued.dispatch(&self.pool, &self.redis).await;
                    shared::events::publish(&self.redis, &reopened).await;
                    tracing::debug!(operation = %id, kind = %row.kind, done = row.done, total = row.total, "operation chunk");
                }
                Chunk::Finished { row, enqueued } => {
                    enqueued.dispatch(&self.pool, &self.redis).await;
                    tracing::info!(operation = %id, kind = %row.kind, done = row.done, state = %row.state, "operation done");
                    return Ok(());
                }
            }
        }
    }
}

impl Handler for Operations {
    type Job = OperationJob;

    async fn handle(&self, job: &ClaimedJob, payload: OperationJob) -> Outcome {
        let id = payload.operation_id;
        match self.run(job, id).await {
            Ok(()) => Outcome::Succeeded,
            Err(err) => {
                tracing::error!(operation = %id, error = %err, attempt = job.attempt, "a bulk operation's chunk failed");
                if job.attempt < job.max_attempts {
                    return Outcome::Retry(format!("a chunk failed: {err}"));
                }
                let reason = format!(
                    "a chunk failed on each of {} attempts (the worker logged the cause with operation id {id}); \
                     jobs sent back or added so far stay queued, start a new operation for the rest",
                    job.attempt
                );
                if let Err(err) = operations::fail(&self.pool, id, &reason).await {
                    tracing::warn!(operation = %id, error = %err, "cannot mark the operation failed");
                }
                Outcome::Dead(format!("a chunk failed: {err}"))
            }
        }
    }
}
