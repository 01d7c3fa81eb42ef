//! The console's live updates: one event stream per open page, which sends the
//! page's live region again (server-rendered HTML, `replace` events) whenever it
//! changed, checked every second. Bounded per admin (`SSE_MAX_STREAMS_PER_USER` per
//! api process); a stream whose session ended, or whose account is no longer an
//! admin, says `signed-out` and stops.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use shared::domain::Role;
use uuid::Uuid;

use super::session::ConsoleAdmin;
use super::views;
use crate::services::auth;
use crate::services::operations as ops;
use crate::state::AppState;

/// How often a stream looks for a change.
const TICK: Duration = Duration::from_secs(1);
/// How often it checks that its session is still active.
const SESSION_CHECK_TICKS: u32 = 5;

/// Streams open per admin in this process.
static OPEN: LazyLock<Mutex<HashMap<Uuid, usize>>> = LazyLock::new(Mutex::default);

/// One admin's place among the open streams, given back when the stream ends.
struct Slot(Uuid);

impl Slot {
    fn take(admin: Uuid, max: usize) -> Option<Slot> {
        let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(admin).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot(admin))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.0) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.0);
            }
        }
    }
}

/// What a stream renders at each tick: its live region's HTML, or `None` when it
/// cannot be read now (shown again at the next tick that can).
pub(super) type Render = Box<
    dyn Fn(AppState) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send>>
        + Send
        + Sync,
>;

struct Watch {
    state: AppState,
    admin: ConsoleAdmin,
    render: Render,
    last: Option<String>,
    ticks: u32,
    ended: bool,
    _slot: Slot,
}

/// `GET /console/live/overview`: the queue table, the alerts and the last hour, again
/// whenever they change.
pub async fn overview(
    State(state): State<AppState>,
    Extension(admin): Extension<ConsoleAdmin>,
) -> Response {
    stream(
        state,
        admin,
        Box::new(|state| {
            Box::pin(async move {
                let list = ops::queues(&state).await.ok()?;
                let health = super::health::read(&state).await;
                Some(views::overview_live(&list.queues, health.as_deref()).into_string())
            })
        }),
    )
}

/// `GET /console/live/jobs/{id}`: one job's facts, again whenever they change.
pub async fn job(
    State(state): State<AppState>,
    Extension(admin): Extension<ConsoleAdmin>,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = Uuid::parse_str(&id) else {
        return views::not_found();
    };
    stream(
        state,
        admin,
        Box::new(move |state| {
            Box::pin(async move {
                let job = ops::job(&state, id).await.ok()?;
                let failures = super::jobs::attempts(&state, id).await.ok()?;
                Some(views::job_facts(&job, &failures).into_string())
            })
        }),
    )
}

pub(super) fn stream(state: AppState, admin: ConsoleAdmin, render: Render) -> Response {
    let max = state.config.http.sse_max_streams_per_user;
    let Some(slot) = Slot::take(admin.0.id, max) else {
        return views::refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many console pages are open for this account: close one.",
        );
    };
    let watch = Watch {
        state,
        admin,
        render,
        last: None,
        ticks: 0,
        ended: false,
        _slot: slot,
    };
    Sse::new(updates(watch))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn updates(watch: Watch) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(watch, |mut watch| async move {
        loop {
            if watch.ended {
                return None;
            }
            if watch.last.is_some() {
                tokio::time::sleep(TICK).await;
            }
            watch.ticks = watch.ticks.wrapping_add(1);
            if watch.ticks % SESSION_CHECK_TICKS == 0 {
                let principal = watch.admin.0;
                let active =
                    auth::current_role(&watch.state, principal.session_id, principal.id).await;
                // Ended, or no longer an admin: the page goes back to sign-in. (A
                // database that does not answer ends nothing: the next check decides.)
                let ended = match active {
                    Ok(Some((role, _))) => role != Role::Admin,
                    Ok(None) => true,
                    Err(_) => false,
                };
                if ended {
                    watch.ended = true;
                    let event = Event::default().event("signed-out").data("signed out");
                    return Some((Ok(event), watch));
                }
            }
            let Some(html) = (watch.render)(watch.state.clone()).await else {
                // Shown again at the next tick that can read it.
                watch.last.get_or_insert_with(String::new);
                continue;
            };
            if watch.last.as_deref() == Some(html.as_str()) {
                continue;
            }
            watch.last = Some(html.clone());
            return Some((Ok(Event::default().event("replace").data(html)), watch));
        }
    })
}
