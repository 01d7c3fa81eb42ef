//! Submitting work and following it. A submission is a quota charge and one
//! PostgreSQL statement for the request and its jobs (the outbox) — one transaction
//! for all three when it also records an idempotency key — then a push of the job ids
//! to Redis. If the push fails (Redis down) the client still gets 202:
//! the dispatcher pushes the jobs when Redis is back. Reading, cancelling and
//! following requests check ownership here: another user's request is not found.

use shared::domain::Principal;
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use serde::Serialize;
use shared::db::idempotency;
use shared::db::jobs::{self, JobSummary};
use shared::db::requests::{self, ListFilter, NewRequest, RequestRow};
use shared::db::webhooks::DeliveryState;
use shared::domain::{Permission, RequestKind, RequestStatus};
use shared::events::{self, Progress};
use shared::jobs::email::TemplateRef;
use shared::jobs::{Enqueued, NewJob};
use shared::maintenance::retention::IDEMPOTENCY_TTL;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::ApiError;
use crate::services::group_commit::{GroupCommit, Outcome};
use crate::services::quotas::{self, QuotaCharge};
use crate::state::AppState;

/// What to create.
#[derive(Debug, Clone)]
pub struct Submission {
    pub owner: Uuid,
    pub kind: RequestKind,
    pub name: Option<String>,
    pub correlation_id: Option<String>,
    pub content: Option<serde_json::Value>,
    /// A scheduled send: no job starts before this (see [`send_at`]); `None`: at once.
    pub send_at: Option<OffsetDateTime>,
    /// Its jobs, each in its queue and lane (`Fair(owner)` for bulk work such as a
    /// campaign's messages, else `Priority`); they are counted on the request and wait
    /// for `send_at`.
    pub jobs: Vec<NewJob>,
    /// Messages charged to the owner's quota (emails and campaigns).
    pub quota: Option<QuotaCharge>,
    /// Where the completion webhook goes (checked by `services::webhooks`).
    pub callback_url: Option<String>,
    /// Requests whose unfinished jobs every job of this one waits for (attachments'
    /// uploads still being scanned); locked and read in the submission's transaction.
    pub wait_for: Vec<Uuid>,
}

/// An `Idempotency-Key` and the fingerprint of the request it came with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: Vec<u8>,
}

/// The body of a 202.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Accepted {
    pub id: Uuid,
    pub kind: RequestKind,
    pub status: RequestStatus,
    /// Jobs (messages) in the request.
    pub total: i32,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// When its messages go out, if scheduled; null: at once.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub send_at: Option<OffsetDateTime>,
    /// Where to follow it.
    pub location: String,
}

impl From<&RequestRow> for Accepted {
    fn from(row: &RequestRow) -> Self {
        Accepted {
            id: row.id,
            kind: row.kind,
            status: row.status,
            total: row.total,
            created_at: row.created_at,
            send_at: row.send_at,
            location: format!("/api/v1/requests/{}", row.id),
        }
    }
}

