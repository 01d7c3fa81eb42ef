//! The `webhooks` queue's payload: one completion webhook delivery. The delivery's
//! row (`webhook_deliveries`, the same id as the job) names the request, the event and
//! the URL; the job carries its attempts, backoff and outcome like any other.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Job;
use crate::queue::QueueName;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookJob {
    /// The delivery (and the `webhook-id` header): stable across retries.
    pub delivery_id: Uuid,
}

impl Job for WebhookJob {
    const QUEUE: QueueName = QueueName::Webhooks;
}

/// For each of `finished` that named a `callback_url`: its `request.finished`
/// delivery (once per request: a second call finds it made) and the delivery's job,
/// in the caller's transaction.
pub async fn enqueue_deliveries(
    conn: &mut sqlx::PgConnection,
    queues: &crate::config::QueuesConfig,
    finished: &[crate::db::requests::RequestRow],
) -> Result<super::Enqueued, super::EnqueueError> {
    let wanted: Vec<(Uuid, Uuid, &str)> = finished
        .iter()
        .filter_map(|r| {
            r.callback_url
                .as_deref()
                .map(|url| (Uuid::now_v7(), r.id, url))
        })
        .collect();
    if wanted.is_empty() {
        return Ok(super::Enqueued::default());
    }
    let made = crate::db::webhooks::insert_deliveries(
        &mut *conn,
        &wanted,
        crate::webhooks::EVENT_REQUEST_FINISHED,
    )
    .await?;
    // Each delivery continues its request's trace (the submission's span).
    let traces: std::collections::HashMap<Uuid, String> = if crate::otel::on() {
        let ids: Vec<Uuid> = wanted.iter().map(|(_, request, _)| *request).collect();
        sqlx::query_as::<_, (Uuid, String)>(
            "SELECT id, trace_context FROM requests WHERE id = ANY($1) AND trace_context IS NOT NULL",
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect()
    } else {
        std::collections::HashMap::new()
    };
    let request_of: std::collections::HashMap<Uuid, Uuid> = wanted
        .iter()
        .map(|(delivery, request, _)| (*delivery, *request))
        .collect();
    let jobs = made
        .into_iter()
        .map(|delivery_id| {
            let trace = request_of
                .get(&delivery_id)
                .and_then(|request| traces.get(request))
                .cloned();
            super::NewJob::of(&WebhookJob { delivery_id })
                .map(|j| j.with_id(delivery_id).traced(trace))
        })
        .collect::<Result<Vec<_>, _>>()?;
    super::enqueue_many(conn, queues, &jobs).await
}
