//! The console's HTML, rendered on the server with `maud` (every interpolated value
//! is escaped). No inline script or style: the CSP allows neither.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::jobs::Filters;
use crate::services::operations::{JobView, QueueView};

/// A page: the frame every console page shares.
pub(super) fn page(title: &str, signed_in: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Conveyor console" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to the content" }
                header.bar {
                    a.brand href="/console" { "Conveyor console" }
                    @if signed_in {
                        nav aria-label="Console" {
                            a href="/console" aria-current=[(title == "Overview").then_some("page")] { "Overview" }
                            " "
                            a href="/console/jobs" aria-current=[(title.starts_with("Job")).then_some("page")] { "Jobs" }
                            " "
                            a href="/console/requests" aria-current=[(title.starts_with("Request")).then_some("page")] { "Requests" }
                            " "
                            a href="/console/uploads" aria-current=[(title.starts_with("Upload")).then_some("page")] { "Uploads" }
                            " "
                            a href="/console/schedules" aria-current=[(title == "Schedules").then_some("page")] { "Schedules" }
                            " "
                            a href="/console/suppressions" aria-current=[(title == "Suppressions").then_some("page")] { "Suppressions" }
                            " "
                            a href="/console/audit" aria-current=[(title == "Audit log").then_some("page")] { "Audit log" }
                        }
                        form.signout method="post" action="/console/logout" {
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" tabindex="-1" { (body) }
            }
        }
    }
}

pub(super) fn respond(status: StatusCode, markup: Markup) -> Response {
    (status, markup).into_response()
}

/// The password step, with what went wrong last time.
pub fn login(status: StatusCode, error: Option<&str>) -> Response {
    respond(
        status,
        page(
            "Sign in",
            false,
            html! {
                h1 { "Sign in" }
                p { "The console is for admins with two-factor authentication." }
                @if let Some(error) = error {
                    p.error role="alert" id="login-error" { (error) }
                }
                form.stack method="post" action="/console/login" {
                    label for="email" { "Email" }
                    input #email type="email" name="email" autocomplete="username" required autofocus;
                    label for="password" { "Password" }
                    input #password type="password" name="password" autocomplete="current-password" required;
                    button type="submit" { "Continue" }
                }
            },
        ),
    )
}

/// The second-factor step.
pub fn code(status: StatusCode, error: Option<&str>) -> Response {
    respond(
        status,
        page(
            "Your code",
            false,
            html! {
                h1 { "Your code" }
                @if let Some(error) = error {
                    p.error role="alert" id="code-error" { (error) }
                }
                form.stack method="post" action="/console/login/code" {
                    label for="code" { "Code from your authenticator app, or a recovery code" }
                    input #code type="text" name="code" inputmode="numeric" autocomplete="one-time-code" required autofocus;
                    button type="submit" { "Sign in" }
                }
            },
        ),
    )
}

/// A refusal or an error, said plainly, with the way back.
pub fn refusal(status: StatusCode, detail: &str) -> Response {
    respond(
        status,
        page(
            status.canonical_reason().unwrap_or("Error"),
            false,
            html! {
                h1 { (status.canonical_reason().unwrap_or("Error")) }
                p.error role="alert" { (detail) }
                p { a href="/console/login" { "Sign in with another account" } }
            },
        ),
    )
}

/// An error from a service, as the page a browser gets (its status and plain words).
pub fn error_page(err: crate::error::ApiError) -> Response {
    let (status, detail) = err.for_page();
    refusal(status, &detail)
}

/// The link to a list's next page: its filters as they were, and the cursor.
pub(super) fn next_page(path: &str, filters: &[(&str, &str)], cursor: &str) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(filters)
        .append_pair("cursor", cursor)
        .finish();
    format!("{path}?{query}")
}

pub fn not_found() -> Response {
    refusal(StatusCode::NOT_FOUND, "There is nothing at this address.")
}

