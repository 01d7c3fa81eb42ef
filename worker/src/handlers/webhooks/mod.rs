//! The `webhooks` queue: one signed completion webhook delivery per job, POSTed
//! through the guarded [`client`] (Standard Webhooks headers; the `webhook-id` is the
//! delivery's id, stable across retries). A 2xx succeeds; any other answer, a timeout
//! or a network error is retried by the runtime with the queue's backoff until
//! `WEBHOOK_MAX_ATTEMPTS`, then dead. A refused destination (an address deliveries may
//! not reach, directly, by DNS or by redirect) is dead at once: retrying cannot make it
//! allowed, and an attacker probing the network learns nothing from a retry schedule.

pub mod client;

use shared::Config;
use shared::crypto::pii::PiiCipher;
use shared::db::jobs::ClaimedJob;
use shared::db::requests::{self, RequestRow};
use shared::db::webhooks::{self as repo, Delivery};
use shared::jobs::webhooks::WebhookJob;
use shared::telemetry::metric;
use shared::webhooks::RequestFinishedEvent;
use sqlx::PgPool;
use time::OffsetDateTime;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::handler::{Handler, Outcome};

/// How one attempt ended.
#[derive(Debug)]
enum Attempt {
    Delivered(u16),
    Failed {
        error: String,
        status: Option<u16>,
    },
    /// Never to be sent: `detail` for operators and the logs, `owner` for the
    /// request's owner (who must not learn what a name resolves to inside).
    Refused {
        detail: String,
        owner: &'static str,
    },
}

/// What the owner reads of a refused address, whatever the resolver found.
const NOT_PUBLIC: &str = "the callback address is not a public address";

impl Attempt {
    fn not_public(detail: impl std::fmt::Display) -> Self {
        Attempt::Refused {
            detail: detail.to_string(),
            owner: NOT_PUBLIC,
        }
    }
}

pub struct Webhooks {
    pool: PgPool,
    cipher: PiiCipher,
    client: reqwest::Client,
    allowed: Vec<shared::webhooks::Cidr>,
    timeout: std::time::Duration,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").finish_non_exhaustive()
    }
}

impl Webhooks {
    pub fn new(config: &Config, pool: PgPool) -> anyhow::Result<Self> {
        let settings = &config.webhooks;
        let client = client::build(&settings.allowed_networks, settings.timeout)
            .map_err(|err| anyhow::anyhow!("cannot build the webhook client: {err}"))?;
        Ok(Webhooks {
            pool,
            cipher: config.pii.cipher(),
            client,
            allowed: settings.allowed_networks.clone(),
            timeout: settings.timeout,
        })
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

    async fn attempt(&self, delivery: &Delivery, request: &RequestRow) -> Attempt {
        match self.secrets(request.owner_id).await {
            Ok(secrets) if secrets.is_empty() => Attempt::Refused {
                detail: "the owner has no signing secret".into(),
                owner: "the account has no webhook signing secret",
            },
            Ok(secrets) => self.send(delivery, request, &secrets).await,
            Err(error) => Attempt::Failed {
                error,
                status: None,
            },
        }
    }

    async fn send(
        &self,
        delivery: &Delivery,
        request: &RequestRow,
        secrets: &[Vec<u8>],
    ) -> Attempt {
        let url = match url::Url::parse(&delivery.url) {
            Ok(url) => url,
            Err(err) => {
                return Attempt::Refused {
                    detail: format!("not a URL: {err}"),
                    owner: "the callback address is not a URL",
                };
            }
        };
        if let Some(refused) = client::literal_refusal(&url, &self.allowed) {
            return Attempt::not_public(refused);
        }
        let body = match serde_json::to_vec(&RequestFinishedEvent::new(&delivery.event, request)) {
            Ok(body) => body,
            Err(err) => {
                return Attempt::Failed {
                    error: format!("cannot encode the event: {err}"),
                    status: None,
                };
            }
        };
        let webhook_id = delivery.id.to_string();
        let timestamp = OffsetDateTime::now_utc().unix_timestamp();
        let keys: Vec<&[u8]> = secrets.iter().map(Vec::as_slice).collect();
        let signature = shared::webhooks::signature_header(&keys, &webhook_id, timestamp, &body);
        // The HTTP client span (the URL without its query, which may carry a secret);
        // the receiver gets its `traceparent` and can continue the trace.
        let span = tracing::info_span!(
            target: "conveyor_trace",
            "webhook",
            otel.name = "POST",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = "POST",
            server.address = url.host_str().unwrap_or_default(),
            url.full = %format_args!("{}://{}{}", url.scheme(), url.host_str().unwrap_or_default(), url.path()),
            http.response.status_code = tracing::field::Empty,
        );
        let mut post = self
            .client
            .post(url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature);
        if let Some(traceparent) = shared::otel::traceparent_of(&span) {
            post = post.header("traceparent", traceparent);
        }
        let sent = post.body(body).send().instrument(span.clone()).await;
        match &sent {
            Ok(response) => {
                span.record("http.response.status_code", response.status().as_u16());
                if !response.status().is_success() {
                    span.record("otel.status_code", "ERROR");
                }
            }
            Err(_) => {
                span.record("otel.status_code", "ERROR");
            }
        }
        match sent {
            Ok(response) if response.status().is_success() => {
                Attempt::Delivered(response.status().as_u16())
            }
            Ok(response) => Attempt::Failed {
                error: format!("the receiver answered {}", response.status()),
                status: Some(response.status().as_u16()),
            },
            Err(err) => match client::refused_in(&err) {
                Some(refused) => Attempt::not_public(refused),
                None if err.is_timeout() => Attempt::Failed {
                    error: format!("no answer within {} s", self.timeout.as_secs()),
                    status: None,
                },
                // Never the URL: its path or query may hold the receiver's secret, and
                // the error is kept (the job's last error, the delivery's) and shown.
                None => Attempt::Failed {
                    error: client::describe(&err.without_url()),
                    status: None,
                },
            },
        }
    }
}

impl Handler for Webhooks {
    type Job = WebhookJob;

