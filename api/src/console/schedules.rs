//! The console's schedules: every periodic job with its last and next run, and the
//! pause switch (the admin API's service: its permission and audit row).

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use shared::db::schedules::ScheduleRow;
use shared::domain::Permission;

use super::session::{ConsoleAdmin, cross_site, same_origin};
use super::views::{self, maybe_moment, moment, page, respond};
use crate::error::ApiError;
use crate::services::schedules;
use crate::state::AppState;

/// `GET /console/schedules`.
pub async fn list(State(state): State<AppState>) -> Response {
    match schedules::list(&state).await {
        Ok(list) => view(&list.schedules),
        Err(err) => views::error_page(err),
    }
}

fn view(rows: &[ScheduleRow]) -> Response {
    respond(
        StatusCode::OK,
        page(
            "Schedules",
            true,
            html! {
                h1 { "Schedules" }
                p.note { "Periodic jobs the workers enqueue. A paused schedule enqueues nothing; once resumed, the ticks it missed run once." }
                div.live role="region" aria-label="Schedules" tabindex="0" {
                    table {
                        caption { "Every schedule a worker has registered" }
                        thead {
                            tr {
                                th scope="col" { "Schedule" }
                                th scope="col" { "Queue" }
                                th scope="col" { "Runs" }
                                th scope="col" { "State" }
                                th scope="col" { "Last run" }
                                th scope="col" { "Next run" }
                                th.num scope="col" { "Missed ticks" }
                                th scope="col" { "Actions" }
                            }
                        }
                        tbody {
                            @for row in rows {
                                tr data-schedule=(row.name) {
                                    th scope="row" { (row.name) }
                                    td { (row.queue.as_str()) }
                                    td { (row.every) @if row.every.starts_with("cron") { " (" (row.time_zone) ")" } }
                                    td {
                                        @if row.paused {
                                            span.state.paused { "paused" }
                                            @if let Some(by) = &row.paused_by { " by " (by) }
                                        } @else {
                                            span.state.running { "active" }
                                        }
                                    }
                                    td {
                                        (maybe_moment(row.last_run_at))
                                        @if let Some(job) = row.last_job_id {
                                            " " a href={ "/console/jobs/" (job) } aria-label={ "its job: the last run of " (row.name) } { "its job" }
                                        }
                                    }
                                    td { (moment(row.next_run_at)) }
                                    td.num { (row.missed) }
                                    td {
                                        @let (action, label) = if row.paused { ("resume", "Resume") } else { ("pause", "Pause") };
                                        form.inline method="post" action={ "/console/schedules/" (row.name) "/" (action) } {
                                            button type="submit" id={ (action) "-schedule-" (row.name) }
                                                aria-label={ (label) " the schedule " (row.name) } { (label) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if rows.is_empty() {
                    p { "No worker has registered a schedule yet." }
                }
            },
        ),
    )
}

/// `POST /console/schedules/{name}/pause`.
pub async fn pause(
    State(state): State<AppState>,
    Extension(admin): Extension<ConsoleAdmin>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    switch(&state, admin, &name, &headers, true).await
}

/// `POST /console/schedules/{name}/resume`.
pub async fn resume(
    State(state): State<AppState>,
    Extension(admin): Extension<ConsoleAdmin>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    switch(&state, admin, &name, &headers, false).await
}

async fn switch(
    state: &AppState,
    admin: ConsoleAdmin,
    name: &str,
    headers: &HeaderMap,
    paused: bool,
) -> Response {
    if !same_origin(headers) {
        return cross_site();
    }
    let operator = match super::session::operator(&admin, headers, Permission::ManageQueues) {
        Ok(operator) => operator,
        Err(refusal) => return refusal,
    };
    match schedules::set_paused(state, &operator, name, paused).await {
        Ok(_) => Redirect::to("/console/schedules").into_response(),
        Err(ApiError::NotFound(_)) => views::not_found(),
        Err(err) => views::error_page(err),
    }
}
