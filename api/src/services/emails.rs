//! Submitting email: a parsed message ([`Email`], [`Campaign`]) has its personal data
//! sealed (recipients always; the content of a one-off message travels in its job, a
//! campaign's in its request) and becomes a request with its jobs, charged to the
//! sender's message quota.
//!
//! A message from a template is rendered here first, with every recipient's
//! variables, so a template that cannot render for someone is a 422 naming the
//! recipient and the variable before anything is queued. A one-off email's job
//! carries the rendered message; a campaign's request keeps the template version's
//! parts (and the shared variables), each job the recipient's own variables, sealed,
//! and the worker renders each message as it sends it. The request records the
//! template version either way.

use shared::domain::Principal;
use shared::domain::RequestKind;
use shared::domain::message::{Body, Campaign, Email};
use shared::jobs::NewJob;
use shared::jobs::email::{
    CampaignContent, CampaignRecord, EmailJob, EmailRecord, Sealed, SealedVariables,
    TemplatedContent,
};
use shared::mail::compose;
use shared::problem::FieldError;
use shared::queue::Lane;
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::services::attachments;
use crate::services::quotas::QuotaCharge;
use crate::services::requests::{self, Accepted, Idempotency, Submission};
use crate::services::templates;
use crate::services::webhooks;
use crate::state::AppState;

/// What a submission carries besides its message.
#[derive(Debug, Default)]
pub struct Delivery {
    pub send_at: Option<OffsetDateTime>,
    pub callback_url: Option<String>,
    pub correlation_id: Option<String>,
    pub idempotency: Option<Idempotency>,
}

/// One message (one job).
pub async fn submit_email(
    state: &AppState,
    user: &Principal,
    email: Email,
    delivery: Delivery,
) -> Result<Accepted, ApiError> {
    if delivery.callback_url.is_some() {
        webhooks::require_secret(state, user.id).await?;
    }
    let pii = &state.security.pii;
    let seal = |list: &[shared::domain::message::Mailbox]| -> Vec<Sealed> {
        list.iter().map(|m| Sealed::seal(pii, m.text())).collect()
    };
    let messages = email.recipients();
    let attached = attachments::check(state, user, email.attachments).await?;
    let (content, record) = match email.body {
        Body::Content(content) => (content, None),
        Body::Template(used) => {
            let loaded = templates::load(state, user, &used.key, used.version).await?;
            let variables = serde_json::Value::Object(used.variables);
            let content = loaded
                .render(&variables, "")
                .map_err(|error| unrenderable(vec![error]))?;
            let record = EmailRecord {
                template: loaded.reference,
            };
            (content, Some(json(&record)?))
        }
    };
    let job = EmailJob {
        to: seal(&email.to),
        cc: seal(&email.cc),
        bcc: seal(&email.bcc),
        reply_to: email.reply_to.as_ref().map(|m| Sealed::seal(pii, m.text())),
        content: Some(content),
        sealed_content: None,
        variables: None,
        owner: Some(user.id),
        attachments: attached.ids,
    };
    let submission = Submission {
        owner: user.id,
        kind: RequestKind::Email,
        name: None,
        correlation_id: delivery.correlation_id,
        content: record,
        send_at: delivery.send_at,
        jobs: vec![NewJob::of(&job)?],
        quota: Some(QuotaCharge::new(user.role, messages)),
        callback_url: delivery.callback_url,
        wait_for: attached.wait_for,
    };
    requests::submit(state, submission, delivery.idempotency).await
}

