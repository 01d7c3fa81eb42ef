//! `sending_limits`: an account's own daily cap and warm-up, and the time zone its
//! days are counted in. Read by the api (`/me/sending-limits`) and, all rows at once,
//! by the worker's cap check (few accounts set limits).

use sqlx::PgExecutor;
use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::mail::window::Warmup;

/// An account's limits as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LimitsRow {
    pub owner_id: Uuid,
    /// An IANA zone name (checked when stored).
    pub time_zone: String,
    pub daily_cap: Option<i32>,
    pub warmup: Option<Json<Warmup>>,
    pub updated_at: OffsetDateTime,
}

macro_rules! columns {
    () => {
        "owner_id, time_zone, daily_cap, warmup, updated_at"
    };
}

/// `owner`'s limits, if it set any.
pub async fn find(db: impl PgExecutor<'_>, owner: Uuid) -> Result<Option<LimitsRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM sending_limits WHERE owner_id = $1"
    ))
    .bind(owner)
    .fetch_optional(db)
    .await
}

/// Every account's limits.
pub async fn all(db: impl PgExecutor<'_>) -> Result<Vec<LimitsRow>, sqlx::Error> {
    sqlx::query_as(concat!("SELECT ", columns!(), " FROM sending_limits"))
        .fetch_all(db)
        .await
}

/// Sets `owner`'s limits (all of them: a field left `None` is no limit).
pub async fn put(
    db: impl PgExecutor<'_>,
    owner: Uuid,
    time_zone: &str,
    daily_cap: Option<i32>,
    warmup: Option<&Warmup>,
) -> Result<LimitsRow, sqlx::Error> {
    sqlx::query_as(concat!(
        "INSERT INTO sending_limits (owner_id, time_zone, daily_cap, warmup) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (owner_id) DO UPDATE SET time_zone = EXCLUDED.time_zone, \
             daily_cap = EXCLUDED.daily_cap, warmup = EXCLUDED.warmup, updated_at = now() \
         RETURNING ",
        columns!()
    ))
    .bind(owner)
    .bind(time_zone)
    .bind(daily_cap)
    .bind(warmup.map(Json))
    .fetch_one(db)
    .await
}

/// Removes `owner`'s limits; whether it had any.
pub async fn delete(db: impl PgExecutor<'_>, owner: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM sending_limits WHERE owner_id = $1")
        .bind(owner)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}
