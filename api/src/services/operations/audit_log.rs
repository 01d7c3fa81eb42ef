//! The audit log, newest first.

use serde::{Deserialize, Serialize};
use shared::db::audit::{self, AuditRow};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// One audit row.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: Uuid,
    /// `admin:<user id>` (api) or `cli:<operator>` (command line).
    pub actor: String,
    pub actor_id: Option<Uuid>,
    /// retry, bulk_retry, discard, pause, resume, canary, role_change, rescan_all,
    /// rescan, unsuppress.
    pub action: String,
    /// `job:<id>`, `queue:<name>`, `schedule:<name>`, `user:<id>`, `request:<id>` or
    /// `upload:<id>`.
    pub target: Option<String>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// The `x-request-id` of the request (or command-line run) that acted.
    pub request_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

impl From<AuditRow> for AuditEntry {
    fn from(row: AuditRow) -> Self {
        AuditEntry {
            id: row.id,
            actor: row.actor,
            actor_id: row.actor_id,
            action: row.action,
            target: row.target,
            details: row.details,
            request_id: row.request_id,
            created_at: row.created_at,
        }
    }
}

/// One page of the audit log, newest first (one row more asked for, as in
/// [`list_jobs`]).
pub async fn audit_page(
    state: &AppState,
    after: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> Result<(Vec<AuditEntry>, bool), ApiError> {
    let mut rows = audit::list(&state.pool, after, limit + 1).await?;
    let limit = usize::try_from(limit).unwrap_or(0);
    let more = rows.len() > limit;
    rows.truncate(limit);
    Ok((rows.into_iter().map(AuditEntry::from).collect(), more))
}

#[cfg(test)]
mod tests {
    use crate::services::operations::Action;

    #[test]
    fn every_action_is_a_metric_label_registered_at_zero() {
        let actions: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(actions, shared::telemetry::label::ADMIN_ACTIONS);
    }
}
