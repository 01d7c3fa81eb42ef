//! Suppression lists through the api: an account's own list (list, look up by
//! address, add, remove), one-click unsubscribes from campaign mail, and campaign
//! statistics. Addresses are sealed at rest and looked up by blind index
//! ([`shared::suppression`]); they are opened only to show the owner its own list.

use shared::db::suppressions::{self, EventCounts, EventKind, NewSuppression, SuppressionRow};
use shared::domain::Principal;
use shared::domain::{EmailAddress, RequestKind};
use shared::suppression::{AddressKeys, Reason};
use shared::telemetry::metric;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::ApiError;
use crate::services::operations::{Action, Operator, counted, record};
use crate::state::AppState;

/// An entry as its owner sees it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Suppression {
    pub id: Uuid,
    /// The suppressed address (lowercase).
    #[schema(examples("ada@example.org"))]
    pub address: String,
    pub reason: Reason,
    /// What caused it, without addresses: an SMTP reply, a DSN status, a feedback
    /// type.
    pub detail: Option<String>,
    /// The request whose message caused it, if any.
    pub request_id: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

impl Suppression {
    fn from_row(keys: &AddressKeys, row: SuppressionRow) -> Self {
        Suppression {
            id: row.id,
            // Sealed under a key that is no longer configured: shown as such, not a 500.
            address: keys
                .open(&row.address)
                .unwrap_or_else(|| "(sealed with a retired key)".into()),
            reason: row.reason,
            detail: row.detail,
            request_id: row.request_id,
            created_at: row.created_at,
        }
    }
}

fn keys(state: &AppState) -> AddressKeys {
    state.config.address_keys()
}

/// Whose list a call is about: the caller's own, or (`owner`) another account's,
/// which takes an admin with a 2FA login (managing users).
pub fn list_owner(user: &Principal, owner: Option<Uuid>) -> Result<Uuid, ApiError> {
    match owner {
        Some(owner) if owner != user.id => {
            user.check(shared::domain::Permission::ManageUsers)?;
            Ok(owner)
        }
        _ => Ok(user.id),
    }
}

/// A page of `owner`'s list, newest first; `true` if more follow.
pub async fn list(
    state: &AppState,
    owner: Uuid,
    after: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> Result<(Vec<Suppression>, bool), ApiError> {
    let mut rows = suppressions::list(&state.pool, owner, after, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let keys = keys(state);
    Ok((
        rows.into_iter()
            .map(|row| Suppression::from_row(&keys, row))
            .collect(),
        more,
    ))
}

fn parse_address(raw: &str) -> Result<String, ApiError> {
    EmailAddress::parse(raw)
        .map(EmailAddress::into_string)
        .map_err(|err| ApiError::validation(format!("address: {err}")))
}

/// `owner`'s entry for `address`, if listed.
pub async fn find(
    state: &AppState,
    owner: Uuid,
    address: &str,
) -> Result<Option<Suppression>, ApiError> {
    let address = parse_address(address)?;
    let keys = keys(state);
    let row = suppressions::find_by_index(&state.pool, owner, &keys.index(&address)).await?;
    Ok(row.map(|row| Suppression::from_row(&keys, row)))
}

/// Adds `address` to `owner`'s list by hand; `true` if it was not listed yet (an
/// address already listed keeps its entry and reason).
pub async fn add(
    state: &AppState,
    owner: Uuid,
    address: &str,
) -> Result<(Suppression, bool), ApiError> {
    let address = EmailAddress::parse(address)
        .map(EmailAddress::into_string)
        .map_err(|err| ApiError::Unprocessable {
            detail: "the address is not valid".into(),
            errors: vec![shared::problem::FieldError::new("address", err.to_string())],
        })?;
    let keys = keys(state);
    let (index, sealed) = (keys.index(&address), keys.seal(&address));
    let mut conn = state.pool.acquire().await?;
    let (row, created) = suppressions::add(
        &mut conn,
        owner,
        &NewSuppression {
            index: &index,
            sealed: &sealed,
            reason: Reason::Manual,
            detail: None,
            job_id: None,
            request_id: None,
        },
    )
    .await
    .map_err(|err| match &err {
        // An admin naming an account that does not exist.
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
            ApiError::NotFound("no such account".into())
        }
        _ => ApiError::from(err),
    })?;
    Ok((Suppression::from_row(&keys, row), created))
}

/// Removes an entry of `owner`'s list (the account may send to it again).
pub async fn remove(state: &AppState, owner: Uuid, id: Uuid) -> Result<(), ApiError> {
    if suppressions::remove(&state.pool, owner, id).await? {
        Ok(())
    } else {
        Err(ApiError::NotFound(
            "no such entry in your suppression list".into(),
        ))
    }
}

/// Every account's entry for `address` (an operator's lookup), newest first, with
/// the account it belongs to.
pub async fn find_everywhere(
    state: &AppState,
    address: &str,
    limit: i64,
) -> Result<Vec<(Uuid, Suppression)>, ApiError> {
    let address = parse_address(address)?;
    let keys = keys(state);
    let rows = suppressions::find_everywhere(&state.pool, &keys.index(&address), limit).await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.owner_id, Suppression::from_row(&keys, row)))
        .collect())
}

