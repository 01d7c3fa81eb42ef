//! The requests pages' HTML (maud: every interpolated value is escaped).

use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use shared::db::requests::RequestRow;
use shared::db::webhooks::DeliveryRecord;
use shared::domain::{JobStatus, RequestKind, RequestStatus};

use super::{Detail, Filters, Seen, Trace};
use crate::console::views::{clip, maybe_moment, moment, next_page, page, respond};

/// The list with its filters and the link to the next page.
pub(super) fn list(
    status: StatusCode,
    filters: &Filters,
    requests: &[RequestRow],
    next: Option<&str>,
    error: Option<&str>,
) -> Response {
    let next_link = next.map(|cursor| {
        next_page(
            "/console/requests",
            &[
                ("kind", &filters.kind),
                ("status", &filters.status),
                ("owner", &filters.owner),
            ],
            cursor,
        )
    });
    respond(
        status,
        page(
            "Requests",
            true,
            html! {
                h1 { "Requests" }
                form.filters method="get" action="/console/requests" {
                    label for="kind" { "Kind" }
                    select #kind name="kind" {
                        option value="" { "All" }
                        @for kind in RequestKind::ALL {
                            option value=(kind.as_str()) selected[filters.kind == kind.as_str()] { (kind.as_str()) }
                        }
                    }
                    label for="status" { "State" }
                    select #status name="status" {
                        option value="" { "All" }
                        @for state in RequestStatus::ALL {
                            option value=(state.as_str()) selected[filters.status == state.as_str()] { (state.as_str()) }
                        }
                    }
                    label for="owner" { "Owner (user id)" }
                    input #owner type="text" name="owner" value=(filters.owner) spellcheck="false";
                    button type="submit" { "Filter" }
                }
                @if let Some(error) = error {
                    p.error role="alert" { (error) }
                }
                div.live role="region" aria-label="Requests" tabindex="0" {
                    table.requests {
                        caption { "Every account's requests, newest first" }
                        thead {
                            tr {
                                th scope="col" { "Request" }
                                th scope="col" { "Kind" }
                                th scope="col" { "Name" }
                                th scope="col" { "Owner" }
                                th.num scope="col" { "Jobs" }
                                th.num scope="col" { "Succeeded" }
                                th.num scope="col" { "Failed" }
                                th scope="col" { "State" }
                                th scope="col" { "Created" }
                                th scope="col" { "Finished" }
                            }
                        }
                        tbody {
                            @for request in requests {
                                tr data-request=(request.id) {
                                    th scope="row" { a.id href={ "/console/requests/" (request.id) } { (request.id) } }
                                    td { (request.kind.as_str()) }
                                    td { (clip(request.name.as_deref().unwrap_or(""), 60)) }
                                    td {
                                        a.id href={ "/console/requests?owner=" (request.owner_id) }
                                            aria-label={ "Requests of " (request.owner_id) } { (request.owner_id) }
                                    }
                                    td.num { (request.total) }
                                    td.num { (request.succeeded) }
                                    td.num { (request.failed) }
                                    td { span.status.(request.status.as_str()) { (request.status.as_str()) } }
                                    td { (moment(request.created_at)) }
                                    td { (maybe_moment(request.finished_at)) }
                                }
                            }
                        }
                    }
                }
                @if requests.is_empty() {
                    p { "No request matches." }
                }
                @if let Some(link) = next_link {
                    p { a href=(link) rel="next" { "Older requests" } }
                }
            },
        ),
    )
}

/// A request's page: its region, live.
pub(super) fn show(detail: &Detail) -> Response {
    let id = detail.request.id;
    respond(
        StatusCode::OK,
        page(
            "Request",
            true,
            html! {
                h1 { "Request " code { (id) } }
                div.live data-live={ "/console/live/requests/" (id) } aria-live="polite"
                    role="region" aria-label="The request, live" tabindex="0" {
                    (region(detail))
                }
                p.note { "Updates within a second of a change. Times are shown in your zone; hover for UTC." }
                p { a href="/console/requests" { "All requests" } }
            },
        ),
    )
}

/// Everything the live region shows.
pub(super) fn region(detail: &Detail) -> Markup {
    html! {
        (facts(detail))
        (jobs(detail))
        (events(detail))
        (deliveries(detail))
    }
}

