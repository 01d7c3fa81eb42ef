//! The `emails` queue: renders one message and sends it through Conveyor's SMTP
//! client ([`crate::smtp`]: lettre's protocol on pooled `TCP_NODELAY` sockets).
//!
//! Before a send: recipients on the sender's suppression list are dropped (all of
//! them: the job ends `suppressed`, nothing sent), then the recipient domains' pace
//! is taken ([`crate::pacing`]; over it the job is deferred without spending an
//! attempt). Campaign mail carries a one-click unsubscribe link (RFC 8058).
//!
//! SMTP 4xx, timeouts and refused connections are transient (retry; a 4xx also
//! pauses the domain); a recipient refused for good (5xx to `RCPT TO`) is added to
//! the sender's suppression list and counted as a bounce — the message still goes to
//! the others, and is dead only when every recipient was refused. Messages are
//! DKIM-signed when a key is configured ([`crate::dkim`]). Every message
//! carries a `Message-ID` made from its job id, so a resend after a crash, or a
//! bounce report, is recognisable. Recipients never appear in a recorded or logged
//! error.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart, header};
use shared::Config;
use shared::crypto::pii::PiiCipher;
use shared::db::jobs::ClaimedJob;
use shared::db::suppressions::{self, EventKind, NewSuppression};
use shared::domain::email::redact_addresses;
use shared::storage::Storage;
use shared::suppression::{AddressKeys, Reason};

use crate::caps::{CampaignLimits, Caps, Taken};
use crate::dkim::DkimSigner;
use crate::handler::{Handler, Outcome};
use crate::handlers::attachments::{Attached, Attachments, Refused};
use crate::pacing::Pacer;
use crate::smtp::{Refusal, SmtpClient, SmtpFailure, SmtpSettings};
use shared::jobs::email::{CampaignContent, CampaignRecord, EmailContent, EmailJob, Sealed};
use shared::mail::compose;
use shared::mail::template::{Limits, Source, Template};
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

/// A campaign's shared part, read once per request and process.
#[derive(Debug, Clone)]
struct Campaign {
    owner: Uuid,
    content: Content,
    limits: CampaignLimits,
    /// Uploads attached to every message.
    attachments: Vec<Uuid>,
}

/// A campaign's messages: the same content for all, or a template rendered with each
/// recipient's variables (parsed once).
#[derive(Debug, Clone)]
enum Content {
    Plain(EmailContent),
    Template {
        template: Arc<Template>,
        inline_css: bool,
        shared: serde_json::Map<String, serde_json::Value>,
    },
}

/// One recipient of a message, opened.
struct Recipient {
    field: Field,
    mailbox: Mailbox,
    /// Normalized (lowercase): what the suppression list is keyed by.
    address: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    To,
    Cc,
    Bcc,
}

pub struct Mailer {
    smtp: SmtpClient,
    from: Mailbox,
    cipher: PiiCipher,
    keys: AddressKeys,
    pool: PgPool,
    redis: Redis,
    per_second: u32,
    public_url: String,
    pacer: Pacer,
    /// Signs every message when `DKIM_*` is configured.
    dkim: Option<DkimSigner>,
    /// Send windows and daily caps.
    caps: Caps,
    attachments: Attachments,
    /// Campaigns by request id (every recipient's job shares one).
    campaigns: Mutex<HashMap<Uuid, Campaign>>,
}