/// One message per distinct recipient; the shared content is the request's.
pub async fn submit_campaign(
    state: &AppState,
    user: &Principal,
    campaign: Campaign,
    delivery: Delivery,
) -> Result<Accepted, ApiError> {
    if delivery.callback_url.is_some() {
        webhooks::require_secret(state, user.id).await?;
    }
    // Bulk: the owner's turn in the fair lane, behind no transactional mail.
    let lane = Lane::Fair(user.id);
    let attached = attachments::check(state, user, campaign.attachments).await?;
    let pii = &state.security.pii;
    let content = match campaign.body {
        Body::Content(content) => CampaignContent::Plain(content),
        Body::Template(used) => {
            let loaded = templates::load(state, user, &used.key, used.version).await?;
            let shared = used.variables;
            let (loaded, shared) =
                check_every_recipient(loaded, shared, &campaign.recipients).await?;
            CampaignContent::Template(TemplatedContent {
                template: loaded.reference,
                subject: loaded.row.subject,
                text: loaded.row.text,
                html: loaded.row.html,
                inline_css: loaded.row.inline_css,
                variables: shared,
            })
        }
    };
    let jobs = campaign
        .recipients
        .iter()
        .map(|recipient| {
            let variables = recipient
                .variables
                .as_ref()
                .map(|own| SealedVariables::seal(pii, own))
                .transpose()
                .map_err(|e| ApiError::Internal(e.into()))?;
            let job = EmailJob {
                to: vec![Sealed::seal(pii, recipient.mailbox.text())],
                cc: vec![],
                bcc: vec![],
                reply_to: None,
                content: None,
                sealed_content: None,
                variables,
                owner: Some(user.id),
                attachments: Vec::new(),
            };
            Ok(NewJob::of(&job)?.in_lane(lane))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let content = json(&CampaignRecord {
        content,
        send_window: campaign.send_window,
        daily_cap: campaign.daily_cap,
        attachments: attached.ids,
    })?;
    let submission = Submission {
        owner: user.id,
        kind: RequestKind::Campaign,
        name: Some(campaign.name),
        correlation_id: delivery.correlation_id,
        content: Some(content),
        send_at: first_opening(campaign.send_window.as_ref(), delivery.send_at),
        quota: Some(QuotaCharge::new(user.role, jobs.len())),
        jobs,
        callback_url: delivery.callback_url,
        wait_for: attached.wait_for,
    };
    requests::submit(state, submission, delivery.idempotency).await
}

/// When a campaign's messages may first go out: its `send_at` (or now), moved to its
/// send window's next opening. The jobs wait for it in the database rather than each
/// being claimed and deferred by a worker; a message still due outside the window
/// later (the window closed while the campaign was sending) is deferred by the worker.
fn first_opening(
    window: Option<&shared::mail::window::SendWindow>,
    send_at: Option<time::OffsetDateTime>,
) -> Option<time::OffsetDateTime> {
    let Some(window) = window else {
        return send_at;
    };
    let now = time::OffsetDateTime::now_utc();
    let opens = window.opens_at(send_at.unwrap_or(now).max(now));
    (opens - now > requests::SEND_AT_SLACK).then_some(opens)
}

fn json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::Internal(e.into()))
}

/// The 422 of a message its template cannot be rendered for.
fn unrenderable(errors: Vec<FieldError>) -> ApiError {
    ApiError::Unprocessable {
        detail: "the template cannot be rendered for this message".into(),
        errors,
    }
}

/// The most recipients a refused campaign's answer names.
const MAX_RENDER_ERRORS: usize = 20;

/// Renders the campaign's message for every recipient (and drops the result): a
/// recipient the template cannot be rendered for is named now, not a dead job later.
/// On a blocking thread: 100,000 recipients take about half a second of CPU.
async fn check_every_recipient(
    loaded: templates::Loaded,
    shared: shared::domain::message::Variables,
    recipients: &[shared::domain::message::CampaignRecipient],
) -> Result<(templates::Loaded, shared::domain::message::Variables), ApiError> {
    let own: Vec<_> = recipients.iter().map(|r| r.variables.clone()).collect();
    let checked = tokio::task::spawn_blocking(move || {
        let mut errors = Vec::new();
        for (i, own) in own.iter().enumerate() {
            let variables = compose::merged(&shared, own.as_ref());
            if let Err(error) = loaded.render(&variables, &format!("recipients[{i}].")) {
                errors.push(error);
                if errors.len() == MAX_RENDER_ERRORS {
                    break;
                }
            }
        }
        (loaded, shared, errors)
    })
    .await;
    match checked {
        Ok((loaded, shared, errors)) if errors.is_empty() => Ok((loaded, shared)),
        Ok((_, _, errors)) => Err(unrenderable(errors)),
        Err(join) => Err(ApiError::Internal(anyhow::anyhow!(
            "checking a campaign's template: {join}"
        ))),
    }
}