/// Charges the quota, creates the request and its jobs, then dispatches them. Without
/// an idempotency key the insert is one autocommit statement; with one, a transaction
/// that first takes the key and records the response with the insert: a repeat
/// returns the first response (and is not charged), the same key with another body is
/// refused, a concurrent duplicate waits on the key's row and then replays.
pub async fn submit(
    state: &AppState,
    submission: Submission,
    idempotency: Option<Idempotency>,
) -> Result<Accepted, ApiError> {
    let (row, enqueued) = match &idempotency {
        // Waiting for other requests' jobs needs their locks held until the insert
        // commits: a transaction, as with a key.
        None if !submission.wait_for.is_empty() => {
            let mut tx = state.pool.begin().await?;
            charge(&mut tx, state, &submission).await?;
            let stored = insert(&mut tx, &state.config.queues, submission).await?;
            tx.commit().await?;
            stored
        }
        None if GroupCommit::accepts(&submission) => {
            // Charged, inserted and pushed with whatever else is being submitted (see
            // `group_commit`); the 202 comes back once all that is done.
            let owner = submission.owner;
            let quota = match submission.quota {
                Some(charge) => {
                    let quota = state.config.accounts.quota(charge.role);
                    Some((charge, quota, charge.limit(quota)?))
                }
                None => None,
            };
            let outcome = state
                .ingest
                .submit(submission, quota.map(|(_, _, limit)| limit))
                .await?;
            return match (outcome, quota) {
                (Outcome::Stored(row), _) => Ok(Accepted::from(&*row)),
                (Outcome::OverQuota, Some((charge, quota, _))) => {
                    let mut conn = state.pool.acquire().await?;
                    Err(quotas::refused(&mut *conn, owner, charge, quota).await)
                }
                (Outcome::OverQuota, None) => Err(ApiError::Internal(anyhow::anyhow!(
                    "a submission without a quota was refused by one"
                ))),
            };
        }
        None => {
            // One connection for the charge (its own autocommit) and the insert.
            let mut conn = state.pool.acquire().await?;
            let charged = charge(&mut conn, state, &submission).await?;
            let stored = insert(&mut conn, &state.config.queues, submission).await;
            refund_unless_stored(&mut conn, charged, stored).await?
        }
        Some(idem) => {
            let mut tx = state.pool.begin().await?;
            if let Some(replay) = claim_key(&mut tx, submission.owner, idem).await? {
                return Ok(replay);
            }
            let owner = submission.owner;
            // Charged inside the transaction, on its connection: a failed insert rolls
            // the charge back with it, and the submission never needs a second
            // connection while it holds the key (concurrent duplicates each hold one,
            // waiting on the key: with a second one the pool could run dry). The
            // owner's quota row stays locked until this commit.
            charge(&mut tx, state, &submission).await?;
            let (row, enqueued) = insert(&mut tx, &state.config.queues, submission).await?;
            let body = serde_json::to_value(Accepted::from(&row))
                .map_err(|e| ApiError::Internal(e.into()))?;
            idempotency::record_response(&mut *tx, owner, &idem.key, row.id, 202, body).await?;
            tx.commit().await?;
            (row, enqueued)
        }
    };
    enqueued.dispatch(&state.pool, &state.redis).await;
    Ok(Accepted::from(&row))
}

/// A quota charge made for a submission: whose, which hour, how many.
struct Charged {
    owner: Uuid,
    hour: OffsetDateTime,
    messages: i64,
}

/// Charges the submission's quota, if it has one; 429 when it does not fit.
async fn charge(
    conn: &mut sqlx::PgConnection,
    state: &AppState,
    submission: &Submission,
) -> Result<Option<Charged>, ApiError> {
    let Some(charge) = submission.quota else {
        return Ok(None);
    };
    let quota = state.config.accounts.quota(charge.role);
    let limit = charge.limit(quota)?;
    match shared::db::quotas::charge(&mut *conn, submission.owner, limit).await? {
        Some(hour) => Ok(Some(Charged {
            owner: submission.owner,
            hour,
            messages: limit.messages,
        })),
        None => Err(quotas::refused(conn, submission.owner, charge, quota).await),
    }
}

/// Passes the insert's result on; when it failed, gives the charge back first.
async fn refund_unless_stored<T>(
    conn: &mut sqlx::PgConnection,
    charged: Option<Charged>,
    stored: Result<T, ApiError>,
) -> Result<T, ApiError> {
    if stored.is_err()
        && let Some(c) = charged
        && let Err(err) = shared::db::quotas::refund(conn, c.owner, c.hour, c.messages).await
    {
        tracing::warn!(error = %err, owner = %c.owner, "cannot give back the quota of a failed submission");
    }
    stored
}

/// Inserts a request and its jobs (the outbox) in the caller's transaction; returns
/// the request and the receipt to dispatch after the commit. Charges no quota.
pub async fn enqueue(
    tx: &mut sqlx::PgConnection,
    state: &AppState,
    submission: Submission,
) -> Result<(RequestRow, Enqueued), ApiError> {
    insert(tx, &state.config.queues, submission).await
}

/// The request and its jobs, through the one enqueue path.
pub(crate) async fn insert(
    conn: &mut sqlx::PgConnection,
    queues: &shared::config::QueuesConfig,
    mut submission: Submission,
) -> Result<(RequestRow, Enqueued), ApiError> {
    let mut jobs = std::mem::take(&mut submission.jobs);
    if !submission.wait_for.is_empty() {
        let unfinished =
            shared::db::jobs::lock_unfinished_of_requests(conn, &submission.wait_for).await?;
        jobs = jobs
            .into_iter()
            .map(|job| job.after(unfinished.clone()))
            .collect();
    }
    let new = new_request(&submission, Uuid::now_v7(), jobs.len())?;
    Ok(shared::jobs::enqueue_with_request(conn, queues, &new, jobs).await?)
}

