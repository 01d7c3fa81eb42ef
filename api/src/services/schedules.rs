//! Periodic jobs as operators see them: every schedule with its last and next run, and
//! the pause switch (audited as `pause` / `resume` of `schedule:<name>`). The workers'
//! scheduler enqueues them (`worker::scheduler`); a paused schedule enqueues nothing,
//! and once resumed its missed ticks run once.

use serde::Serialize;
use shared::db::schedules::{self, ScheduleRow};

use crate::error::ApiError;
use crate::services::operations::{Action, Operator, counted, record};
use crate::state::AppState;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleRow>,
}

pub async fn list(state: &AppState) -> Result<ScheduleList, ApiError> {
    Ok(ScheduleList {
        schedules: schedules::list(&state.pool).await?,
    })
}

/// Pauses or resumes the schedule `name`, audited in the same transaction; 404 when
/// no worker has registered it.
pub async fn set_paused(
    state: &AppState,
    operator: &Operator,
    name: &str,
    paused: bool,
) -> Result<ScheduleRow, ApiError> {
    let mut tx = state.pool.begin().await?;
    let by = paused.then(|| operator.actor());
    let row = schedules::set_paused(&mut *tx, name, by)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no schedule {name}")))?;
    let action = Action::switch(paused);
    record(
        &mut *tx,
        operator,
        action,
        &format!("schedule:{name}"),
        serde_json::json!({ "next_run_at": row.next_run_at.unix_timestamp() }),
    )
    .await?;
    tx.commit().await?;
    counted(action);
    tracing::info!(
        actor = operator.actor(),
        schedule = name,
        paused,
        "schedule switched"
    );
    Ok(row)
}