fn facts(detail: &Detail) -> Markup {
    let request = &detail.request;
    html! {
        dl.facts {
            dt { "State" }
            dd { span.status.(request.status.as_str()) #request-status { (request.status.as_str()) } }
            dt { "Kind" } dd { (request.kind.as_str()) }
            dt { "Name" } dd { (request.name.as_deref().unwrap_or("—")) }
            dt { "Owner" }
            dd { a.id href={ "/console/requests?owner=" (request.owner_id) } { (request.owner_id) } }
            dt { "Jobs" }
            dd #request-counts {
                (request.total) " in all: "
                (request.succeeded) " succeeded, "
                (request.failed) " failed, "
                (request.cancelled) " cancelled, "
                (request.suppressed) " suppressed, "
                (request.pending()) " not yet ended"
            }
            dt { "Created" } dd { (moment(request.created_at)) }
            @if let Some(at) = request.send_at {
                dt { "Scheduled for" } dd { (moment(at)) }
            }
            dt { "Last change" } dd { (moment(request.updated_at)) }
            dt { "Finished" } dd { (maybe_moment(request.finished_at)) }
            dt { "Correlation id" } dd { code { (request.correlation_id.as_deref().unwrap_or("—")) } }
            dt { "Completion webhook" }
            dd {
                @match request.callback_url.as_deref() {
                    Some(url) => { "to " (host_of(url)) }
                    None => { "none asked for" }
                }
            }
            dt { "Trace" }
            dd #request-trace { (trace(detail.trace.as_ref(), detail.tracing_on)) }
        }
    }
}

fn trace(trace: Option<&Trace>, tracing_on: bool) -> Markup {
    html! {
        @match trace {
            Some(Trace { id, link: Some(link), .. }) => {
                a href=(link) rel="noreferrer" { code { (id) } }
            }
            Some(Trace { id, sampled, link: None }) => {
                code { (id) }
                @if !sampled { " (not sampled: nothing of it was recorded)" }
            }
            None if tracing_on => { "none recorded" }
            None => { "none (tracing was off)" }
        }
    }
}

fn jobs(detail: &Detail) -> Markup {
    let id = detail.request.id;
    html! {
        h2 { "Jobs" }
        @if detail.jobs.is_empty() {
            p { "No job." }
        } @else {
            table.jobs {
                caption {
                    @if detail.more_jobs { "The newest " (detail.jobs.len()) " of its jobs" } @else { "Newest first" }
                }
                thead {
                    tr {
                        th scope="col" { "Job" }
                        th scope="col" { "Queue" }
                        th scope="col" { "State" }
                        th.num scope="col" { "Attempts" }
                        th scope="col" { "Last error" }
                    }
                }
                tbody {
                    @for job in &detail.jobs {
                        tr data-job=(job.id) {
                            th scope="row" { a.id href={ "/console/jobs/" (job.id) } { (job.id) } }
                            td { (job.queue.as_str()) }
                            td { span.status.(job.status.as_str()) { (job.status.as_str()) } }
                            td.num { (job.attempt) " / " (job.max_attempts) }
                            td.error-text { (clip(job.last_error.as_deref().unwrap_or(""), 120)) }
                        }
                    }
                }
            }
        }
        p { a href={ "/console/jobs?request=" (id) } { "All its jobs, with filters" } }
    }
}

fn events(detail: &Detail) -> Markup {
    let id = detail.request.id;
    html! {
        h2 { "Events" }
        p.note {
            "What a client following " code { "GET /api/v1/requests/" (id) "/events" }
            " is sent: its state when this page opened, then each change (states are not stored; changes within a second show as one)."
        }
        @if detail.dropped_events > 0 {
            p.note { (detail.dropped_events) " older events are no longer shown." }
        }
        ol.events {
            @for seen in &detail.events {
                li data-version=(seen.progress.version) { (event(seen)) }
            }
        }
    }
}

fn event(seen: &Seen) -> Markup {
    let p = &seen.progress;
    let data = serde_json::to_string(p).unwrap_or_default();
    html! {
        (moment(seen.at)) " — "
        span.status.(p.status.as_str()) { (p.status.as_str()) } ", "
        (p.succeeded) " of " (p.total) " succeeded, " (p.failed) " failed, "
        (p.pending) " pending"
        @if p.finished { " (final)" }
        pre.event { "event: progress\ndata: " (data) }
    }
}

