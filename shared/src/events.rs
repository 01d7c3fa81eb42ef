//! Request status events over Redis pub/sub: the worker publishes every change, the
//! api streams them to clients as Server-Sent Events. Best effort — a client that
//! misses one still reads the truth from PostgreSQL, which the stream sends first.

use serde::Serialize;
use uuid::Uuid;

use crate::db::requests::RequestRow;
use crate::redis::{Redis, hash_tag};

/// The channel of one request's events: `<p>:{events}:request:<id>`. Every channel
/// shares the hash tag `{events}`, so one pipeline of `PUBLISH`es to many requests is
/// one hash slot, which a Redis Cluster connection requires of a pipeline. (Classic
/// `PUBLISH` reaches every node of a cluster anyway, whatever the slot.)
pub fn channel(redis: &Redis, request_id: Uuid) -> String {
    redis.key(&format!("{}:request:{request_id}", hash_tag("events")))
}

/// The pattern matching every request's channel (one subscription per api process).
/// Braces are not special in a glob pattern.
pub fn channel_pattern(redis: &Redis) -> String {
    redis.key(&format!("{}:request:*", hash_tag("events")))
}

/// What a client sees of a request's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Progress {
    pub id: Uuid,
    pub status: crate::domain::RequestStatus,
    pub total: i32,
    pub succeeded: i32,
    pub failed: i32,
    pub cancelled: i32,
    /// Messages not sent: every recipient was on the sender's suppression list.
    pub suppressed: i32,
    pub pending: i32,
    /// True once the request reached its final status.
    pub finished: bool,
    /// One more with every change of the request: a stream never sends a state whose
    /// version is not above the last it sent, so progress never goes backwards.
    pub version: i64,
}

impl From<&RequestRow> for Progress {
    fn from(row: &RequestRow) -> Self {
        Progress {
            id: row.id,
            status: row.status,
            total: row.total,
            succeeded: row.succeeded,
            failed: row.failed,
            cancelled: row.cancelled,
            suppressed: row.suppressed,
            pending: row.pending(),
            finished: row.finished_at.is_some(),
            version: row.version,
        }
    }
}

/// Publishes the current state of each request; failures are logged, never raised.
pub async fn publish(redis: &Redis, rows: &[RequestRow]) {
    if rows.is_empty() {
        return;
    }
    let mut pipe = redis::pipe();
    for row in rows {
        match serde_json::to_string(&Progress::from(row)) {
            Ok(body) => {
                pipe.publish(channel(redis, row.id), body).ignore();
            }
            Err(err) => tracing::warn!(error = %err, "cannot encode a request event"),
        }
    }
    let mut conn = redis.connection();
    if let Err(err) = pipe.query_async::<()>(&mut conn).await {
        tracing::warn!(error = %err, "cannot publish request events");
    }
}