/// An operator takes an entry off `owner`'s list, audited (`unsuppress` of
/// `user:<owner>`; the details name the entry and its reason, never the address) in
/// the same transaction.
pub async fn remove_as_operator(
    state: &AppState,
    operator: &Operator,
    owner: Uuid,
    id: Uuid,
) -> Result<(), ApiError> {
    let mut tx = state.pool.begin().await?;
    let Some(reason) = suppressions::remove_returning_reason(&mut *tx, owner, id).await? else {
        return Err(ApiError::NotFound(
            "no such entry in that account's suppression list".into(),
        ));
    };
    record(
        &mut *tx,
        operator,
        Action::Unsuppress,
        &format!("user:{owner}"),
        serde_json::json!({ "suppression_id": id, "reason": reason }),
    )
    .await?;
    tx.commit().await?;
    counted(Action::Unsuppress);
    tracing::info!(actor = operator.actor(), owner = %owner, suppression = %id, "suppression removed by an operator");
    Ok(())
}

/// Adds an address to `owner`'s list because of message `job_id` of `request_id`
/// (`None`: the job is gone) — an unsubscribe, a bounce or complaint report — and
/// counts the event on the message's request. Returns whether the address was newly
/// suppressed or the event newly counted.
pub async fn suppress_for_message(
    state: &AppState,
    owner: Uuid,
    (job_id, request_id): (Uuid, Option<Uuid>),
    address: &str,
    reason: Reason,
    detail: Option<&str>,
) -> Result<bool, ApiError> {
    let keys = keys(state);
    let (index, sealed) = (keys.index(address), keys.seal(address));
    let mut tx = state.pool.begin().await?;
    let (_, created) = suppressions::add(
        &mut tx,
        owner,
        &NewSuppression {
            index: &index,
            sealed: &sealed,
            reason,
            detail,
            job_id: Some(job_id),
            request_id,
        },
    )
    .await?;
    let kind = match reason {
        Reason::Bounce => Some(EventKind::Bounced),
        Reason::Complaint => Some(EventKind::Complained),
        Reason::Unsubscribe => Some(EventKind::Unsubscribed),
        Reason::Manual => None,
    };
    let mut counted = false;
    if let (Some(kind), Some(request_id)) = (kind, request_id) {
        counted = suppressions::record_event(&mut *tx, job_id, request_id, kind).await?;
        if counted {
            metrics::counter!(metric::EMAIL_EVENTS_TOTAL, "kind" => kind.as_str()).increment(1);
        }
    }
    tx.commit().await?;
    Ok(created || counted)
}

/// A one-click unsubscribe (RFC 8058): the token's sender stops sending to its
/// recipient, at once. Repeating it changes nothing. A token that does not open
/// (altered, forged, truncated) is 404.
pub async fn unsubscribe(state: &AppState, token: &str) -> Result<(), ApiError> {
    let opened = keys(state)
        .open_unsubscribe_token(token)
        .ok_or_else(|| ApiError::NotFound("this unsubscribe link is not valid".into()))?;
    let request_id = shared::db::jobs::find(&state.pool, opened.job)
        .await?
        .and_then(|job| job.request_id);
    suppress_for_message(
        state,
        opened.owner,
        (opened.job, request_id),
        &opened.address,
        Reason::Unsubscribe,
        Some("one-click unsubscribe"),
    )
    .await
    .map(|_| ())
}

/// Whether `token` is a valid unsubscribe token (the confirmation page).
pub fn is_unsubscribe_token(state: &AppState, token: &str) -> bool {
    keys(state).open_unsubscribe_token(token).is_some()
}

/// What happened to a campaign's messages.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct CampaignStats {
    pub id: Uuid,
    /// Distinct recipients.
    pub total: i32,
    /// Accepted by the mail relay.
    pub delivered: i32,
    /// Refused for good, during the send (SMTP 5xx) or later (a DSN).
    pub bounced: i64,
    /// Reported as spam (ARF feedback reports).
    pub complained: i64,
    /// One-click unsubscribes.
    pub unsubscribed: i64,
    /// Not sent: the recipient was on the suppression list.
    pub suppressed: i32,
    /// Failed for another reason (after every retry).
    pub failed: i32,
    /// Not sent yet.
    pub pending: i32,
    /// `complained / delivered` (0 before any delivery); mailbox providers want it
    /// under 0.001 and reject bulk mail over 0.003.
    pub complaint_rate: f64,
    /// Messages waiting by choice, spending no attempt, by reason: outside the send
    /// window, over the campaign's or the account's daily cap, a recipient domain's
    /// pace. Soonest first.
    pub waiting: Vec<Waiting>,
}

/// Messages of a campaign that wait for the same reason.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Waiting {
    pub reason: String,
    pub messages: i64,
    /// When the first of them runs again.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub until: time::OffsetDateTime,
}