fn deliveries(detail: &Detail) -> Markup {
    let request = &detail.request;
    html! {
        h2 { "Completion webhook deliveries" }
        @if detail.deliveries.is_empty() {
            p {
                @if request.callback_url.is_none() {
                    "None: the request named no callback URL."
                } @else if request.finished_at.is_none() {
                    "None yet: one is made when the request finishes."
                } @else {
                    "None."
                }
            }
        } @else {
            table.deliveries {
                caption { "Target host only: a callback URL's path or query may hold the receiver's secret" }
                thead {
                    tr {
                        th scope="col" { "Delivery (its job)" }
                        th scope="col" { "Event" }
                        th scope="col" { "Target host" }
                        th scope="col" { "State" }
                        th.num scope="col" { "Attempts" }
                        th.num scope="col" { "Last HTTP status" }
                        th scope="col" { "Made" }
                        th scope="col" { "Next attempt" }
                        th scope="col" { "Ended" }
                        th scope="col" { "Last error" }
                    }
                }
                tbody {
                    @for delivery in &detail.deliveries {
                        tr data-delivery=(delivery.id) {
                            th scope="row" { a.id href={ "/console/jobs/" (delivery.id) } { (delivery.id) } }
                            td { (delivery.event) }
                            td { (host_of(&delivery.url)) }
                            td { span.status.(delivery_state(delivery)) { (delivery_state(delivery)) } }
                            td.num {
                                (delivery.attempts)
                                @if let Some(max) = delivery.max_attempts { " / " (max) }
                            }
                            td.num {
                                @match delivery.last_status {
                                    Some(code) => (code),
                                    None => "—",
                                }
                            }
                            td { (moment(delivery.created_at)) }
                            td { (maybe_moment(delivery.run_after)) }
                            td { (maybe_moment(delivery.finished_at)) }
                            td.error-text { (clip(&last_error(delivery), 160)) }
                        }
                    }
                }
            }
        }
    }
}

/// A delivery's state as its owner reads it, from its job's.
fn delivery_state(delivery: &DeliveryRecord) -> &'static str {
    match delivery.job_status {
        Some(JobStatus::Succeeded) => "delivered",
        Some(JobStatus::Dead | JobStatus::Cancelled) => "dead",
        Some(JobStatus::Retrying) => "retrying",
        Some(_) => "pending",
        None => "unknown",
    }
}

/// Why its last attempt failed, without its URL past the host.
fn last_error(delivery: &DeliveryRecord) -> String {
    match (&delivery.last_error, &delivery.refusal) {
        (Some(error), _) => without_url(error, &delivery.url),
        (None, Some(refusal)) => refusal.clone(),
        (None, None) => String::new(),
    }
}

/// The host (and port, if named) of a URL; never its path, query or credentials.
fn host_of(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(url) => match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => "(no host)".to_owned(),
        },
        Err(_) => "(not a URL)".to_owned(),
    }
}

/// `text` with `url` (as given, and as a client library writes it) cut to its host:
/// an HTTP client's error names the whole URL.
fn without_url(text: &str, url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url) else {
        return text.replace(url, "(the callback URL)");
    };
    let short = format!("{}://{}/…", parsed.scheme(), host_of(url));
    let mut text = text.replace(parsed.as_str(), &short);
    if !url.is_empty() {
        text = text.replace(url, &short);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callback_url_shows_only_its_host() {
        assert_eq!(
            host_of("https://hooks.example.com/T0/B0/secret?token=s3cret"),
            "hooks.example.com"
        );
        assert_eq!(host_of("http://user:pw@127.0.0.1:9000/x"), "127.0.0.1:9000");
        assert_eq!(host_of("not a url"), "(not a URL)");
        let url = "https://hooks.example.com/T0/B0/secret?token=s3cret";
        let error = format!("error sending request for url ({url}): connection refused");
        let shown = without_url(&error, url);
        assert!(
            !shown.contains("s3cret") && !shown.contains("/T0/"),
            "{shown}"
        );
        assert!(shown.contains("https://hooks.example.com/…"), "{shown}");
        // As the URL library writes it (an empty path becomes `/`).
        let bare = "https://hooks.example.com?token=s3cret";
        let error = "error sending request for url (https://hooks.example.com/?token=s3cret)";
        assert!(!without_url(error, bare).contains("s3cret"));
    }
}
