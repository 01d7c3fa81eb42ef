//! Completion webhooks, delivered: the deliverer wakes on the `conveyor_webhooks`
//! notification (the enqueue trigger sends it when a request with a `callback_url`
//! finishes) and polls every `WEBHOOK_POLL_INTERVAL_MS` as a fallback; it claims due
//! deliveries with `FOR UPDATE SKIP LOCKED` (a lease, so workers never make the same
//! attempt at once), POSTs each signed event through the guarded [`client`] with
//! bounded concurrency, and records the outcome: `delivered` on a 2xx, else retried
//! with exponential backoff until `WEBHOOK_MAX_ATTEMPTS`, then `dead`. A refused
//! destination (an address deliveries may not reach, directly, by DNS or by
//! redirect) is `dead` at once: retrying cannot make it allowed, and an attacker
//! probing the network learns nothing from a retry schedule.
//! On shutdown it claims nothing more, lets in-flight attempts finish within the
//! grace period and gives back the rest (due at once, not counted).

pub mod client;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use shared::Config;
use shared::crypto::pii::PiiCipher;
use shared::db::requests::{self, RequestRow};
use shared::db::webhooks::{self as repo, Claimed};
use shared::telemetry::metric;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use time::OffsetDateTime;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

/// A claim is leased for the attempt's timeout plus this margin; past it another
/// worker may take the delivery (this one vanished).
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// The body of a `request.finished` event: the request's final state.
pub fn event_body(event: &str, request: &RequestRow) -> serde_json::Value {
    let rfc3339 = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    json!({
        "type": event,
        "timestamp": request.finished_at.map(rfc3339),
        "data": {
            "id": request.id,
            "kind": request.kind,
            "status": request.status,
            "name": request.name,
            "total": request.total,
            "succeeded": request.succeeded,
            "failed": request.failed,
            "cancelled": request.cancelled,
            "suppressed": request.suppressed,
            "created_at": rfc3339(request.created_at),
            "finished_at": request.finished_at.map(rfc3339),
            "location": format!("/api/v1/requests/{}", request.id),
        }
    })
}

/// How one attempt ended.
#[derive(Debug)]
enum Outcome {
    Delivered(u16),
    Failed { error: String, status: Option<u16> },
    Refused(String),
}

/// The deliverer of one worker process.
#[derive(Clone)]
pub struct Deliverer {
    pool: PgPool,
    config: Arc<Config>,
    cipher: PiiCipher,
    client: reqwest::Client,
    /// Claimed attempts not yet recorded: given back on shutdown.
    in_flight: Arc<Mutex<HashMap<Uuid, i32>>>,
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer").finish_non_exhaustive()
    }
}

impl Deliverer {
    pub fn new(config: Arc<Config>, pool: PgPool) -> anyhow::Result<Self> {
        let client = client::build(&config.webhooks.allowed_networks, config.webhooks.timeout)
            .map_err(|err| anyhow::anyhow!("cannot build the webhook client: {err}"))?;
        Ok(Deliverer {
            cipher: config.pii.cipher(),
            pool,
            config,
            client,
            in_flight: Arc::default(),
        })
    }

