//! The console's requests: every account's submissions a keyset page at a time, and
//! one request's page — its counts, its jobs, the progress events its client is sent,
//! its completion webhook deliveries and its trace — kept live. Never a job's payload
//! (sealed personal data), nor a callback URL past its host (its path or query may
//! hold the receiver's secret).

mod view;

use std::sync::{Arc, Mutex};

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use shared::db::jobs::JobFilter;
use shared::db::requests::{self as rows, ListFilter, RequestRow};
use shared::db::webhooks::{self, DeliveryRecord};
use shared::domain::{RequestKind, RequestStatus};
use shared::events::Progress;
use time::OffsetDateTime;
use uuid::Uuid;

use super::live;
use super::session::ConsoleAdmin;
use super::views;
use crate::error::ApiError;
use crate::routes::cursor;
use crate::services::operations::{self as ops, JobView};
use crate::state::AppState;

/// Requests shown per page.
const PAGE: i64 = 50;
/// A request's jobs shown on its page (newest first); the jobs list has them all.
const JOBS_SHOWN: i64 = 50;
/// Webhook deliveries shown (a request makes one per event: one today).
const DELIVERIES_SHOWN: i64 = 20;
/// Progress events a page keeps (the oldest go first).
const EVENTS_KEPT: usize = 100;

/// The list's filters, as the form sends them (an empty field is no filter).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Filters {
    pub kind: String,
    pub status: String,
    pub owner: String,
    pub cursor: String,
}

impl Filters {
    fn filter(&self) -> Result<ListFilter, String> {
        let kind = match self.kind.as_str() {
            "" => None,
            name => Some(
                name.parse::<RequestKind>()
                    .map_err(|_| format!("There is no request kind named {name}."))?,
            ),
        };
        let status = match self.status.as_str() {
            "" => None,
            name => Some(
                name.parse::<RequestStatus>()
                    .map_err(|_| format!("There is no request state named {name}."))?,
            ),
        };
        let owner = match self.owner.trim() {
            "" => None,
            id => {
                Some(Uuid::parse_str(id).map_err(|_| format!("{id} is not a user id (a UUID)."))?)
            }
        };
        let after = match self.cursor.as_str() {
            "" => None,
            text => {
                Some(cursor::decode(text).map_err(|_| "That page link is not valid.".to_owned())?)
            }
        };
        Ok(ListFilter {
            owner,
            status,
            kind,
            after,
            // One more, to know whether another page follows.
            limit: PAGE + 1,
        })
    }
}

/// `GET /console/requests`: every account's requests, newest first, filtered.
pub async fn list(State(state): State<AppState>, Query(filters): Query<Filters>) -> Response {
    let filter = match filters.filter() {
        Ok(filter) => filter,
        Err(problem) => {
            return view::list(
                StatusCode::UNPROCESSABLE_ENTITY,
                &filters,
                &[],
                None,
                Some(&problem),
            );
        }
    };
    match rows::list_for_operators(&state.pool, &filter).await {
        Ok(mut found) => {
            let page = usize::try_from(PAGE).unwrap_or(usize::MAX);
            let more = found.len() > page;
            found.truncate(page);
            let next = more
                .then(|| found.last())
                .flatten()
                .map(|last| cursor::encode(last.created_at, last.id));
            view::list(StatusCode::OK, &filters, &found, next.as_deref(), None)
        }
        Err(err) => views::error_page(err.into()),
    }
}

/// A progress event as the console saw it: when, and what a client is sent.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub at: OffsetDateTime,
    pub progress: Progress,
}

/// The events a page has seen, newest last, and how many older ones it let go.
#[derive(Debug, Default)]
struct Events {
    seen: Vec<Seen>,
    dropped: usize,
}

impl Events {
    /// Adds the request's state if it is newer than the last one seen (a client's
    /// stream never sends an older or equal version either); returns the list.
    fn observe(&mut self, row: &RequestRow) -> (Vec<Seen>, usize) {
        if self
            .seen
            .last()
            .is_none_or(|last| last.progress.version < row.version)
        {
            self.seen.push(Seen {
                at: OffsetDateTime::now_utc(),
                progress: Progress::from(row),
            });
            if self.seen.len() > EVENTS_KEPT {
                self.seen.remove(0);
                self.dropped += 1;
            }
        }
        (self.seen.clone(), self.dropped)
    }
}

/// A request's trace: its id, whether the sampler kept it, and where to see it when
/// `CONSOLE_TRACE_URL` is set (and it was kept).
#[derive(Debug, Clone)]
pub(super) struct Trace {
    pub id: String,
    pub sampled: bool,
    pub link: Option<String>,
}

/// Everything a request's live region shows.
pub(super) struct Detail {
    pub request: RequestRow,
    pub jobs: Vec<JobView>,
    pub more_jobs: bool,
    pub deliveries: Vec<DeliveryRecord>,
    pub events: Vec<Seen>,
    pub dropped_events: usize,
    pub trace: Option<Trace>,
    pub tracing_on: bool,
}

