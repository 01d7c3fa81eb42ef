//! The uploads pages' HTML (escaped by `maud`, like every console page).

use std::fmt::Write as _;

use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use shared::db::uploads::UploadRow;
use shared::domain::{UploadLocation, UploadStatus};
use uuid::Uuid;

use super::Filters;
use crate::console::views::{clip, maybe_moment, moment, next_page, page, respond};

/// A status as people say it.
fn status_words(status: UploadStatus) -> &'static str {
    match status {
        UploadStatus::PendingScan => "pending scan",
        UploadStatus::Clean => "clean",
        UploadStatus::Infected => "infected",
        UploadStatus::Rejected => "rejected",
    }
}

/// The verdict badge (its class is the status: `verdict infected`).
fn verdict(status: UploadStatus) -> Markup {
    html! { span.verdict.(status.as_str()) { (status_words(status)) } }
}

/// `512 B`, `2.0 KiB`, `3.4 MiB`.
fn size(bytes: i64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = "B";
    for next in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// Why an upload cannot be rescanned now, if it cannot.
fn not_rescannable(row: &UploadRow) -> Option<&'static str> {
    match (row.status, row.location) {
        (UploadStatus::Rejected, _) => {
            Some("Rejected when it was verified: it has no object to scan.")
        }
        (_, UploadLocation::Staging) => {
            Some("Still in staging: its first scan follows once it is verified and stored.")
        }
        _ => None,
    }
}

/// The list with its filters and the link to the next page.
pub(super) fn list(
    status: StatusCode,
    filters: &Filters,
    rows: &[UploadRow],
    next: Option<&str>,
    error: Option<&str>,
) -> Response {
    let next_link = next.map(|cursor| {
        next_page(
            "/console/uploads",
            &[("status", &filters.status), ("owner", filters.owner.trim())],
            cursor,
        )
    });
    respond(
        status,
        page(
            "Uploads",
            true,
            html! {
                h1 { "Uploads" }
                p.note { "Every account's files, newest first. A file's content is never shown here." }
                form.filters method="get" action="/console/uploads" {
                    label for="status" { "Status" }
                    select #status name="status" {
                        option value="" { "All" }
                        @for state in UploadStatus::ALL {
                            option value=(state.as_str()) selected[filters.status == state.as_str()] { (status_words(*state)) }
                        }
                    }
                    label for="owner" { "Account id" }
                    input #owner type="text" name="owner" value=(filters.owner) spellcheck="false";
                    button type="submit" { "Filter" }
                }
                @if let Some(error) = error {
                    p.error role="alert" { (error) }
                }
                div.live role="region" aria-label="Uploads" tabindex="0" {
                    table.uploads {
                        caption { "Newest first" }
                        thead {
                            tr {
                                th scope="col" { "Upload" }
                                th scope="col" { "Account" }
                                th scope="col" { "File name" }
                                th scope="col" { "Type" }
                                th.num scope="col" { "Size" }
                                th scope="col" { "Status" }
                                th scope="col" { "Matched rules" }
                                th.num scope="col" { "Scans" }
                                th scope="col" { "Last scanned" }
                                th scope="col" { "Created" }
                            }
                        }
                        tbody {
                            @for row in rows {
                                tr data-upload=(row.id) {
                                    th scope="row" { a.id href={ "/console/uploads/" (row.id) } { (row.id) } }
                                    td {
                                        a.id href={ "/console/uploads?owner=" (row.owner_id) }
                                            aria-label={ "Uploads of account " (row.owner_id) } { (row.owner_id) }
                                    }
                                    td { (clip(&row.file_name, 60)) }
                                    td { (row.file_type) }
                                    td.num { (size(row.size_bytes)) }
                                    td { (verdict(row.status)) }
                                    td {
                                        @if row.rules.is_empty() { "—" }
                                        @else { (clip(&row.rules.join(", "), 80)) }
                                    }
                                    td.num { (row.scans) }
                                    td { (maybe_moment(row.scanned_at)) }
                                    td { (moment(row.created_at)) }
                                }
                            }
                        }
                    }
                }
                @if rows.is_empty() {
                    p { "No upload matches." }
                }
                @if let Some(link) = next_link {
                    p { a href=(link) rel="next" { "Older uploads" } }
                }
            },
        ),
    )
}