/// Statistics of one of the caller's campaigns (any campaign for a reader of all
/// requests).
pub async fn campaign_stats(
    state: &AppState,
    user: &Principal,
    id: Uuid,
) -> Result<CampaignStats, ApiError> {
    let row = super::requests::find(state, user, id).await?;
    if row.kind != RequestKind::Campaign {
        return Err(ApiError::NotFound("no such campaign".into()));
    }
    let EventCounts {
        bounced,
        complained,
        unsubscribed,
    } = suppressions::event_counts(&state.pool, id).await?;
    let waiting = shared::db::jobs::deferred_by_reason(&state.pool, id)
        .await?
        .into_iter()
        .map(|(reason, messages, until)| Waiting {
            reason,
            messages,
            until,
        })
        .collect();
    Ok(CampaignStats {
        waiting,
        id,
        total: row.total,
        delivered: row.succeeded,
        bounced,
        complained,
        unsubscribed,
        suppressed: row.suppressed,
        failed: row.failed,
        pending: row.pending(),
        complaint_rate: if row.succeeded > 0 {
            complained as f64 / f64::from(row.succeeded)
        } else {
            0.0
        },
    })
}

/// What an inbound report changed.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ReportOutcome {
    /// `delivery_status` (a DSN) or `feedback` (an ARF complaint).
    pub kind: String,
    /// The message it is about, if it is one of Conveyor's and still known.
    pub job_id: Option<Uuid>,
    /// Addresses newly suppressed (or newly counted against the message).
    pub suppressed: usize,
    /// Findings not acted on: transient bounces, feedback types that are not
    /// complaints, recipients that are not the message's.
    pub ignored: usize,
}

/// Reads an asynchronous bounce (DSN) or complaint (ARF), finds the message by its
/// Message-ID, and suppresses each recipient the report says cannot or does not
/// want to receive mail — only the message's own recipients: a report cannot add an
/// arbitrary address to someone's list.
pub async fn inbound_report(state: &AppState, raw: &[u8]) -> Result<ReportOutcome, ApiError> {
    use shared::jobs::email::EmailJob;
    use shared::mail::{FindingKind, ReportKind, parse_report};

    let report = parse_report(raw).map_err(|err| ApiError::Unprocessable {
        detail: format!("the body is not a bounce (DSN) or complaint (ARF) report: {err}"),
        errors: Vec::new(),
    })?;
    let kind = match report.kind {
        ReportKind::DeliveryStatus => "delivery_status",
        ReportKind::Feedback => "feedback",
    };
    let job = match report.job_id() {
        Some(id) => shared::db::jobs::payload_of(&state.pool, id)
            .await?
            .map(|(request_id, payload)| (id, request_id, payload)),
        None => None,
    };
    let Some((job_id, request_id, payload)) = job else {
        return Ok(ReportOutcome {
            kind: kind.into(),
            job_id: None,
            suppressed: 0,
            ignored: report.findings.len(),
        });
    };
    let owner = shared::db::requests::find(&state.pool, request_id, None)
        .await?
        .map(|request| request.owner_id)
        .ok_or_else(|| ApiError::NotFound("the message's request is gone".into()))?;
    // The message's recipients, opened: what a finding may name.
    let recipients: Vec<String> = serde_json::from_value::<EmailJob>(payload)
        .map(|payload| {
            payload
                .to
                .iter()
                .chain(&payload.cc)
                .chain(&payload.bcc)
                .filter_map(|sealed| sealed.open(&state.security.pii).ok())
                .filter_map(|mailbox| shared::suppression::address_of(&mailbox))
                .collect()
        })
        .unwrap_or_default();
    let (mut suppressed, mut ignored) = (0, 0);
    for finding in &report.findings {
        let address = match &finding.recipient {
            Some(named) => recipients.iter().find(|r| *r == named),
            None if recipients.len() == 1 => recipients.first(),
            None => None,
        };
        let (Some(address), true) = (address, finding.kind.suppresses()) else {
            ignored += 1;
            continue;
        };
        let (reason, detail) = match &finding.kind {
            FindingKind::Complaint { feedback_type } => (
                Reason::Complaint,
                format!("feedback report: {feedback_type}"),
            ),
            FindingKind::HardBounce { status, .. }
            | FindingKind::SoftBounce {
                status: Some(status),
                ..
            } => (
                Reason::Bounce,
                format!("delivery status notification: {status}"),
            ),
            FindingKind::SoftBounce { .. } => {
                (Reason::Bounce, "delivery status notification".into())
            }
        };
        if suppress_for_message(
            state,
            owner,
            (job_id, Some(request_id)),
            address,
            reason,
            Some(&detail),
        )
        .await?
        {
            suppressed += 1;
        }
    }
    tracing::info!(
        job_id = %job_id,
        kind,
        reported_by = report.reported_by.as_deref().unwrap_or("-"),
        suppressed,
        ignored,
        "inbound report read"
    );
    Ok(ReportOutcome {
        kind: kind.into(),
        job_id: Some(job_id),
        suppressed,
        ignored,
    })
}
