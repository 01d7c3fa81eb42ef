//! One Redis subscription per api process for every event stream. The hub
//! pattern-subscribes to the request event channels once (reconnecting when Redis
//! drops it) and fans each event out to the streams following that request, so 400
//! open streams cost one Redis connection, not 400. It also counts streams per user
//! (`SSE_MAX_STREAMS_PER_USER`, per api process). On a Redis Cluster the subscription
//! is on one node (classic `PUBLISH` reaches every node); when that node goes away the
//! hub resubscribes on the next seed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use shared::events::{self, Progress};
use shared::redis::Redis;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::error::ApiError;

/// Events buffered per followed request before a slow stream skips some (it then
/// reads the current state from the next event; each event is a full state).
const BUFFER: usize = 16;
/// How long a first stream waits for the hub's subscription before it goes on
/// without (it still sends the state from PostgreSQL first).
const READY_WAIT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct EventHub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    redis: Redis,
    max_per_user: usize,
    routes: Mutex<HashMap<Uuid, broadcast::Sender<Progress>>>,
    per_user: Mutex<HashMap<Uuid, usize>>,
    /// True while the hub's subscription is active; `None` until the hub starts.
    subscribed: Mutex<Option<watch::Receiver<bool>>>,
}

/// One stream's place in the hub; leaving it (drop) frees the slot.
#[derive(Debug)]
pub struct Subscription {
    hub: EventHub,
    request: Uuid,
    user: Uuid,
    pub receiver: broadcast::Receiver<Progress>,
}

impl EventHub {
    pub fn new(redis: Redis, max_per_user: usize) -> Self {
        EventHub {
            inner: Arc::new(Inner {
                redis,
                max_per_user,
                routes: Mutex::new(HashMap::new()),
                per_user: Mutex::new(HashMap::new()),
                subscribed: Mutex::new(None),
            }),
        }
    }

    /// Streams open now (all users), for tests and metrics.
    pub fn open_streams(&self) -> usize {
        self.inner
            .per_user
            .lock()
            .map(|m| m.values().sum())
            .unwrap_or(0)
    }

    /// A place for one stream of `user` following `request`: 429 past the per-user
    /// cap. Register before reading the state to send first, so no event is missed.
    pub async fn subscribe(&self, user: Uuid, request: Uuid) -> Result<Subscription, ApiError> {
        {
            let mut per_user = self
                .inner
                .per_user
                .lock()
                .map_err(|_| ApiError::Internal(anyhow::anyhow!("event hub poisoned")))?;
            let open = per_user.entry(user).or_insert(0);
            if *open >= self.inner.max_per_user {
                return Err(ApiError::RateLimited(Duration::from_secs(15)));
            }
            *open += 1;
        }
        let receiver = match self.inner.routes.lock() {
            Ok(mut routes) => routes
                .entry(request)
                .or_insert_with(|| broadcast::channel(BUFFER).0)
                .subscribe(),
            Err(_) => {
                self.release_user(user);
                return Err(ApiError::Internal(anyhow::anyhow!("event hub poisoned")));
            }
        };
        let subscription = Subscription {
            hub: self.clone(),
            request,
            user,
            receiver,
        };
        self.wait_until_subscribed().await;
        Ok(subscription)
    }

    fn release_user(&self, user: Uuid) {
        if let Ok(mut per_user) = self.inner.per_user.lock()
            && let Some(open) = per_user.get_mut(&user)
        {
            *open = open.saturating_sub(1);
            if *open == 0 {
                per_user.remove(&user);
            }
        }
    }

    /// Starts the listener on first use, then waits (briefly) for its subscription.
    async fn wait_until_subscribed(&self) {
        let mut ready = {
            let Ok(mut slot) = self.inner.subscribed.lock() else {
                return;
            };
            match &*slot {
                Some(ready) => ready.clone(),
                None => {
                    let (tx, rx) = watch::channel(false);
                    tokio::spawn(listen(self.inner.clone(), tx));
                    *slot = Some(rx.clone());
                    rx
                }
            }
        };
        if !*ready.borrow() {
            let _ = tokio::time::timeout(READY_WAIT, ready.wait_for(|up| *up)).await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Ok(mut routes) = self.hub.inner.routes.lock()
            && routes
                .get(&self.request)
                .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            routes.remove(&self.request);
        }
        self.hub.release_user(self.user);
    }
}

/// The request id of an event channel name.
fn request_of(channel: &str) -> Option<Uuid> {
    channel.rsplit(':').next().and_then(|id| id.parse().ok())
}

/// The hub's one subscription: pattern-subscribes to every request's channel and
/// fans events out; reconnects after a second when Redis drops it.
async fn listen(inner: Arc<Inner>, subscribed: watch::Sender<bool>) {
    let pattern = events::channel_pattern(&inner.redis);
    loop {
        match inner.redis.pubsub().await {
            Ok(mut pubsub) => match pubsub.psubscribe(&pattern).await {
                Ok(()) => {
                    let _ = subscribed.send(true);
                    tracing::debug!(pattern = %pattern, "event hub subscribed");
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let Some(request) = request_of(message.get_channel_name()) else {
                            continue;
                        };
                        let Ok(payload) = message.get_payload::<String>() else {
                            continue;
                        };
                        let Ok(progress) = serde_json::from_str::<Progress>(&payload) else {
                            continue;
                        };
                        if let Ok(routes) = inner.routes.lock()
                            && let Some(sender) = routes.get(&request)
                        {
                            let _ = sender.send(progress);
                        }
                    }
                    let _ = subscribed.send(false);
                    tracing::warn!("event hub lost its Redis subscription; reconnecting");
                }
                Err(err) => tracing::warn!(error = %err, "event hub cannot subscribe"),
            },
            Err(err) => tracing::warn!(error = %err, "event hub cannot reach Redis"),
        }
        if subscribed.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_give_their_request() {
        let id = Uuid::now_v7();
        assert_eq!(
            request_of(&format!("conveyor:{{events}}:request:{id}")),
            Some(id)
        );
        assert_eq!(request_of("conveyor:{events}:request:nope"), None);
    }
}
