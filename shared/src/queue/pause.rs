//! Pausing a queue: an operator's switch, kept in Redis (one set of paused queue
//! names) so every worker process sees it. Workers read it through a [`PauseWatch`]
//! that refreshes every `interval` in the background, so checking before each fetch
//! costs no round trip; a pause takes effect within about one interval. Paused queues
//! still accept submissions: jobs wait in PostgreSQL and in the ready list.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::watch;

use super::QueueName;
use crate::redis::Redis;

fn key(redis: &Redis) -> String {
    redis.key("queues:paused")
}

/// Pauses `queue`; `true` if it was running.
pub async fn pause(redis: &Redis, queue: QueueName) -> redis::RedisResult<bool> {
    let mut conn = redis.connection();
    let added: u64 = redis::cmd("SADD")
        .arg(key(redis))
        .arg(queue.as_str())
        .query_async(&mut conn)
        .await?;
    Ok(added == 1)
}

/// Resumes `queue`; `true` if it was paused.
pub async fn resume(redis: &Redis, queue: QueueName) -> redis::RedisResult<bool> {
    let mut conn = redis.connection();
    let removed: u64 = redis::cmd("SREM")
        .arg(key(redis))
        .arg(queue.as_str())
        .query_async(&mut conn)
        .await?;
    Ok(removed == 1)
}

/// The queues paused now.
pub async fn paused(redis: &Redis) -> redis::RedisResult<BTreeSet<QueueName>> {
    let mut conn = redis.connection();
    let names: Vec<String> = redis::cmd("SMEMBERS")
        .arg(key(redis))
        .query_async(&mut conn)
        .await?;
    Ok(names.iter().filter_map(|n| n.parse().ok()).collect())
}

/// The paused set as last read from Redis, refreshed in the background.
#[derive(Debug, Clone)]
pub struct PauseWatch {
    state: watch::Receiver<BTreeSet<QueueName>>,
}

impl PauseWatch {
    /// Starts refreshing every `interval` until `stop` turns true. While Redis is
    /// unreachable the last known state holds (workers cannot fetch then anyway).
    pub fn spawn(redis: Redis, interval: Duration, mut stop: watch::Receiver<bool>) -> Self {
        let (tx, rx) = watch::channel(BTreeSet::new());
        tokio::spawn(async move {
            loop {
                match paused(&redis).await {
                    Ok(set) => {
                        tx.send_if_modified(|current| {
                            let changed = *current != set;
                            if changed {
                                tracing::info!(paused = ?set, "paused queues changed");
                                *current = set;
                            }
                            changed
                        });
                    }
                    Err(err) => tracing::debug!(error = %err, "cannot read paused queues"),
                }
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    _ = stop.changed() => {}
                }
                if *stop.borrow() || tx.is_closed() {
                    return;
                }
            }
        });
        PauseWatch { state: rx }
    }

    /// A watch that never changes: nothing paused (tests, tools).
    pub fn never() -> Self {
        let (_tx, rx) = watch::channel(BTreeSet::new());
        PauseWatch { state: rx }
    }

    pub fn is_paused(&self, queue: QueueName) -> bool {
        self.state.borrow().contains(&queue)
    }

    /// Waits until `queue` is not paused (at once if it is not).
    pub async fn wait_running(&mut self, queue: QueueName) {
        // A closed channel (the refresher stopped) keeps the last state; stop waiting.
        let _ = self.state.wait_for(|set| !set.contains(&queue)).await;
    }
}