/// The request row of `submission` with `jobs` jobs, and the id `id`.
pub(crate) fn new_request(
    submission: &Submission,
    id: Uuid,
    jobs: usize,
) -> Result<NewRequest<'_>, ApiError> {
    let total = i32::try_from(jobs).map_err(|_| ApiError::validation("too many jobs"))?;
    Ok(NewRequest {
        id,
        owner_id: submission.owner,
        kind: submission.kind,
        name: submission.name.as_deref(),
        correlation_id: submission.correlation_id.as_deref(),
        content: submission.content.clone(),
        total,
        send_at: submission.send_at,
        callback_url: submission.callback_url.as_deref(),
    })
}

/// A client's `send_at` (RFC 3339) as the time a submission's jobs may start: `None`
/// (at once) when it is absent, past, or within [`SEND_AT_SLACK`] of `now`; an error
/// message when it is not RFC 3339 or more than `max_ahead` after `now`.
pub fn send_at(
    raw: Option<&str>,
    now: OffsetDateTime,
    max_ahead: Duration,
) -> Result<Option<OffsetDateTime>, String> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let at = OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
        .map_err(|_| "must be an RFC 3339 timestamp, e.g. 2030-01-31T09:00:00Z".to_owned())?;
    if at - now > max_ahead {
        return Err(format!(
            "must be at most {} seconds ahead",
            max_ahead.as_secs()
        ));
    }
    Ok((at - now > SEND_AT_SLACK).then_some(at))
}

/// A `send_at` this close to now (or past) is sent at once, not scheduled.
pub const SEND_AT_SLACK: Duration = Duration::from_secs(1);

/// Takes the key for this request, or returns the response to replay.
async fn claim_key(
    tx: &mut sqlx::PgConnection,
    owner: Uuid,
    idem: &Idempotency,
) -> Result<Option<Accepted>, ApiError> {
    let expired_before = OffsetDateTime::now_utc() - IDEMPOTENCY_TTL;
    if idempotency::take(tx, owner, &idem.key, &idem.fingerprint, expired_before).await? {
        return Ok(None);
    }
    match idempotency::find(&mut *tx, owner, &idem.key).await? {
        Some(held) if held.fingerprint != idem.fingerprint => Err(ApiError::IdempotencyKeyReused),
        Some(idempotency::Held {
            response_body: Some(body),
            ..
        }) => serde_json::from_value(body)
            .map(Some)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored idempotent response: {e}"))),
        _ => Err(ApiError::Conflict(
            "a request with this Idempotency-Key is being processed".into(),
        )),
    }
}

/// Whose requests the caller may read: `None` means everyone's.
fn scope(user: &Principal) -> Option<Uuid> {
    if user.check(Permission::ReadAllRequests).is_ok() {
        None
    } else {
        Some(user.id)
    }
}

