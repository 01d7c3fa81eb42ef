//! Operators' queue administration: queue counts, job listings, retry and discard of
//! failed jobs (one, or a whole queue in batches as a tracked operation), pausing
//! queues and canary requests. The admin routes and the `api` command line call these
//! same functions. Every action writes an `audit_log` row — in the action's own
//! transaction where it has one — and counts `conveyor_admin_actions_total{action}`.
//!
//! One file per idea: [`queues`], [`jobs`], [`bulk`] operations, [`canary`] requests and
//! the [`audit_log`]; their items are re-exported here, the one namespace the admin
//! routes and the command line use.
//!
//! A bulk retry is a job of the `operations` queue, run by the workers in chunks of
//! [`BATCH`] jobs per transaction (`shared::jobs::operations`). If its worker dies, the
//! runtime gives the job to another, which resumes from the last committed chunk: it
//! only ever retries jobs that ended before the operation began, so a job that fails
//! again after its retry is not retried a second time.

mod audit_log;
mod bulk;
mod canary;
mod jobs;
mod queues;

pub use audit_log::*;
pub use bulk::*;
pub use canary::*;
pub use jobs::*;
pub use queues::*;

use shared::db::audit::{self, NewEntry};
use shared::domain::Principal;
use shared::telemetry::metric;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// Who acts, and the request (or command-line run) they act in: the audit's "who".
#[derive(Debug, Clone)]
pub struct Operator {
    actor: String,
    actor_id: Option<Uuid>,
    request_id: Option<String>,
}

impl Operator {
    /// An admin through the api; `request_id` is the request's `x-request-id`.
    pub fn admin(user: &Principal, request_id: Option<String>) -> Self {
        Operator {
            actor: format!("admin:{}", user.id),
            actor_id: Some(user.id),
            request_id,
        }
    }

    /// An operator on the command line, by name (`OPERATOR` or the Unix user).
    pub fn cli(name: &str, request_id: Option<String>) -> Self {
        Operator {
            actor: format!("cli:{name}"),
            actor_id: None,
            request_id,
        }
    }

    pub fn actor(&self) -> &str {
        &self.actor
    }
}

/// The audited actions: the `action` of audit rows and of the metric's label (all
/// registered at zero: `shared::telemetry::label::ADMIN_ACTIONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Retry,
    BulkRetry,
    Discard,
    Pause,
    Resume,
    Canary,
    RoleChange,
    RescanAll,
    /// One upload scanned again (from the console).
    Rescan,
    /// An address taken off another account's suppression list (from the console).
    Unsuppress,
}

impl Action {
    pub const ALL: [Action; 10] = [
        Action::Retry,
        Action::BulkRetry,
        Action::Discard,
        Action::Pause,
        Action::Resume,
        Action::Canary,
        Action::RoleChange,
        Action::RescanAll,
        Action::Rescan,
        Action::Unsuppress,
    ];

    /// `Pause` or `Resume`: an operator's switch (of a queue, of a schedule).
    pub fn switch(paused: bool) -> Action {
        if paused {
            Action::Pause
        } else {
            Action::Resume
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::BulkRetry => "bulk_retry",
            Action::Discard => "discard",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Canary => "canary",
            Action::RoleChange => "role_change",
            Action::RescanAll => "rescan_all",
            Action::Rescan => "rescan",
            Action::Unsuppress => "unsuppress",
        }
    }
}

pub(crate) async fn record(
    db: impl sqlx::PgExecutor<'_>,
    operator: &Operator,
    action: Action,
    target: &str,
    details: serde_json::Value,
) -> Result<(), ApiError> {
    audit::insert(
        db,
        &NewEntry {
            actor: &operator.actor,
            actor_id: operator.actor_id,
            action: action.as_str(),
            target: Some(target),
            details,
            request_id: operator.request_id.as_deref(),
        },
    )
    .await?;
    Ok(())
}

/// After the action committed.
pub(crate) fn counted(action: Action) {
    metrics::counter!(metric::ADMIN_ACTIONS_TOTAL, "action" => action.as_str()).increment(1);
}

/// Audits an action another service carried out and committed in its own transaction
/// (a role change, a rescan of every upload).
pub async fn record_done(
    state: &AppState,
    operator: &Operator,
    action: Action,
    target: &str,
    details: serde_json::Value,
) -> Result<(), ApiError> {
    record(&state.pool, operator, action, target, details).await?;
    counted(action);
    Ok(())
}