/// What the database says of a request now.
struct Found {
    request: RequestRow,
    jobs: Vec<JobView>,
    more_jobs: bool,
    deliveries: Vec<DeliveryRecord>,
}

impl Found {
    /// With the events seen so far and the trace.
    fn detail(self, events: &mut Events, trace: Option<Trace>) -> Detail {
        let (events, dropped_events) = events.observe(&self.request);
        Detail {
            request: self.request,
            jobs: self.jobs,
            more_jobs: self.more_jobs,
            deliveries: self.deliveries,
            events,
            dropped_events,
            trace,
            tracing_on: shared::otel::on(),
        }
    }
}

/// The request, its newest jobs and its deliveries; `None` when there is no such
/// request.
async fn read(state: &AppState, id: Uuid) -> Result<Option<Found>, ApiError> {
    let Some(request) = rows::find(&state.pool, id, None).await? else {
        return Ok(None);
    };
    let filter = JobFilter {
        request_id: Some(id),
        created_from: None,
        created_before: None,
        limit: JOBS_SHOWN,
        ..JobFilter::default()
    };
    let (jobs, more_jobs) = ops::list_jobs(state, filter).await?;
    let deliveries = webhooks::deliveries_of(&state.pool, id, DELIVERIES_SHOWN).await?;
    Ok(Some(Found {
        request,
        jobs,
        more_jobs,
        deliveries,
    }))
}

/// The trace of the request's work, read once (it never changes).
async fn trace(state: &AppState, id: Uuid) -> Result<Option<Trace>, ApiError> {
    let Some(traceparent) = rows::trace_context(&state.pool, id).await? else {
        return Ok(None);
    };
    let Some(trace_id) = trace_id(&traceparent) else {
        return Ok(None);
    };
    let sampled = shared::otel::sampled_flag(&traceparent).unwrap_or(false);
    Ok(Some(Trace {
        id: trace_id.to_owned(),
        sampled,
        link: state
            .config
            .http
            .console_trace_url
            .as_deref()
            .filter(|_| sampled)
            .map(|template| template.replace("{trace_id}", trace_id)),
    }))
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if it is one.
fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && hex(flags, 2)
        && (parts.next().is_none() || version != "00");
    valid.then_some(trace)
}

/// `GET /console/requests/{id}`.
pub async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Ok(id) = Uuid::parse_str(&id) else {
        return views::not_found();
    };
    let found = match read(&state, id).await {
        Ok(Some(found)) => found,
        Ok(None) => return views::not_found(),
        Err(err) => return views::error_page(err),
    };
    let trace = match trace(&state, id).await {
        Ok(trace) => trace,
        Err(err) => return views::error_page(err),
    };
    view::show(&found.detail(&mut Events::default(), trace))
}

/// `GET /console/live/requests/{id}`: the request's region again whenever it changes;
/// its events are those this stream saw, newest last.
pub async fn live(
    State(state): State<AppState>,
    Extension(admin): Extension<ConsoleAdmin>,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = Uuid::parse_str(&id) else {
        return views::not_found();
    };
    match rows::find(&state.pool, id, None).await {
        Ok(Some(_)) => {}
        Ok(None) => return views::not_found(),
        Err(err) => return views::error_page(err.into()),
    }
    let trace = match trace(&state, id).await {
        Ok(trace) => trace,
        Err(err) => return views::error_page(err),
    };
    let events = Arc::new(Mutex::new(Events::default()));
    live::stream(
        state,
        admin,
        Box::new(move |state| {
            let (trace, events) = (trace.clone(), Arc::clone(&events));
            Box::pin(async move {
                let found = read(&state, id).await.ok()??;
                let detail =
                    found.detail(&mut events.lock().unwrap_or_else(|e| e.into_inner()), trace);
                Some(view::region(&detail).into_string())
            })
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_id_is_read_from_a_valid_traceparent_only() {
        assert_eq!(
            trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-<script>alert(1)</script>00000000000-00f067aa0ba902b7-01",
        ] {
            assert_eq!(trace_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn filters_that_name_nothing_are_refused_plainly() {
        let bad = |f: Filters| f.filter().expect_err("refused");
        assert!(
            bad(Filters {
                kind: "fax".into(),
                ..Filters::default()
            })
            .contains("no request kind named fax")
        );
        assert!(
            bad(Filters {
                status: "done".into(),
                ..Filters::default()
            })
            .contains("no request state named done")
        );
        assert!(
            bad(Filters {
                owner: "me".into(),
                ..Filters::default()
            })
            .contains("not a user id")
        );
        let none = Filters::default().filter().expect("no filter");
        assert!(none.owner.is_none() && none.status.is_none() && none.kind.is_none());
        assert_eq!(none.limit, PAGE + 1);
    }
}
