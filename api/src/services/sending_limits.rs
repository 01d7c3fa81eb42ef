//! An account's own sending limits (`/me/sending-limits`): a daily cap and a warm-up
//! (a cap growing day by day for a new sending domain), counted per local day of the
//! account's time zone. The worker enforces them on the account's emails and campaign
//! messages (`worker::caps`); mail Conveyor sends about the account itself is never
//! capped.

use serde::Serialize;
use shared::db::send_caps::{self, Scope};
use shared::db::sending_limits as repo;
use shared::domain::Principal;
use shared::mail::window::{self, AccountLimits, Tz, Warmup, WarmupFields};
use shared::problem::FieldError;
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::state::AppState;

/// The largest daily cap of an account.
pub const MAX_DAILY_CAP: i64 = 10_000_000;

/// The limits as asked for.
#[derive(Debug, Clone, Default)]
pub struct Asked {
    pub time_zone: Option<String>,
    pub daily_cap: Option<i64>,
    pub warmup: Option<WarmupFields>,
}

/// The account's limits and where today stands.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LimitsView {
    /// The IANA zone the days are counted in.
    pub time_zone: String,
    pub daily_cap: Option<i64>,
    pub warmup: Option<WarmupFields>,
    /// Today's local date in `time_zone`.
    pub today: String,
    /// The messages the account may send today (the smaller of the daily cap and the
    /// warm-up's cap of the day); null: no limit today.
    pub cap_today: Option<i64>,
    /// Messages admitted today so far (sent, or being sent).
    pub sent_today: i64,
}

fn unprocessable(errors: Vec<FieldError>) -> ApiError {
    ApiError::Unprocessable {
        detail: "the sending limits are not valid".into(),
        errors,
    }
}

/// Sets the caller's limits (all of them: one left out is no limit).
pub async fn put(state: &AppState, user: &Principal, asked: Asked) -> Result<LimitsView, ApiError> {
    let mut errors = Vec::new();
    let time_zone = asked.time_zone.unwrap_or_else(|| "UTC".to_owned());
    if time_zone.parse::<Tz>().is_err() {
        errors.push(FieldError::new(
            "time_zone",
            "must be an IANA time zone, e.g. Europe/Berlin or UTC",
        ));
    }
    let daily_cap = asked.daily_cap.and_then(|cap| {
        let valid = i32::try_from(cap)
            .ok()
            .filter(|&c| c >= 1 && i64::from(c) <= MAX_DAILY_CAP);
        if valid.is_none() {
            errors.push(FieldError::new(
                "daily_cap",
                format!("must be 1 to {MAX_DAILY_CAP}"),
            ));
        }
        valid
    });
    let warmup = asked.warmup.and_then(|fields| {
        Warmup::parse(fields)
            .map_err(|found| errors.extend(found))
            .ok()
    });
    if daily_cap.is_none() && warmup.is_none() && errors.is_empty() {
        errors.push(FieldError::new(
            "daily_cap",
            "give a daily cap, a warm-up or both (DELETE removes the limits)",
        ));
    }
    if !errors.is_empty() {
        return Err(unprocessable(errors));
    }
    let row = repo::put(&state.pool, user.id, &time_zone, daily_cap, warmup.as_ref()).await?;
    view(state, row).await
}

/// The caller's limits; 404 when it set none.
pub async fn find(state: &AppState, user: &Principal) -> Result<LimitsView, ApiError> {
    let row = repo::find(&state.pool, user.id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no sending limits are set".into()))?;
    view(state, row).await
}

/// Removes the caller's limits.
pub async fn delete(state: &AppState, user: &Principal) -> Result<(), ApiError> {
    if repo::delete(&state.pool, user.id).await? {
        Ok(())
    } else {
        Err(ApiError::NotFound("no sending limits are set".into()))
    }
}

async fn view(state: &AppState, row: repo::LimitsRow) -> Result<LimitsView, ApiError> {
    let zone = row.time_zone.parse::<Tz>().unwrap_or(Tz::UTC);
    let limits = AccountLimits {
        zone,
        daily_cap: row.daily_cap.and_then(|c| u32::try_from(c).ok()),
        warmup: row.warmup.as_ref().map(|w| w.0),
    };
    let today = window::day_in(zone, OffsetDateTime::now_utc());
    let sent = send_caps::count(&state.pool, Scope::Account(row.owner_id), today).await?;
    Ok(LimitsView {
        time_zone: row.time_zone,
        daily_cap: row.daily_cap.map(i64::from),
        warmup: row.warmup.map(|w| WarmupFields::from(w.0)),
        today: today.to_string(),
        cap_today: limits.cap_on(today).map(i64::from),
        sent_today: i64::from(sent),
    })
}
