//! The console's jobs: a filtered list a keyset page at a time, one job's detail, and
//! its retry and discard through the admin API's services (their rules, their audit
//! rows). Of a job's payload only the fields that identify other things are shown
//! (`payload.rs`): recipients and content may be personal data.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use shared::db::jobs::JobFilter;
use shared::domain::{JobStatus, Permission};
use shared::queue::QueueName;
use uuid::Uuid;

use super::session::{ConsoleAdmin, cross_site, same_origin};
use super::views;
use crate::error::ApiError;
use crate::routes::cursor;
use crate::services::operations as ops;
use crate::state::AppState;

/// Jobs shown per page.
const PAGE: i64 = 50;

/// The list's filters, as the form sends them (an empty field is no filter).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Filters {
    pub queue: String,
    pub status: String,
    pub request: String,
    /// Created at or after, in UTC (`YYYY-MM-DDTHH:MM[:SS]`, as a `datetime-local`
    /// field sends it).
    pub from: String,
    /// Created before, in UTC.
    pub before: String,
    pub cursor: String,
}

/// A moment from a `datetime-local` field, read as UTC; `None` when empty.
fn utc_moment(name: &str, text: &str) -> Result<Option<time::OffsetDateTime>, String> {
    use time::macros::format_description;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let with_seconds = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let without = format_description!("[year]-[month]-[day]T[hour]:[minute]");
    time::PrimitiveDateTime::parse(text, with_seconds)
        .or_else(|_| time::PrimitiveDateTime::parse(text, without))
        .map(|at| Some(at.assume_utc()))
        .map_err(|_| format!("{name}: {text} is not a date and time (YYYY-MM-DDTHH:MM, UTC)."))
}

impl Filters {
    fn filter(&self) -> Result<JobFilter, String> {
        let queue = match self.queue.as_str() {
            "" => None,
            name => Some(
                QueueName::ALL
                    .iter()
                    .copied()
                    .find(|q| q.as_str() == name)
                    .ok_or_else(|| format!("There is no queue named {name}."))?,
            ),
        };
        let status = match self.status.as_str() {
            "" => None,
            name => Some(
                JobStatus::ALL
                    .iter()
                    .copied()
                    .find(|s| s.as_str() == name)
                    .ok_or_else(|| format!("There is no job state named {name}."))?,
            ),
        };
        let request_id = match self.request.trim() {
            "" => None,
            id => Some(
                Uuid::parse_str(id).map_err(|_| format!("{id} is not a request id (a UUID)."))?,
            ),
        };
        let after = match self.cursor.as_str() {
            "" => None,
            text => {
                Some(cursor::decode(text).map_err(|_| "That page link is not valid.".to_owned())?)
            }
        };
        Ok(JobFilter {
            queue,
            status,
            request_id,
            discarded: None,
            after,
            created_from: utc_moment("Created from", &self.from)?,
            created_before: utc_moment("Created before", &self.before)?,
            limit: PAGE,
        })
    }
}

/// `GET /console/jobs`: the newest jobs first, filtered, a page at a time.
pub async fn list(State(state): State<AppState>, Query(filters): Query<Filters>) -> Response {
    let filter = match filters.filter() {
        Ok(filter) => filter,
        Err(problem) => {
            return views::jobs(
                StatusCode::UNPROCESSABLE_ENTITY,
                &filters,
                &[],
                None,
                Some(&problem),
            );
        }
    };
    match ops::list_jobs(&state, filter).await {
        Ok((jobs, more)) => {
            let next = more
                .then(|| jobs.last())
                .flatten()
                .map(|last| cursor::encode(last.created_at, last.id));
            views::jobs(StatusCode::OK, &filters, &jobs, next.as_deref(), None)
        }
        Err(err) => views::error_page(err),
    }
}

fn job_id(text: &str) -> Option<Uuid> {
    Uuid::parse_str(text).ok()
}

/// `GET /console/jobs/{id}`.
pub async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(id) = job_id(&id) else {
        return views::not_found();
    };
    match ops::job(&state, id).await {
        Ok(job) => {
            let read = async {
                let failures = attempts(&state, id).await?;
                let payload = shared::db::jobs::payload(&state.pool, id).await?;
                Ok::<_, ApiError>((failures, payload))
            };
            match read.await {
                Ok((failures, payload)) => {
                    let fields = payload
                        .as_ref()
                        .map(|payload| super::payload::fields(job.queue, payload));
                    views::job(&job, &failures, fields.flatten().as_deref())
                }
                Err(err) => views::error_page(err),
            }
        }
        Err(ApiError::NotFound(_)) => views::not_found(),
        Err(err) => views::error_page(err),
    }
}

/// Attempts shown on a job's page at most (the latest).
const ATTEMPTS: i64 = 100;

/// A job's failed attempts (the latest [`ATTEMPTS`]).
pub async fn attempts(
    state: &AppState,
    id: Uuid,
) -> Result<Vec<shared::db::job_failures::FailureRow>, ApiError> {
    Ok(shared::db::job_failures::of_job(&state.pool, id, ATTEMPTS).await?)
}

/// `POST /console/jobs/{id}/retry`.
pub async fn retry(
    State(state): State<AppState>,
    Extension(admin): Extension<ConsoleAdmin>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    act(&state, admin, &id, &headers, Act::Retry).await
}

/// `POST /console/jobs/{id}/discard`.
pub async fn discard(
    State(state): State<AppState>,
    Extension(admin): Extension<ConsoleAdmin>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    act(&state, admin, &id, &headers, Act::Discard).await
}

enum Act {
    Retry,
    Discard,
}

async fn act(
    state: &AppState,
    admin: ConsoleAdmin,
    id: &str,
    headers: &HeaderMap,
    act: Act,
) -> Response {
    if !same_origin(headers) {
        return cross_site();
    }
    let Some(id) = job_id(id) else {
        return views::not_found();
    };
    let operator = match super::session::operator(&admin, headers, Permission::ManageQueues) {
        Ok(operator) => operator,
        Err(refusal) => return refusal,
    };
    let done = match act {
        Act::Retry => ops::retry_job(state, &operator, id).await,
        Act::Discard => ops::discard_job(state, &operator, id).await,
    };
    match done {
        Ok(_) => Redirect::to(&format!("/console/jobs/{id}")).into_response(),
        Err(ApiError::NotFound(_)) => views::not_found(),
        Err(err) => views::error_page(err),
    }
}

#[cfg(test)]
mod tests {
    use super::utc_moment;

    #[test]
    fn a_datetime_local_value_is_read_as_utc() {
        let at = utc_moment("from", "2026-12-07T13:05")
            .expect("parsed")
            .expect("some");
        assert_eq!(at.unix_timestamp(), 1_796_648_700);
        let with_seconds = utc_moment("from", "2026-12-07T13:05:30").expect("parsed");
        assert_eq!(with_seconds.map(|t| t.second()), Some(30));
        assert_eq!(utc_moment("from", " ").expect("empty"), None);
        let refused = utc_moment("Created from", "yesterday").expect_err("refused");
        assert!(refused.contains("Created from: yesterday"), "{refused}");
    }
}