    /// Delivers until `stop` turns true, then finishes in-flight attempts within
    /// `grace` and gives back the others.
    pub async fn run(self, mut stop: watch::Receiver<bool>, grace: Duration) {
        let settings = &self.config.webhooks;
        let slots = Arc::new(Semaphore::new(settings.concurrency));
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut listener = listen(&self.pool).await;
        let mut more_due = true;
        loop {
            if *stop.borrow() {
                break;
            }
            let free = slots.available_permits();
            if more_due && free > 0 {
                more_due = match self.claim(free).await {
                    Ok(claimed) => {
                        let full = claimed.len() == free;
                        for delivery in claimed {
                            let Ok(permit) = slots.clone().try_acquire_owned() else {
                                break;
                            };
                            let this = self.clone();
                            tasks.spawn(async move {
                                this.attempt(delivery).await;
                                drop(permit);
                            });
                        }
                        full
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot claim webhook deliveries");
                        false
                    }
                };
                if more_due && slots.available_permits() > 0 {
                    continue;
                }
            }
            tokio::select! {
                _ = stop.changed() => {}
                notified = recv(&mut listener) => {
                    if let Err(err) = notified {
                        tracing::warn!(error = %err, "webhook notifications lost; polling until they return");
                        listener = None;
                    }
                    more_due = true;
                }
                () = tokio::time::sleep(settings.poll_interval) => {
                    if listener.is_none() {
                        listener = listen(&self.pool).await;
                    }
                    more_due = true;
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        self.release().await;
    }

    async fn claim(&self, limit: usize) -> Result<Vec<Claimed>, sqlx::Error> {
        let lease = self.config.webhooks.timeout + LEASE_MARGIN;
        let claimed = repo::claim(&self.pool, i64::try_from(limit).unwrap_or(1), lease).await?;
        if let Ok(mut in_flight) = self.in_flight.lock() {
            in_flight.extend(claimed.iter().map(|c| (c.id, c.attempts)));
        }
        Ok(claimed)
    }

    /// Gives back the attempts claimed but not recorded (aborted at shutdown).
    async fn release(&self) {
        let left: Vec<(Uuid, i32)> = self
            .in_flight
            .lock()
            .map(|mut m| m.drain().collect())
            .unwrap_or_default();
        if left.is_empty() {
            return;
        }
        match repo::release(&self.pool, &left).await {
            Ok(n) => tracing::info!(deliveries = n, "gave back unfinished webhook deliveries"),
            Err(err) => {
                tracing::warn!(error = %err, "cannot give back webhook deliveries; their lease will")
            }
        }
    }

    /// One attempt of `delivery`, sent and recorded.
    async fn attempt(&self, delivery: Claimed) {
        let (id, attempt) = (delivery.id, delivery.attempts);
        let request = match requests::find(&self.pool, delivery.request_id, None).await {
            Ok(Some(request)) => request,
            // Deleted with its request (retention): nothing to deliver.
            Ok(None) => return self.forget(id),
            Err(err) => {
                self.record(
                    &delivery,
                    None,
                    Outcome::Failed {
                        error: format!("database: {err}"),
                        status: None,
                    },
                )
                .await;
                return;
            }
        };
        let outcome = match self.secrets(request.owner_id).await {
            Ok(secrets) if secrets.is_empty() => {
                Outcome::Refused("the owner has no signing secret".into())
            }
            Ok(secrets) => self.send(&delivery, &request, &secrets).await,
            Err(error) => Outcome::Failed {
                error,
                status: None,
            },
        };
        tracing::debug!(delivery = %id, attempt, outcome = ?outcome, "webhook attempt");
        self.record(&delivery, request.finished_at, outcome).await;
    }

    /// The owner's signing secrets, current first.
    async fn secrets(&self, owner: Uuid) -> Result<Vec<Vec<u8>>, String> {
        let sealed = repo::signing_secrets(&self.pool, owner)
            .await
            .map_err(|err| format!("database: {err}"))?;
        sealed
            .iter()
            .map(|s| {
                self.cipher
                    .decrypt(shared::webhooks::SECRET_PURPOSE, s)
                    .ok()
                    .and_then(|text| shared::webhooks::decode_secret(&text))
                    .ok_or_else(|| "the signing secret cannot be opened".to_owned())
            })
            .collect()
    }

    async fn send(&self, delivery: &Claimed, request: &RequestRow, secrets: &[Vec<u8>]) -> Outcome {
        let allowed = &self.config.webhooks.allowed_networks;
        let url = match url::Url::parse(&delivery.url) {
            Ok(url) => url,
            Err(err) => return Outcome::Refused(format!("not a URL: {err}")),
        };
        if let Some(refused) = client::literal_refusal(&url, allowed) {
            return Outcome::Refused(refused.to_string());
        }
        let body = match serde_json::to_vec(&event_body(&delivery.event, request)) {
            Ok(body) => body,
            Err(err) => {
                return Outcome::Failed {
                    error: format!("cannot encode the event: {err}"),
                    status: None,
                };
            }
        };
        let webhook_id = delivery.id.to_string();
        let timestamp = OffsetDateTime::now_utc().unix_timestamp();
        let keys: Vec<&[u8]> = secrets.iter().map(Vec::as_slice).collect();
        let signature = shared::webhooks::signature_header(&keys, &webhook_id, timestamp, &body);
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                Outcome::Delivered(response.status().as_u16())
            }
            Ok(response) => Outcome::Failed {
                error: format!("the receiver answered {}", response.status()),
                status: Some(response.status().as_u16()),
            },
            Err(err) => match client::refused_in(&err) {
                Some(refused) => Outcome::Refused(refused.to_string()),
                None if err.is_timeout() => Outcome::Failed {
                    error: format!(
                        "no answer within {} s",
                        self.config.webhooks.timeout.as_secs()
                    ),
                    status: None,
                },
                None => Outcome::Failed {
                    error: client::describe(&err),
                    status: None,
                },
            },
        }
    }

    /// Writes how the attempt ended (if it is still this worker's) and counts it.
    async fn record(
        &self,
        delivery: &Claimed,
        finished_at: Option<OffsetDateTime>,
        outcome: Outcome,
    ) {
        let (id, attempt) = (delivery.id, delivery.attempts);
        let settings = &self.config.webhooks;
        let attempts_made = u32::try_from(attempt).unwrap_or(u32::MAX);
        let (written, label) = match &outcome {
            Outcome::Delivered(status) => (
                repo::mark_delivered(&self.pool, id, attempt, *status).await,
                "delivered",
            ),
            Outcome::Failed { error, status } => {
                let retry_at = (attempts_made < settings.max_attempts)
                    .then(|| OffsetDateTime::now_utc() + settings.backoff(attempts_made));
                let label = if retry_at.is_some() {
                    "retried"
                } else {
                    "dead"
                };
                (
                    repo::mark_failed(&self.pool, id, attempt, error, *status, retry_at).await,
                    label,
                )
            }
            Outcome::Refused(error) => (
                repo::mark_failed(
                    &self.pool,
                    id,
                    attempt,
                    &format!("refused: {error}"),
                    None,
                    None,
                )
                .await,
                "refused",
            ),
        };
        self.forget(id);
        match written {
            Ok(true) => {
                metrics::counter!(metric::WEBHOOK_DELIVERIES_TOTAL, "outcome" => label)
                    .increment(1);
                if let (Outcome::Delivered(_), Some(finished)) = (&outcome, finished_at) {
                    let latency = (OffsetDateTime::now_utc() - finished)
                        .as_seconds_f64()
                        .max(0.0);
                    metrics::histogram!(metric::WEBHOOK_DELIVERY_LATENCY_SECONDS).record(latency);
                }
                match label {
                    "dead" | "refused" => {
                        tracing::warn!(delivery = %id, request = %delivery.request_id, attempt, outcome = ?outcome, "webhook delivery gave up")
                    }
                    _ => {
                        tracing::debug!(delivery = %id, attempt, outcome = label, "webhook attempt recorded")
                    }
                }
            }
            // The lease ran out and another worker took the delivery: its outcome wins.
            Ok(false) => {
                tracing::info!(delivery = %id, attempt, "webhook attempt outlived its lease; not recorded")
            }
            Err(err) => {
                tracing::warn!(delivery = %id, error = %err, "cannot record a webhook attempt; its lease will expire and it runs again")
            }
        }
    }

    fn forget(&self, id: Uuid) {
        if let Ok(mut in_flight) = self.in_flight.lock() {
            in_flight.remove(&id);
        }
    }
}

/// A listener on the webhooks channel, or `None` (then the poll alone drives).
async fn listen(pool: &PgPool) -> Option<PgListener> {
    let connected = async {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(shared::webhooks::CHANNEL).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    match connected.await {
        Ok(listener) => Some(listener),
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for webhook notifications; polling");
            None
        }
    }
}

/// The next notification; never, without a listener.
async fn recv(listener: &mut Option<PgListener>) -> Result<(), sqlx::Error> {
    match listener {
        Some(listener) => listener.recv().await.map(drop),
        None => std::future::pending().await,
    }
}