/// One upload's facts and its Rescan (the live region of its page).
pub(super) fn facts(row: &UploadRow) -> Markup {
    html! {
        dl.facts {
            dt { "Status" } dd #upload-status { (verdict(row.status)) }
            dt { "Where it is kept" }
            dd #upload-location {
                @match row.location {
                    UploadLocation::Staging => { "staging: received, not yet verified and stored" }
                    UploadLocation::Stored => { "stored" }
                    UploadLocation::Quarantine => {
                        strong.quarantine { "In quarantine" }
                        ": a scan found it infected, so it is never served."
                    }
                }
            }
            dt { "Matched rules" }
            dd {
                @if row.rules.is_empty() { "none" }
                @else {
                    ul.rules { @for rule in &row.rules { li { code { (rule) } } } }
                }
            }
            dt { "Scans" } dd { (row.scans) }
            dt { "Last scanned" } dd { (maybe_moment(row.scanned_at)) }
            dt { "Error" }
            dd {
                @match &row.error {
                    Some(error) => { pre.error-text { (error) } }
                    None => { "none" }
                }
            }
            dt { "File name" } dd { (row.file_name) }
            dt { "Type" } dd { (row.file_type) " (by its first bytes)" }
            dt { "Size" } dd { (size(row.size_bytes)) " (" (row.size_bytes) " bytes)" }
            dt { "SHA-256" } dd { code.hash { (hex(&row.sha256)) } }
            dt { "Account" }
            dd { a.id href={ "/console/uploads?owner=" (row.owner_id) } { (row.owner_id) } }
            dt { "Request" }
            dd {
                @match row.request_id {
                    Some(request) => { a.id href={ "/console/requests/" (request) } { (request) } }
                    None => { "none (pruned)" }
                }
            }
            dt { "Created" } dd { (moment(row.created_at)) }
            dt { "Last changed" } dd { (moment(row.updated_at)) }
        }
        div.actions {
            @match not_rescannable(row) {
                None => {
                    form.inline method="post" action={ "/console/uploads/" (row.id) "/rescan" } {
                        button type="submit" #rescan { "Rescan with the current rules" }
                    }
                }
                Some(why) => { p.note #rescan-unavailable { "No rescan: " (why) } }
            }
        }
    }
}

/// An upload's page: its facts, live. `rescan`: the request of a rescan just queued.
pub(super) fn upload(row: &UploadRow, rescan: Option<Uuid>) -> Response {
    respond(
        StatusCode::OK,
        page(
            "Upload",
            true,
            html! {
                h1 { "Upload " code { (row.id) } }
                @if let Some(request) = rescan {
                    p.notice role="status" {
                        "Rescan queued as request "
                        a.id href={ "/console/requests/" (request) } { (request) }
                        ". The verdict shows below when the scan ends."
                    }
                }
                div.live data-live={ "/console/live/uploads/" (row.id) } aria-live="polite" {
                    (facts(row))
                }
                p { a href="/console/uploads" { "All uploads" } }
            },
        ),
    )
}

/// An action the upload's state does not allow, said plainly, with the way back.
pub(super) fn refused(status: StatusCode, id: Uuid, detail: &str) -> Response {
    let reason = status.canonical_reason().unwrap_or("Refused");
    respond(
        status,
        page(
            "Upload",
            true,
            html! {
                h1 { (reason) }
                p.error role="alert" { "Not rescanned: " (detail) "." }
                p { a href={ "/console/uploads/" (id) } { "Back to the upload" } }
            },
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_say_them() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(2048), "2.0 KiB");
        assert_eq!(size(5 * 1024 * 1024 + 512 * 1024), "5.5 MiB");
    }

    #[test]
    fn a_digest_is_lowercase_hex() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
    }
}