/// `1 min 5 s` and the like.
pub(super) fn age(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// A moment: in UTC here, in the viewer's zone once the script has run (the UTC
/// value stays on hover).
pub(super) fn moment(at: OffsetDateTime) -> Markup {
    let utc = at.format(&Rfc3339).unwrap_or_default();
    html! { time datetime=(utc) title=(utc) { (utc) } }
}

/// The queues' table: what the overview shows and its stream replaces.
pub fn queue_table(queues: &[QueueView]) -> Markup {
    html! {
        table.queues {
            caption { "Jobs by queue and state, live" }
            thead {
                tr {
                    th scope="col" { "Queue" }
                    th scope="col" { "State" }
                    th.num scope="col" { "Queued" }
                    th.num scope="col" { "Running" }
                    th.num scope="col" { "Retrying" }
                    th.num scope="col" { "Dead" }
                    th.num scope="col" { "Succeeded, last hour" }
                    th.num scope="col" { "Oldest queued" }
                    th.num scope="col" { "Workers" }
                    th scope="col" { "Actions" }
                }
            }
            tbody {
                @for queue in queues {
                    tr data-queue=(queue.queue.as_str()) {
                        th scope="row" { (queue.queue.as_str()) }
                        td {
                            @if queue.paused == Some(true) {
                                span.state.paused { "paused" }
                            } @else if let Some(dependency) = &queue.blocked_on {
                                span.state.blocked { "waiting for " (dependency) }
                                @if let Some(since) = queue.blocked_since {
                                    " since " (moment(since))
                                }
                            } @else if queue.paused.is_none() {
                                span.state.unknown { "unknown (Redis did not answer)" }
                            } @else {
                                span.state.running { "running" }
                            }
                        }
                        td.num { (queue.queued) }
                        td.num { (queue.running) }
                        td.num { (queue.retrying) }
                        td.num.dead[queue.dead > 0] {
                            @if queue.dead > 0 {
                                a href={ "/console/jobs?queue=" (queue.queue.as_str()) "&status=dead" }
                                    aria-label={ (queue.dead) " dead jobs in " (queue.queue.as_str()) } { (queue.dead) }
                            } @else { (queue.dead) }
                        }
                        td.num { (queue.succeeded_last_hour) }
                        td.num {
                            @match queue.oldest_queued_age_seconds {
                                Some(seconds) => (age(seconds)),
                                None => "—",
                            }
                        }
                        td.num {
                            @match queue.workers_alive {
                                Some(n) => (n),
                                None => "—",
                            }
                        }
                        td { (switch(queue)) }
                    }
                }
            }
        }
    }
}

/// A queue's pause switch and, when it has dead jobs, its "retry all dead": a form
/// per action, its button named for a screen reader and with an id the script gives
/// focus back to when the table is replaced.
fn switch(queue: &QueueView) -> Markup {
    let name = queue.queue.as_str();
    let switch = match queue.paused {
        Some(true) => Some(("resume", "Resume")),
        Some(false) => Some(("pause", "Pause")),
        None => None,
    };
    html! {
        @if let Some((action, label)) = switch {
            form.inline method="post" action={ "/console/queues/" (name) "/" (action) } {
                button type="submit" id={ (action) "-" (name) }
                    aria-label={ (label) " the " (name) " queue" } { (label) }
            }
        } @else { "—" }
        @if queue.dead > 0 {
            " "
            form.inline method="post" action={ "/console/queues/" (name) "/retry-dead" } {
                button type="submit" id={ "retry-dead-" (name) }
                    aria-label={ "Retry dead: the " (queue.dead) " dead jobs of the " (name) " queue" } { "Retry dead" }
            }
        }
    }
}

/// The overview's live region: the queues' table, the alerts and the last hour.
pub fn overview_live(queues: &[QueueView], health: Option<&super::health::Health>) -> Markup {
    html! {
        (queue_table(queues))
        (super::health::section(queues, health))
    }
}

/// The overview: every queue, kept live by `/console/live/overview`.
pub fn overview(queues: &[QueueView], health: Option<&super::health::Health>) -> Markup {
    page(
        "Overview",
        true,
        html! {
            h1 { "Overview" }
            // A region that scrolls sideways on a narrow screen: focusable, so a
            // keyboard can scroll it too.
            div.live data-live="/console/live/overview" aria-live="polite" role="region"
                aria-label="Queues" tabindex="0" {
                (overview_live(queues, health))
            }
            p.note { "The queues update within a second of a change. Times are shown in your zone; hover for UTC." }
        },
    )
}

/// A moment that may not have happened.
pub(super) fn maybe_moment(at: Option<OffsetDateTime>) -> Markup {
    match at {
        Some(at) => moment(at),
        None => html! { "—" },
    }
}

/// At most `max` characters of `text`, marked when cut.
pub(super) fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The jobs list with its filters and the link to the next page.
pub fn jobs(
    status: StatusCode,
    filters: &Filters,
    jobs: &[JobView],
    next: Option<&str>,
    error: Option<&str>,
) -> Response {
    let next_link = next.map(|cursor| {
        next_page(
            "/console/jobs",
            &[
                ("queue", &filters.queue),
                ("status", &filters.status),
                ("request", &filters.request),
                ("from", &filters.from),
                ("before", &filters.before),
            ],
            cursor,
        )
    });
    respond(
        status,
        page(
            "Jobs",
            true,
            html! {
                h1 { "Jobs" }
                form.filters method="get" action="/console/jobs" {
                    label for="queue" { "Queue" }
                    select #queue name="queue" {
                        option value="" { "All" }
                        @for queue in shared::queue::QueueName::ALL {
                            option value=(queue.as_str()) selected[filters.queue == queue.as_str()] { (queue.as_str()) }
                        }
                    }
                    label for="status" { "State" }
                    select #status name="status" {
                        option value="" { "All" }
                        @for state in shared::domain::JobStatus::ALL {
                            option value=(state.as_str()) selected[filters.status == state.as_str()] { (state.as_str()) }
                        }
                    }
                    label for="request" { "Request id" }
                    input #request type="text" name="request" value=(filters.request) spellcheck="false";
                    label for="from" { "Created from (UTC)" }
                    input #from type="datetime-local" name="from" value=(filters.from);
                    label for="before" { "before (UTC)" }
                    input #before type="datetime-local" name="before" value=(filters.before);
                    button type="submit" { "Filter" }
                }
                @if let Some(error) = error {
                    p.error role="alert" { (error) }
                }
                div.live role="region" aria-label="Jobs" tabindex="0" {
                    table.jobs {
                        caption { "Newest first" }
                        thead {
                            tr {
                                th scope="col" { "Job" }
                                th scope="col" { "Queue" }
                                th scope="col" { "State" }
                                th.num scope="col" { "Attempts" }
                                th scope="col" { "Created" }
                                th scope="col" { "Finished" }
                                th scope="col" { "Last error" }
                            }
                        }
                        tbody {
                            @for job in jobs {
                                tr data-job=(job.id) {
                                    th scope="row" { a.id href={ "/console/jobs/" (job.id) } { (job.id) } }
                                    td { (job.queue.as_str()) }
                                    td { span.status.(job.status.as_str()) { (job.status.as_str()) } }
                                    td.num { (job.attempt) " / " (job.max_attempts) }
                                    td { (moment(job.created_at)) }
                                    td { (maybe_moment(job.finished_at)) }
                                    td.error-text { (clip(job.last_error.as_deref().unwrap_or(""), 120)) }
                                }
                            }
                        }
                    }
                }
                @if jobs.is_empty() {
                    p { "No job matches." }
                }
                @if let Some(link) = next_link {
                    p { a href=(link) rel="next" { "Older jobs" } }
                }
            },
        ),
    )
}