impl Mailer {
    pub fn from_config(
        config: &Config,
        pool: PgPool,
        redis: Redis,
        storage: Storage,
    ) -> anyhow::Result<Self> {
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
            keys: config.address_keys(),
            pacer: Pacer::new(redis.clone(), config.mail.pacing.clone()),
            dkim: config.dkim.as_ref().map(DkimSigner::new).transpose()?,
            caps: Caps::new(pool.clone()),
            attachments: Attachments::new(pool.clone(), storage),
            pool,
            redis,
            per_second: config.smtp.per_second,
            public_url: config.mail.public_url.clone(),
            campaigns: Mutex::new(HashMap::new()),
        })
    }

    /// Sends the message of `job` to its recipients that are not suppressed.
    pub async fn deliver(&self, job: &ClaimedJob, payload: EmailJob) -> Outcome {
        let mut taken = Taken::default();
        let outcome = match self.try_deliver(job, payload, &mut taken).await {
            Ok(outcome) => outcome,
            Err(SendError::Transient(error)) => Outcome::Retry(redact_addresses(&error)),
            Err(SendError::Permanent(error)) => Outcome::Dead(redact_addresses(&error)),
        };
        if outcome != Outcome::Succeeded {
            // Admitted by a daily cap but not sent: the admission goes back.
            self.caps.give_back(taken).await;
        }
        outcome
    }

    async fn try_deliver(
        &self,
        job: &ClaimedJob,
        payload: EmailJob,
        taken: &mut Taken,
    ) -> Result<Outcome, SendError> {
        let request_id = job
            .request_id
            .ok_or_else(|| SendError::Permanent("an email job carries out a request".into()))?;
        let recipients = self.recipients(&payload)?;
        let suppressed = self.suppressed(request_id, &recipients).await?;
        let recipients: Vec<Recipient> = recipients
            .into_iter()
            .filter(|r| !suppressed.contains(&r.address))
            .collect();
        if recipients.is_empty() {
            metrics::counter!(metric::EMAILS_TOTAL, "outcome" => "suppressed").increment(1);
            return Ok(Outcome::Suppressed);
        }
        // A campaign's window and cap, then the account's cap: before the domains'
        // pace, so a message that waits for its window takes no turn of the pace.
        let campaign = match (&payload.content, &payload.sealed_content) {
            (None, None) => Some(self.campaign(request_id).await?),
            _ => None,
        };
        let now = time::OffsetDateTime::now_utc();
        let limits = campaign.as_ref().map(|c| &c.limits);
        let owner = payload.owner.or(campaign.as_ref().map(|c| c.owner));
        match self.caps.admit(now, owner, limits, taken).await {
            Ok(None) => {}
            Ok(Some(wait)) => {
                metrics::counter!(metric::EMAILS_TOTAL, "outcome" => "capped").increment(1);
                return Ok(Outcome::Defer {
                    until: wait.until,
                    reason: wait.reason,
                });
            }
            Err(err) => {
                return Err(SendError::Transient(format!(
                    "cannot check the daily caps: {err}"
                )));
            }
        }
        // The domains' pace before any rendering: a deferred message is not built.
        let mut domains: Vec<&str> = recipients
            .iter()
            .map(|r| shared::suppression::domain_of(&r.address))
            .collect();
        domains.sort_unstable();
        domains.dedup();
        let _admission = match self.pacer.admit(&domains).await {
            Ok(admission) => admission,
            Err(deferral) => {
                metrics::counter!(metric::EMAILS_TOTAL, "outcome" => "paced").increment(1);
                return Ok(Outcome::Defer {
                    until: deferral.until,
                    reason: deferral.reason,
                });
            }
        };
        let (content, unsubscribe) = match (&payload.content, &payload.sealed_content) {
            (Some(content), _) => (content.clone(), None),
            (None, Some(sealed)) => (
                sealed.open(&self.cipher).map_err(|err| {
                    SendError::Permanent(format!("cannot open the content: {err}"))
                })?,
                None,
            ),
            (None, None) => {
                // Campaign mail: one recipient, and a one-click unsubscribe link.
                let campaign = campaign
                    .as_ref()
                    .ok_or_else(|| SendError::Permanent("the campaign is gone".into()))?;
                let link = recipients.first().map(|r| {
                    let token = self
                        .keys
                        .unsubscribe_token(campaign.owner, job.id, &r.address);
                    format!("{}/api/v1/unsubscribe/{token}", self.public_url)
                });
                (self.personal(&campaign.content, &payload)?, link)
            }
        };
        let (attach, of_campaign) = match &campaign {
            Some(c) => (c.attachments.as_slice(), Some(request_id)),
            None => (payload.attachments.as_slice(), None),
        };
        let attached = match owner {
            Some(owner) => self
                .attachments
                .load(owner, attach, of_campaign)
                .await
                .map_err(|refused| match refused {
                    Refused::Permanent(why) => SendError::Permanent(why),
                    Refused::Transient(why) => SendError::Transient(why),
                })?,
            None if attach.is_empty() => Default::default(),
            None => return Err(SendError::Permanent("attachments without a sender".into())),
        };
        let message = self.render(
            job.id,
            &payload,
            &recipients,
            &content,
            unsubscribe.as_deref(),
            &attached,
        )?;
        // Signed last, over the headers as sent (List-Unsubscribe included).
        let bytes = match &self.dkim {
            Some(dkim) => dkim.signed(&message),
            None => message.formatted(),
        };
        self.wait_for_rate().await;
        match self.smtp.send(message.envelope(), &bytes).await {
            Ok(delivered) => {
                self.bounced(job, request_id, &delivered.refused).await;
                metrics::counter!(metric::EMAILS_TOTAL, "outcome" => "sent").increment(1);
                Ok(Outcome::Succeeded)
            }
            Err(SmtpFailure::AllRefused(refused)) => {
                self.bounced(job, request_id, &refused).await;
                metrics::counter!(metric::EMAILS_TOTAL, "outcome" => "rejected").increment(1);
                let replies: Vec<&str> = refused.iter().map(|r| r.reply.as_str()).collect();
                Err(SendError::Permanent(format!(
                    "every recipient was refused: {}",
                    replies.join("; ")
                )))
            }
            Err(SmtpFailure::Deferred(error)) => {
                for domain in &domains {
                    self.pacer.deferred_by(domain).await;
                }
                metrics::counter!(metric::EMAILS_TOTAL, "outcome" => "deferred").increment(1);
                Err(SendError::Transient(error))
            }
            Err(SmtpFailure::Transient(error)) => {
                metrics::counter!(metric::EMAILS_TOTAL, "outcome" => "deferred").increment(1);
                Err(SendError::Transient(error))
            }
            // The relay is down for every message: this one waits without spending its
            // attempt, and the queue waits for the relay (`crate::gate`).
            Err(SmtpFailure::Unreachable(error)) => {
                metrics::counter!(metric::EMAILS_TOTAL, "outcome" => "deferred").increment(1);
                Ok(Outcome::Blocked {
                    dependency: "smtp",
                    reason: error,
                })
            }
            Err(SmtpFailure::Permanent(error)) => {
                metrics::counter!(metric::EMAILS_TOTAL, "outcome" => "rejected").increment(1);
                Err(SendError::Permanent(error))
            }
        }
    }

    fn recipients(&self, payload: &EmailJob) -> Result<Vec<Recipient>, SendError> {
        let lists = [
            (Field::To, &payload.to),
            (Field::Cc, &payload.cc),
            (Field::Bcc, &payload.bcc),
        ];
        let mut recipients = Vec::new();
        for (field, list) in lists {
            for sealed in list {
                let mailbox = self.open(sealed)?;
                let address = mailbox.email.to_string().to_ascii_lowercase();
                recipients.push(Recipient {
                    field,
                    mailbox,
                    address,
                });
            }
        }
        Ok(recipients)
    }

    /// The recipients' addresses on the sender's suppression list.
    async fn suppressed(
        &self,
        request_id: Uuid,
        recipients: &[Recipient],
    ) -> Result<HashSet<String>, SendError> {
        let indexes: Vec<Vec<u8>> = recipients
            .iter()
            .map(|r| self.keys.index(&r.address))
            .collect();
        let listed = suppressions::suppressed_among(&self.pool, request_id, &indexes)
            .await
            .map_err(|err| {
                SendError::Transient(format!("cannot check the suppression list: {err}"))
            })?;
        Ok(recipients
            .iter()
            .zip(&indexes)
            .filter(|(_, index)| listed.contains(index))
            .map(|(r, _)| r.address.clone())
            .collect())
    }

    /// Recipients refused for good: on the sender's list from now on, and counted as
    /// the message's bounce. A failure here is logged; the send's outcome stands.
    async fn bounced(&self, job: &ClaimedJob, request_id: Uuid, refused: &[Refusal]) {
        if refused.is_empty() {
            return;
        }
        let addresses: Vec<String> = refused
            .iter()
            .map(|r| r.recipient.to_string().to_ascii_lowercase())
            .collect();
        let details: Vec<String> = refused.iter().map(|r| redact_addresses(&r.reply)).collect();
        let indexes: Vec<Vec<u8>> = addresses.iter().map(|a| self.keys.index(a)).collect();
        let sealed: Vec<Vec<u8>> = addresses.iter().map(|a| self.keys.seal(a)).collect();
        let entries: Vec<NewSuppression<'_>> = (0..addresses.len())
            .map(|i| NewSuppression {
                index: &indexes[i],
                sealed: &sealed[i],
                reason: Reason::Bounce,
                detail: Some(details[i].as_str()),
                job_id: Some(job.id),
                request_id: Some(request_id),
            })
            .collect();
        let recorded = async {
            suppressions::add_for_request(&self.pool, request_id, &entries).await?;
            suppressions::record_event(&self.pool, job.id, request_id, EventKind::Bounced).await
        }
        .await;
        match recorded {
            Ok(new) => {
                if new {
                    metrics::counter!(metric::EMAIL_EVENTS_TOTAL, "kind" => "bounced").increment(1);
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot record refused recipients on the suppression list")
            }
        }
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
        recipients: &[Recipient],
        content: &EmailContent,
        unsubscribe: Option<&str>,
        attached: &[Attached],
    ) -> Result<Message, SendError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(content.subject.clone())
            .message_id(Some(format!("<{job_id}@conveyor>")))
            .header(header::MIME_VERSION_1_0);
        for r in recipients {
            builder = match r.field {
                Field::To => builder.to(r.mailbox.clone()),
                Field::Cc => builder.cc(r.mailbox.clone()),
                Field::Bcc => builder.bcc(r.mailbox.clone()),
            };
        }
        if let Some(reply_to) = &payload.reply_to {
            builder = builder.reply_to(self.open(reply_to)?);
        }
        if let Some(link) = unsubscribe {
            builder = builder
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe"),
                    format!("<{link}>"),
                ))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".to_owned(),
                ));
        }
        let built = if attached.is_empty() {
            match &content.html {
                Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                    content.text.clone(),
                    html.clone(),
                )),
                None => builder
                    .header(header::ContentType::TEXT_PLAIN)
                    .body(content.text.clone()),
            }
        } else {
            // multipart/mixed: the body first, then each file.
            let mut mixed = match &content.html {
                Some(html) => MultiPart::mixed().multipart(MultiPart::alternative_plain_html(
                    content.text.clone(),
                    html.clone(),
                )),
                None => MultiPart::mixed().singlepart(SinglePart::plain(content.text.clone())),
            };
            for file in attached {
                let kind = header::ContentType::parse(file.mime).map_err(|err| {
                    SendError::Permanent(format!("attachment type {}: {err}", file.mime))
                })?;
                // Always base64: lettre would send a text file with short lines as
                // 7bit with its bare LFs, which a relay reads as one long line.
                let body = lettre::message::Body::new_with_encoding(
                    file.bytes.to_vec(),
                    header::ContentTransferEncoding::Base64,
                )
                .map_err(|_| SendError::Permanent("cannot encode an attachment".into()))?;
                mixed = mixed.singlepart(
                    lettre::message::Attachment::new(file.file_name.clone()).body(body, kind),
                );
            }
            builder.multipart(mixed)
        };
        built.map_err(|err| SendError::Permanent(format!("cannot build the message: {err}")))
    }

    /// A campaign's message for the recipient of `payload`: the shared content, or the
    /// template rendered with the campaign's variables and the recipient's own. A
    /// render error is permanent (the api rendered every recipient's message when it
    /// accepted the campaign, so it does not happen with the same template and data).
    fn personal(&self, content: &Content, payload: &EmailJob) -> Result<EmailContent, SendError> {
        match content {
            Content::Plain(content) => Ok(content.clone()),
            Content::Template {
                template,
                inline_css,
                shared,
            } => {
                let own = payload
                    .variables
                    .as_ref()
                    .map(|sealed| sealed.open(&self.cipher))
                    .transpose()
                    .map_err(|err| {
                        SendError::Permanent(format!("cannot open the variables: {err}"))
                    })?;
                let variables = compose::merged(shared, own.as_ref());
                compose::render(template, &variables, *inline_css).map_err(|err| {
                    SendError::Permanent(format!("cannot render the message: {err}"))
                })
            }
        }
    }

    async fn campaign(&self, request_id: Uuid) -> Result<Campaign, SendError> {
        if let Some(campaign) = self
            .campaigns
            .lock()
            .ok()
            .and_then(|cache| cache.get(&request_id).cloned())
        {
            return Ok(campaign);
        }
        let (owner, value) = shared::db::requests::owner_and_content(&self.pool, request_id)
            .await
            .map_err(|err| SendError::Transient(format!("cannot load the campaign: {err}")))?
            .ok_or_else(|| SendError::Permanent("the campaign is gone".into()))?;
        let value =
            value.ok_or_else(|| SendError::Permanent("the campaign has no content".into()))?;
        let record: CampaignRecord = serde_json::from_value(value)
            .map_err(|err| SendError::Permanent(format!("unreadable campaign content: {err}")))?;
        let attachments = record.attachments;
        let limits = CampaignLimits {
            id: request_id,
            window: record.send_window,
            daily_cap: record.daily_cap,
        };
        let content = match record.content {
            CampaignContent::Plain(content) => Content::Plain(content),
            CampaignContent::Template(t) => {
                let source = Source {
                    subject: t.subject,
                    text: t.text,
                    html: t.html,
                };
                let template = Template::parse(&source, Limits::for_message()).map_err(|err| {
                    SendError::Permanent(format!("the campaign's template: {err}"))
                })?;
                Content::Template {
                    template: Arc::new(template),
                    inline_css: t.inline_css,
                    shared: t.variables,
                }
            }
        };
        let campaign = Campaign {
            owner,
            content,
            limits,
            attachments,
        };
        if let Ok(mut cache) = self.campaigns.lock() {
            if cache.len() > 1000 {
                cache.clear();
            }
            cache.insert(request_id, campaign.clone());
        }
        Ok(campaign)
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
    type Job = EmailJob;

    /// The outcome's error goes to `jobs.last_error`, the job log line and the request
    /// view; an SMTP reply may quote a recipient, so addresses are redacted from it.
    async fn handle(&self, job: &ClaimedJob, payload: EmailJob) -> Outcome {
        self.deliver(job, payload).await
    }

    async fn probe(&self, dependency: &'static str) -> bool {
        dependency != "smtp" || self.smtp.probe().await
    }
}