    async fn handle(&self, job: &ClaimedJob, payload: WebhookJob) -> Outcome {
        let id = payload.delivery_id;
        let delivery = match repo::delivery(&self.pool, id).await {
            Ok(Some(delivery)) => delivery,
            // Deleted with its request (retention): there is nothing left to deliver.
            Ok(None) => return Outcome::Dead("the request no longer exists".into()),
            Err(err) => return Outcome::Retry(format!("database: {err}")),
        };
        let request = match requests::find(&self.pool, delivery.request_id, None).await {
            Ok(Some(request)) => request,
            Ok(None) => return Outcome::Dead("the request no longer exists".into()),
            Err(err) => return Outcome::Retry(format!("database: {err}")),
        };
        let attempt = self.attempt(&delivery, &request).await;
        let (answered, refusal) = match &attempt {
            Attempt::Delivered(status) => (Some(*status), None),
            Attempt::Failed { status, .. } => (*status, None),
            Attempt::Refused { owner, .. } => (None, Some(*owner)),
        };
        if let Err(err) = repo::record_answer(&self.pool, id, answered, refusal).await {
            tracing::warn!(delivery = %id, error = %err, "cannot record the receiver's answer");
        }
        // The label says what this attempt leads to: the runtime retries a failure
        // while attempts remain, exactly as `executor::decide` does.
        let label = match &attempt {
            Attempt::Delivered(_) => "delivered",
            Attempt::Refused { .. } => "refused",
            Attempt::Failed { .. } if job.attempt < job.max_attempts => "retried",
            Attempt::Failed { .. } => "dead",
        };
        metrics::counter!(metric::WEBHOOK_DELIVERIES_TOTAL, "outcome" => label).increment(1);
        match attempt {
            Attempt::Delivered(_) => {
                if let Some(finished) = request.finished_at {
                    let latency = (OffsetDateTime::now_utc() - finished)
                        .as_seconds_f64()
                        .max(0.0);
                    metrics::histogram!(metric::WEBHOOK_DELIVERY_LATENCY_SECONDS).record(latency);
                }
                Outcome::Succeeded
            }
            Attempt::Failed { error, .. } => Outcome::Retry(error),
            Attempt::Refused { detail, .. } => {
                tracing::warn!(delivery = %id, request = %request.id, error = %detail, "webhook delivery refused");
                Outcome::Dead(format!("refused: {detail}"))
            }
        }
    }
}
