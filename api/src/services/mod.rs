//! Business rules and transactions. Services use `shared::db` repositories and never
//! know HTTP beyond returning `ApiError`.

pub mod accounts;
pub mod attachments;
pub mod attempts;
pub mod auth;
pub mod emails;
pub mod events;
pub mod factor_limit;
pub mod group_commit;
pub mod lockout;
pub mod operations;
pub mod quotas;
pub mod requests;
pub mod schedules;
pub mod sending_limits;
pub mod session_cache;
pub mod suppressions;
pub mod templates;
pub mod tokens;
pub mod upload_slots;
pub mod uploads;
pub mod verification;
pub mod webhooks;
