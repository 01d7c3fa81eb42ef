//! Queues as operators see them: counts by state, ages, live workers, and the pause
//! switch (kept in Redis, audited).

use serde::{Deserialize, Serialize};
use shared::db::jobs::{self};
use shared::queue::{Queue, QueueName, pause};

use super::{Action, Operator, counted, record};
use crate::error::ApiError;
use crate::state::AppState;

/// One queue as operators watch it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueView {
    pub queue: QueueName,
    /// Waiting for other jobs to end (an email for its attachments' scans): not in
    /// Redis yet.
    pub waiting: i64,
    pub queued: i64,
    pub running: i64,
    /// Failed attempts waiting for their retry (scheduled retries).
    pub retrying: i64,
    /// Dead jobs, not counting discarded ones.
    pub dead: i64,
    /// Dead jobs an operator discarded (kept for audit).
    pub discarded: i64,
    pub succeeded_last_hour: i64,
    /// Seconds since the oldest queued job became runnable: its creation, a scheduled
    /// send's `send_at`, or an operator's retry; 0 when every queued job is scheduled
    /// for later, null when nothing is queued. `queued` counts scheduled jobs too.
    pub oldest_queued_age_seconds: Option<i64>,
    /// Worker processes whose consumer of this queue has a live heartbeat; null when
    /// Redis did not answer.
    pub workers_alive: Option<u64>,
    /// Workers take no job of a paused queue (submissions are still accepted); null
    /// when Redis did not answer.
    pub paused: Option<bool>,
    /// A dependency a worker found down (`smtp`), taking no job of this queue until it
    /// answers again, its jobs waiting without spending attempts; null when none.
    pub blocked_on: Option<String>,
    /// Since when the earliest such worker has been waiting.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub blocked_since: Option<time::OffsetDateTime>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueList {
    pub queues: Vec<QueueView>,
}

/// Every queue: counts from PostgreSQL in one statement, workers and pauses from Redis.
pub async fn queues(state: &AppState) -> Result<QueueList, ApiError> {
    let counts = jobs::queue_counts(&state.pool).await?;
    let paused = match pause::paused(&state.redis).await {
        Ok(set) => Some(set),
        Err(err) => {
            tracing::warn!(error = %err, "cannot read paused queues");
            None
        }
    };
    let mut queues = Vec::with_capacity(QueueName::ALL.len());
    for &queue in QueueName::ALL {
        let row = counts.iter().find(|c| c.queue == queue);
        let workers_alive = match Queue::new(state.redis.clone(), queue).workers_alive().await {
            Ok(n) => Some(n),
            Err(err) => {
                tracing::warn!(error = %err, queue = %queue, "cannot count live workers");
                None
            }
        };
        let blocked = match shared::queue::blocked::of(&state.redis, queue).await {
            Ok(blocks) => blocks.into_iter().next(),
            Err(err) => {
                tracing::warn!(error = %err, queue = %queue, "cannot read blocked queues");
                None
            }
        };
        queues.push(QueueView {
            queue,
            waiting: row.map_or(0, |r| r.waiting),
            queued: row.map_or(0, |r| r.queued),
            running: row.map_or(0, |r| r.running),
            retrying: row.map_or(0, |r| r.retrying),
            dead: row.map_or(0, |r| r.dead),
            discarded: row.map_or(0, |r| r.discarded),
            succeeded_last_hour: row.map_or(0, |r| r.succeeded_last_hour),
            oldest_queued_age_seconds: row.and_then(|r| {
                r.oldest_queued_at
                    .map(|at| (r.counted_at - at).whole_seconds().max(0))
            }),
            workers_alive,
            paused: paused.as_ref().map(|set| set.contains(&queue)),
            blocked_since: blocked.as_ref().map(|b| b.since),
            blocked_on: blocked.map(|b| b.dependency),
        });
    }
    Ok(QueueList { queues })
}

/// The state of a queue's pause switch after an operator flipped it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueSwitch {
    pub queue: QueueName,
    pub paused: bool,
    /// False when the queue already was in that state.
    pub changed: bool,
}

/// Pauses (`pause = true`) or resumes a queue. The switch lives in Redis; the audit
/// row commits after Redis took the change (a failed Redis call leaves no row).
pub async fn switch_queue(
    state: &AppState,
    operator: &Operator,
    queue: QueueName,
    paused: bool,
) -> Result<QueueSwitch, ApiError> {
    let mut tx = state.pool.begin().await?;
    let flipped = if paused {
        pause::pause(&state.redis, queue).await
    } else {
        pause::resume(&state.redis, queue).await
    };
    let changed = flipped.map_err(|err| {
        tracing::warn!(error = %err, queue = %queue, "cannot switch the queue in Redis");
        ApiError::DependencyUnavailable("Redis")
    })?;
    let action = Action::switch(paused);
    record(
        &mut *tx,
        operator,
        action,
        &format!("queue:{queue}"),
        serde_json::json!({ "changed": changed }),
    )
    .await?;
    tx.commit().await?;
    counted(action);
    tracing::info!(actor = operator.actor(), queue = %queue, paused, changed, "queue switched");
    Ok(QueueSwitch {
        queue,
        paused,
        changed,
    })
}
