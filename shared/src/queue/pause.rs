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
    /// Reads the paused set once, then refreshes it every `interval` until `stop`
    /// turns true (or its sender is dropped). The first read happens before this
    /// returns, so a worker started while a queue is paused never takes it; if Redis
    /// does not answer it, nothing counts as paused (no worker can fetch then anyway).
    /// While Redis is unreachable the last known state holds.
    pub async fn start(redis: Redis, interval: Duration, mut stop: watch::Receiver<bool>) -> Self {
        let initial = match paused(&redis).await {
            Ok(set) => set,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read paused queues; assuming none");
                BTreeSet::new()
            }
        };
        if !initial.is_empty() {
            tracing::info!(paused = ?initial, "queues paused by an operator");
        }
        let (tx, rx) = watch::channel(initial);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    changed = stop.changed() => {
                        // A dropped sender can never say stop: stop now rather than
                        // spin on an error that returns at once.
                        if changed.is_err() {
                            return;
                        }
                    }
                }
                if *stop.borrow() || tx.is_closed() {
                    return;
                }
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

    /// Waits until `queue` is not paused (at once if it is not). `false` if the
    /// refresher stopped while it was paused: the state is then final, and waiting
    /// again would return at once.
    pub async fn wait_running(&mut self, queue: QueueName) -> bool {
        self.state
            .wait_for(|set| !set.contains(&queue))
            .await
            .is_ok()
    }

    /// Waits for the paused set to change; `false` once the refresher has stopped.
    pub async fn changed(&mut self) -> bool {
        self.state.changed().await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn never_is_running_and_reports_its_refresher_gone() {
        let mut watch = PauseWatch::never();
        assert!(!watch.is_paused(QueueName::Emails));
        assert!(watch.wait_running(QueueName::Emails).await);
        assert!(!watch.changed().await);
    }

    #[tokio::test]
    async fn the_watch_sees_a_pause_at_start_and_each_change_within_an_interval() {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
        let redis = Redis::connect_lazy_to(&url, &prefix).expect("redis url");
        assert!(pause(&redis, QueueName::Emails).await.expect("pause"));
        assert!(!pause(&redis, QueueName::Emails).await.expect("pause again"));
        let (stop_tx, stop) = watch::channel(false);
        let mut watch = PauseWatch::start(redis.clone(), Duration::from_millis(50), stop).await;
        assert!(
            watch.is_paused(QueueName::Emails),
            "read before start returns"
        );
        assert!(!watch.is_paused(QueueName::Scans));

        assert!(resume(&redis, QueueName::Emails).await.expect("resume"));
        let within = Duration::from_secs(2);
        let running = tokio::time::timeout(within, watch.wait_running(QueueName::Emails)).await;
        assert_eq!(running, Ok(true));

        pause(&redis, QueueName::Scans).await.expect("pause scans");
        assert_eq!(
            tokio::time::timeout(within, watch.changed()).await,
            Ok(true)
        );
        assert!(watch.is_paused(QueueName::Scans));
        assert_eq!(
            paused(&redis).await.expect("paused"),
            BTreeSet::from([QueueName::Scans])
        );

        stop_tx.send(true).expect("the refresher listens");
        assert_eq!(
            tokio::time::timeout(within, watch.changed()).await,
            Ok(false)
        );
        resume(&redis, QueueName::Scans)
            .await
            .expect("resume scans");
    }
}