/// A job's attempts: the failed ones from its history, then the last one from the
/// job itself when it did not fail (running, or succeeded). An attempt with no
/// outcome at all (its worker stopped; the job was taken back) shows as such.
fn attempts(job: &JobView, failures: &[shared::db::job_failures::FailureRow]) -> Markup {
    use shared::domain::JobStatus;
    let took = |from: Option<OffsetDateTime>, to: OffsetDateTime| match from {
        Some(from) if to >= from => format!("{:.3} s", (to - from).as_seconds_f64()),
        _ => "—".to_owned(),
    };
    let last_open =
        matches!(job.status, JobStatus::Running | JobStatus::Succeeded).then_some(job.attempt);
    let recorded: Vec<i32> = failures.iter().map(|f| f.attempt).collect();
    let missing: Vec<i32> = (1..=job.attempt)
        .filter(|n| !recorded.contains(n) && Some(*n) != last_open)
        .collect();
    html! {
        table.attempts {
            caption { "Attempts" }
            thead {
                tr {
                    th.num scope="col" { "#" }
                    th scope="col" { "Started" }
                    th scope="col" { "Ended" }
                    th.num scope="col" { "Took" }
                    th scope="col" { "Outcome" }
                    th scope="col" { "Error" }
                }
            }
            tbody {
                @for failure in failures {
                    tr data-attempt=(failure.attempt) {
                        th.num scope="row" { (failure.attempt) }
                        td { (maybe_moment(failure.started_at)) }
                        td { (moment(failure.failed_at)) }
                        td.num { (took(failure.started_at, failure.failed_at)) }
                        td { span.status.(if failure.dead { "dead" } else { "retrying" }) {
                            (if failure.dead { "failed, dead" } else { "failed, retried" })
                        } }
                        td.error-text { (clip(&failure.error, 300)) }
                    }
                }
                @for n in &missing {
                    tr data-attempt=(n) {
                        th.num scope="row" { (n) }
                        td colspan="5" { "No outcome recorded: its worker stopped, and the job was taken back." }
                    }
                }
                @if let Some(n) = last_open {
                    tr data-attempt=(n) {
                        th.num scope="row" { (n) }
                        td { (maybe_moment(job.started_at)) }
                        td { (maybe_moment(job.finished_at)) }
                        td.num { (job.finished_at.map_or_else(|| "—".to_owned(), |end| took(job.started_at, end))) }
                        td { span.status.(job.status.as_str()) { (job.status.as_str()) } }
                        td { "—" }
                    }
                }
            }
        }
        @if failures.is_empty() && last_open.is_none() && job.attempt == 0 {
            p { "Not attempted yet." }
        }
    }
}

