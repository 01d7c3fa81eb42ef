//! Submitting email: a parsed message ([`Email`], [`Campaign`]) has its personal data
//! sealed (recipients always; the content of a one-off message travels in its job, a
//! campaign's in its request) and becomes a request with its jobs, charged to the
//! sender's message quota.

use shared::domain::Principal;
use shared::domain::RequestKind;
use shared::domain::message::{Campaign, Email};
use shared::jobs::NewJob;
use shared::jobs::email::{EmailJob, Sealed};
use shared::queue::Lane;
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::services::quotas::QuotaCharge;
use crate::services::requests::{self, Accepted, Idempotency, Submission};
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
    let job = EmailJob {
        to: seal(&email.to),
        cc: seal(&email.cc),
        bcc: seal(&email.bcc),
        reply_to: email.reply_to.as_ref().map(|m| Sealed::seal(pii, m.text())),
        content: Some(email.content),
        sealed_content: None,
    };
    let submission = Submission {
        owner: user.id,
        kind: RequestKind::Email,
        name: None,
        correlation_id: delivery.correlation_id,
        content: None,
        send_at: delivery.send_at,
        jobs: vec![NewJob::of(&job)?],
        quota: Some(QuotaCharge::new(user.role, messages)),
        callback_url: delivery.callback_url,
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
    let jobs = campaign
        .recipients
        .iter()
        .map(|recipient| {
            let job = EmailJob {
                to: vec![Sealed::seal(&state.security.pii, recipient.text())],
                cc: vec![],
                bcc: vec![],
                reply_to: None,
                content: None,
                sealed_content: None,
            };
            NewJob::of(&job).map(|j| j.in_lane(lane))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let content =
        serde_json::to_value(&campaign.content).map_err(|e| ApiError::Internal(e.into()))?;
    let submission = Submission {
        owner: user.id,
        kind: RequestKind::Campaign,
        name: Some(campaign.name),
        correlation_id: delivery.correlation_id,
        content: Some(content),
        send_at: delivery.send_at,
        quota: Some(QuotaCharge::new(user.role, jobs.len())),
        jobs,
        callback_url: delivery.callback_url,
    };
    requests::submit(state, submission, delivery.idempotency).await
}