/// One page of the caller's requests (all requests for an admin), newest first;
/// asks for one row more than `limit` to know whether another page follows.
pub async fn list(
    state: &AppState,
    user: &Principal,
    status: Option<RequestStatus>,
    kind: Option<RequestKind>,
    after: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> Result<(Vec<RequestRow>, bool), ApiError> {
    let filter = ListFilter {
        owner: scope(user),
        status,
        kind,
        after,
        limit: limit + 1,
    };
    let mut rows = requests::list(&state.pool, &filter).await?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    Ok((rows, more))
}

/// A request the caller may see.
pub async fn find(state: &AppState, user: &Principal, id: Uuid) -> Result<RequestRow, ApiError> {
    requests::find(&state.pool, id, scope(user))
        .await?
        .ok_or_else(|| ApiError::NotFound("no such request".into()))
}

/// A request with what its detail shows besides the row.
pub struct Detail {
    pub row: RequestRow,
    pub summary: JobSummary,
    pub webhook: Option<DeliveryState>,
    pub template: Option<TemplateRef>,
}

/// A request with its per-job counts, its completion webhook's state and the
/// template version its messages were rendered from.
pub async fn detail(state: &AppState, user: &Principal, id: Uuid) -> Result<Detail, ApiError> {
    let row = find(state, user, id).await?;
    let summary = jobs::summary(&state.pool, id).await?;
    let webhook = match row.callback_url {
        Some(_) => shared::db::webhooks::state_of(&state.pool, id).await?,
        None => None,
    };
    let template = match row.kind {
        RequestKind::Email | RequestKind::Campaign => {
            requests::template_of(&state.pool, id).await?
        }
        _ => None,
    };
    Ok(Detail {
        row,
        summary,
        webhook,
        template,
    })
}

/// Cancels the jobs that have not started (running ones finish) and closes the
/// request if nothing is left; publishes the change.
pub async fn cancel(state: &AppState, user: &Principal, id: Uuid) -> Result<RequestRow, ApiError> {
    let row = find(state, user, id).await?;
    if row.finished_at.is_some() {
        return Err(ApiError::Conflict(
            "the request has already finished".into(),
        ));
    }
    let mut tx = state.pool.begin().await?;
    let cancelled = jobs::cancel_pending(&mut tx, id).await?;
    let finished = requests::finish(&mut tx, &state.config.queues, &[id]).await?;
    tx.commit().await?;
    finished.webhooks.dispatch(&state.pool, &state.redis).await;
    let row = find(state, user, id).await?;
    tracing::info!(request = %id, cancelled, "request cancelled");
    events::publish(&state.redis, std::slice::from_ref(&row)).await;
    Ok(row)
}

/// The request's progress as a stream: the state in PostgreSQL first, then every
/// change the workers publish (through the process's [`EventHub`](super::events::EventHub)),
/// ending after the final state — or when the caller's session ends (logout,
/// password change, role change), checked every [`SESSION_CHECK`].
pub async fn follow(
    state: &AppState,
    user: &Principal,
    id: Uuid,
) -> Result<impl Stream<Item = Progress> + use<>, ApiError> {
    find(state, user, id).await?;
    let subscription = state.events.subscribe(user.id, id).await?;
    let first = Progress::from(&find(state, user, id).await?);
    // Events come from several processes and may arrive out of order, or carry a
    // state older than the snapshot read after subscribing: only newer ones are sent.
    let sent = first.version;
    let updates = futures::stream::unfold(
        (subscription, sent),
        |(mut subscription, sent)| async move {
            loop {
                match subscription.receiver.recv().await {
                    Ok(progress) if progress.version <= sent => continue,
                    Ok(progress) => {
                        let version = progress.version;
                        return Some((progress, (subscription, version)));
                    }
                    // Each event is a whole state: a stream that fell behind takes the next.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    let events = Box::pin(futures::stream::once(async move { first }).chain(updates));
    let (check_state, session_id, user_id) = (state.clone(), user.session_id, user.id);
    let session_ended = async move {
        loop {
            tokio::time::sleep(SESSION_CHECK).await;
            if let Ok(None) = super::auth::current_role(&check_state, session_id, user_id).await {
                return;
            }
        }
    };
    Ok(
        futures::stream::unfold((events, false), |(mut events, ended)| async move {
            if ended {
                return None;
            }
            let progress = events.next().await?;
            let finished = progress.finished;
            Some((progress, (events, finished)))
        })
        .take_until(Box::pin(session_ended)),
    )
}

/// How often an event stream checks that its session is still active.
pub const SESSION_CHECK: Duration = Duration::from_secs(5);

/// How often the SSE stream sends a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    use super::send_at;

    const DAY: Duration = Duration::from_secs(86_400);

    fn at(text: &str) -> OffsetDateTime {
        OffsetDateTime::parse(text, &Rfc3339).expect("RFC 3339")
    }

    #[test]
    fn send_at_is_scheduled_only_when_ahead_by_more_than_a_second() {
        assert_eq!(send_at(None, at("2030-01-31T09:00:00Z"), DAY), Ok(None));
        assert_eq!(
            send_at(
                Some("2030-01-31T08:00:00Z"),
                at("2030-01-31T09:00:00Z"),
                DAY
            ),
            Ok(None)
        );
        assert_eq!(
            send_at(
                Some("2030-01-31T09:00:01Z"),
                at("2030-01-31T09:00:00Z"),
                DAY
            ),
            Ok(None)
        );
        assert_eq!(
            send_at(
                Some("2030-01-31T10:00:00+01:00"),
                at("2030-01-31T09:00:00Z"),
                DAY
            ),
            Ok(None),
            "the offset counts"
        );
        assert_eq!(
            send_at(
                Some("2030-01-31T09:00:01.5Z"),
                at("2030-01-31T09:00:00Z"),
                DAY
            ),
            Ok(Some(at("2030-01-31T09:00:01.5Z")))
        );
        assert_eq!(
            send_at(
                Some("2030-02-01T09:00:00Z"),
                at("2030-01-31T09:00:00Z"),
                DAY
            ),
            Ok(Some(at("2030-02-01T09:00:00Z"))),
            "exactly the limit"
        );
    }

    #[test]
    fn send_at_too_far_ahead_or_not_rfc3339_is_refused() {
        for raw in [
            "2030-02-01T09:00:01Z",
            "2030-01-31 10:00",
            "2030-01-31T10:00:00",
            "tomorrow",
            "",
        ] {
            assert!(
                send_at(Some(raw), at("2030-01-31T09:00:00Z"), DAY).is_err(),
                "{raw}"
            );
        }
    }
}
