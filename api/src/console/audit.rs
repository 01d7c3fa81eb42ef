//! The console's audit log: every operator action, newest first, a keyset page at a
//! time, its targets linked to their pages.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::views::{self, clip, moment, page, respond};
use crate::routes::cursor;
use crate::services::operations::{self as ops, AuditEntry};
use crate::state::AppState;

/// Entries shown per page.
const PAGE: i64 = 50;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AuditQuery {
    pub cursor: String,
}

/// `GET /console/audit`.
pub async fn list(State(state): State<AppState>, Query(query): Query<AuditQuery>) -> Response {
    let after = match query.cursor.as_str() {
        "" => None,
        text => match cursor::decode(text) {
            Ok(after) => Some(after),
            Err(_) => {
                return views::refusal(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "That page link is not valid.",
                );
            }
        },
    };
    match ops::audit_page(&state, after, PAGE).await {
        Ok((entries, more)) => {
            let next = more
                .then(|| entries.last())
                .flatten()
                .map(|last| cursor::encode(last.created_at, last.id));
            view(&entries, next.as_deref())
        }
        Err(err) => views::error_page(err),
    }
}

/// An audit target, linked to its page where the console has one.
fn target(target: Option<&str>) -> Markup {
    let Some(target) = target else {
        return html! { "—" };
    };
    let link = match target.split_once(':') {
        Some(("job", id)) => Some(format!("/console/jobs/{id}")),
        Some(("request", id)) => Some(format!("/console/requests/{id}")),
        Some(("upload", id)) => Some(format!("/console/uploads/{id}")),
        Some(("queue", name)) => Some(format!("/console/jobs?queue={name}")),
        Some(("schedule", _)) => Some("/console/schedules".to_owned()),
        _ => None,
    };
    html! {
        @match link {
            Some(href) => a href=(href) { (target) },
            None => (target),
        }
    }
}

fn view(entries: &[AuditEntry], next: Option<&str>) -> Response {
    respond(
        StatusCode::OK,
        page(
            "Audit log",
            true,
            html! {
                h1 { "Audit log" }
                p.note { "Every action an operator took, from this console, the admin API or the command line." }
                div.live role="region" aria-label="Audit log" tabindex="0" {
                    table {
                        caption { "Newest first" }
                        thead {
                            tr {
                                th scope="col" { "When" }
                                th scope="col" { "Who" }
                                th scope="col" { "Action" }
                                th scope="col" { "Target" }
                                th scope="col" { "Details" }
                                th scope="col" { "Request id" }
                            }
                        }
                        tbody {
                            @for entry in entries {
                                tr {
                                    td { (moment(entry.created_at)) }
                                    td { (entry.actor) }
                                    th scope="row" { (entry.action) }
                                    td { (target(entry.target.as_deref())) }
                                    td.details { code { (clip(&entry.details.to_string(), 160)) } }
                                    td { code { (entry.request_id.as_deref().unwrap_or("—")) } }
                                }
                            }
                        }
                    }
                }
                @if entries.is_empty() {
                    p { "No operator has acted yet." }
                }
                @if let Some(cursor) = next {
                    p { a href={ "/console/audit?cursor=" (cursor) } rel="next" { "Older entries" } }
                }
            },
        ),
    )
}
