//! The `emails` queue: renders one message and sends it through Conveyor's SMTP
//! client ([`crate::smtp`]: lettre's protocol on pooled `TCP_NODELAY` sockets). SMTP
//! 4xx, timeouts and refused connections are transient (retry);
//! 5xx and unusable payloads are permanent (dead). Every message carries a
//! `Message-ID` made from its job id, so a resend after a crash is recognisable.
//! Recipients never appear in a recorded or logged error.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use lettre::Message;
use lettre::message::{Mailbox, MultiPart, header};
use shared::Config;
use shared::crypto::pii::PiiCipher;
use shared::db::jobs::ClaimedJob;
use shared::domain::email::redact_addresses;

use crate::handler::{Handler, Outcome};
use crate::smtp::{SmtpClient, SmtpFailure, SmtpSettings};
use shared::jobs::email::{EmailContent, EmailJob, Sealed};
use shared::redis::Redis;
use shared::telemetry::metric;
use sqlx::PgPool;
use uuid::Uuid;

/// Why a send did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    Transient(String),
    Permanent(String),
}

impl From<SmtpFailure> for SendError {
    fn from(failure: SmtpFailure) -> Self {
        match failure {
            SmtpFailure::Transient(error) => SendError::Transient(error),
            SmtpFailure::Permanent(error) => SendError::Permanent(error),
        }
    }
}

pub struct Mailer {
    smtp: SmtpClient,
    from: Mailbox,
    cipher: PiiCipher,
    pool: PgPool,
    redis: Redis,
    per_second: u32,
    /// Campaign content by request id (every recipient's job shares it).
    content: Mutex<HashMap<Uuid, EmailContent>>,
}

impl Mailer {
    pub fn from_config(config: &Config, pool: PgPool, redis: Redis) -> anyhow::Result<Self> {
        let settings = SmtpSettings::from_url(config.smtp_url(), config.smtp.timeout)
            .map_err(|err| anyhow::anyhow!("SMTP_URL is not usable: {err}"))?;
        let smtp = SmtpClient::new(
            settings,
            usize::try_from(config.smtp.pool_size).unwrap_or(usize::MAX),
        );
        let from: Mailbox = config
            .smtp
            .from
            .parse()
            .map_err(|err| anyhow::anyhow!("SMTP_FROM is not a mailbox: {err}"))?;
        Ok(Mailer {
            smtp,
            from,
            cipher: config.pii.cipher(),
            pool,
            redis,
            per_second: config.smtp.per_second,
            content: Mutex::new(HashMap::new()),
        })
    }

    /// Sends the message of `job`.
    pub async fn send(&self, job: &ClaimedJob) -> Result<(), SendError> {
        let payload: EmailJob = serde_json::from_value(job.payload.clone())
            .map_err(|err| SendError::Permanent(format!("unreadable payload: {err}")))?;
        let content = match (&payload.content, &payload.sealed_content) {
            (Some(content), _) => content.clone(),
            (None, Some(sealed)) => sealed
                .open(&self.cipher)
                .map_err(|err| SendError::Permanent(format!("cannot open the content: {err}")))?,
            (None, None) => self.campaign_content(job.request_id).await?,
        };
        let message = self.render(job.id, &payload, &content)?;
        self.wait_for_rate().await;
        self.smtp
            .send(message.envelope(), &message.formatted())
            .await
            .map_err(SendError::from)
    }

    fn open(&self, sealed: &Sealed) -> Result<Mailbox, SendError> {
        let address = sealed
            .open(&self.cipher)
            .map_err(|err| SendError::Permanent(format!("cannot open a recipient: {err}")))?;
        address
            .parse::<Mailbox>()
            .map_err(|err| SendError::Permanent(format!("invalid recipient: {err}")))
    }

    fn render(
        &self,
        job_id: Uuid,
        payload: &EmailJob,
        content: &EmailContent,
    ) -> Result<Message, SendError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(content.subject.clone())
            .message_id(Some(format!("<{job_id}@conveyor>")))
            .header(header::MIME_VERSION_1_0);
        for to in &payload.to {
            builder = builder.to(self.open(to)?);
        }
        for cc in &payload.cc {
            builder = builder.cc(self.open(cc)?);
        }
        for bcc in &payload.bcc {
            builder = builder.bcc(self.open(bcc)?);
        }
        if let Some(reply_to) = &payload.reply_to {
            builder = builder.reply_to(self.open(reply_to)?);
        }
        let built = match &content.html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                content.text.clone(),
                html.clone(),
            )),
            None => builder
                .header(header::ContentType::TEXT_PLAIN)
                .body(content.text.clone()),
        };
        built.map_err(|err| SendError::Permanent(format!("cannot build the message: {err}")))
    }

    async fn campaign_content(&self, request_id: Uuid) -> Result<EmailContent, SendError> {
        if let Some(content) = self
            .content
            .lock()
            .ok()
            .and_then(|cache| cache.get(&request_id).cloned())
        {
            return Ok(content);
        }
        let value = shared::db::requests::content(&self.pool, request_id)
            .await
            .map_err(|err| SendError::Transient(format!("cannot load the campaign: {err}")))?
            .ok_or_else(|| SendError::Permanent("the campaign has no content".into()))?;
        let content: EmailContent = serde_json::from_value(value)
            .map_err(|err| SendError::Permanent(format!("unreadable campaign content: {err}")))?;
        if let Ok(mut cache) = self.content.lock() {
            if cache.len() > 1000 {
                cache.clear();
            }
            cache.insert(request_id, content.clone());
        }
        Ok(content)
    }

    /// `EMAILS_PER_SECOND` across every worker: a counter per second in Redis. Over
    /// the limit, wait for the next second. Redis down: send without waiting.
    async fn wait_for_rate(&self) {
        if self.per_second == 0 {
            return;
        }
        loop {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let key = self.redis.key(&format!("rate:emails:{}", now.as_secs()));
            let mut conn = self.redis.connection();
            let count: Result<(u64, ()), _> = redis::pipe()
                .incr(&key, 1)
                .expire(&key, 2)
                .query_async(&mut conn)
                .await;
            match count {
                Ok((n, ())) if n > u64::from(self.per_second) => {
                    let into_second = now.subsec_millis();
                    tokio::time::sleep(Duration::from_millis(u64::from(
                        1000 - into_second.min(999),
                    )))
                    .await;
                }
                Ok(_) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "email rate limit skipped: Redis unavailable");
                    return;
                }
            }
        }
    }
}

impl Handler for Mailer {
    /// The outcome's error goes to `jobs.last_error`, the job log line and the request
    /// view; an SMTP reply may quote a recipient, so addresses are redacted from it.
    async fn handle(&self, job: &ClaimedJob) -> Outcome {
        let (outcome, counted) = match self.send(job).await {
            Ok(()) => (Outcome::Succeeded, "sent"),
            Err(SendError::Transient(error)) => {
                (Outcome::Retry(redact_addresses(&error)), "deferred")
            }
            Err(SendError::Permanent(error)) => {
                (Outcome::Dead(redact_addresses(&error)), "rejected")
            }
        };
        metrics::counter!(metric::EMAILS_TOTAL, "outcome" => counted).increment(1);
        outcome
    }
}