/// One job's facts and attempts (the live region of its page).
pub fn job_facts(job: &JobView, failures: &[shared::db::job_failures::FailureRow]) -> Markup {
    let duration = match (job.started_at, job.finished_at) {
        (Some(started), Some(finished)) if finished >= started => {
            Some(format!("{:.3} s", (finished - started).as_seconds_f64()))
        }
        _ => None,
    };
    let dead = job.status == shared::domain::JobStatus::Dead && job.discarded_at.is_none();
    let can_retry = dead || job.status == shared::domain::JobStatus::Cancelled;
    html! {
        dl.facts {
            dt { "State" } dd { span.status.(job.status.as_str()) #job-status { (job.status.as_str()) } }
            dt { "Queue" } dd { (job.queue.as_str()) }
            dt { "Attempts" } dd { (job.attempt) " of at most " (job.max_attempts) }
            dt { "Request" }
            dd {
                @match job.request_id {
                    Some(request) => {
                        a href={ "/console/requests/" (request) } { (request) }
                        " (" a href={ "/console/jobs?request=" (request) } { "its jobs" } ")"
                    }
                    None => { "none (work of its own)" }
                }
            }
            dt { "Created" } dd { (moment(job.created_at)) }
            dt { "Dispatched" } dd { (maybe_moment(job.dispatched_at)) }
            dt { "Last attempt started" } dd { (maybe_moment(job.started_at)) }
            dt { "Finished" } dd { (maybe_moment(job.finished_at)) }
            dt { "Last attempt took" } dd { (duration.as_deref().unwrap_or("—")) }
            dt { "Next attempt due" } dd { (maybe_moment(job.run_after)) }
            @if let Some(at) = job.discarded_at {
                dt { "Discarded" } dd { (moment(at)) " by " (job.discarded_by.as_deref().unwrap_or("?")) }
            }
            dt { "Last error" }
            dd {
                @match &job.last_error {
                    Some(error) => { pre.error-text { (error) } }
                    None => { "none" }
                }
            }
        }
        (attempts(job, failures))
        @if can_retry || dead {
            div.actions {
                @if can_retry {
                    form.inline method="post" action={ "/console/jobs/" (job.id) "/retry" } {
                        button type="submit" #retry { "Retry" }
                    }
                }
                @if dead {
                    form.inline method="post" action={ "/console/jobs/" (job.id) "/discard" } {
                        button.secondary type="submit" #discard { "Discard" }
                    }
                }
            }
        }
    }
}

/// A job's page: its facts and attempts, live, what an operator may do with it, and
/// the payload's fields that are not personal data (`payload::fields`).
pub fn job(
    job: &JobView,
    failures: &[shared::db::job_failures::FailureRow],
    payload: Option<&[super::payload::Field]>,
) -> Response {
    respond(
        StatusCode::OK,
        page(
            "Job",
            true,
            html! {
                h1 { "Job " code { (job.id) } }
                div.live data-live={ "/console/live/jobs/" (job.id) } aria-live="polite" {
                    (job_facts(job, failures))
                }
                h2 { "Payload" }
                @match payload {
                    Some([]) => p #payload { "None: a job of this queue carries nothing." },
                    Some(fields) => {
                        dl.facts #payload {
                            @for field in fields {
                                dt { (field.name) } dd { (field.value) }
                            }
                        }
                    }
                    None => p #payload { "Not shown: it is not what this queue's jobs carry." },
                }
                p.note { "Only what identifies other things is shown: recipients and content may be personal data." }
                p { a href="/console/jobs" { "All jobs" } }
            },
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_error_is_clipped_on_a_character_boundary() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("ééééé", 3), "ééé…");
    }

    #[test]
    fn ages_read_as_people_say_them() {
        assert_eq!(age(7), "7 s");
        assert_eq!(age(65), "1 min 5 s");
        assert_eq!(age(3 * 3600 + 120), "3 h 2 min");
    }

    #[test]
    fn what_a_page_shows_is_escaped() {
        let markup = page(
            "<script>",
            false,
            html! { p { ("<img src=x onerror=alert(1)>") } },
        )
        .into_string();
        assert!(!markup.contains("<img src=x"));
        assert!(markup.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(markup.contains("<title>&lt;script&gt; · Conveyor console</title>"));
    }
}
