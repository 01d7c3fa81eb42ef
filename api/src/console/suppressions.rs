//! The console's suppressions: look an address up across every account's list, or
//! read one account's list a page at a time, and take an entry off (audited as
//! `unsuppress`). An address is shown only to an operator who typed it or asked for
//! that account's list (as the admin API's `owner` does).

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use shared::domain::Permission;
use uuid::Uuid;

use super::session::{ConsoleAdmin, cross_site, same_origin};
use super::views::{self, moment, page, respond};
use crate::error::ApiError;
use crate::routes::cursor;
use crate::services::suppressions::{self, Suppression};
use crate::state::AppState;

/// Entries shown per page (and at most per address lookup).
const PAGE: i64 = 50;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Search {
    pub address: String,
    pub account: String,
    pub cursor: String,
}

/// What the page found.
struct Found {
    entries: Vec<(Uuid, Suppression)>,
    next: Option<String>,
    searched: bool,
}

async fn search(state: &AppState, search: &Search) -> Result<Found, String> {
    let address = search.address.trim();
    let account = search.account.trim();
    if !address.is_empty() {
        let entries = suppressions::find_everywhere(state, address, PAGE)
            .await
            .map_err(|err| match err {
                ApiError::Unprocessable { .. } => format!("{address} is not an email address."),
                err => err.for_page().1,
            })?;
        return Ok(Found {
            entries,
            next: None,
            searched: true,
        });
    }
    if account.is_empty() {
        return Ok(Found {
            entries: Vec::new(),
            next: None,
            searched: false,
        });
    }
    let owner = Uuid::parse_str(account)
        .map_err(|_| format!("{account} is not an account id (a UUID)."))?;
    let after = match search.cursor.as_str() {
        "" => None,
        text => Some(cursor::decode(text).map_err(|_| "That page link is not valid.".to_owned())?),
    };
    let (entries, more) = suppressions::list(state, owner, after, PAGE)
        .await
        .map_err(|err| err.for_page().1)?;
    let next = more
        .then(|| entries.last())
        .flatten()
        .map(|last| cursor::encode(last.created_at, last.id));
    Ok(Found {
        entries: entries.into_iter().map(|entry| (owner, entry)).collect(),
        next,
        searched: true,
    })
}

/// `GET /console/suppressions`.
pub async fn list(State(state): State<AppState>, Query(query): Query<Search>) -> Response {
    match search(&state, &query).await {
        Ok(found) => view(StatusCode::OK, &query, &found, None),
        Err(problem) => view(
            StatusCode::UNPROCESSABLE_ENTITY,
            &query,
            &Found {
                entries: Vec::new(),
                next: None,
                searched: false,
            },
            Some(&problem),
        ),
    }
}

fn view(status: StatusCode, query: &Search, found: &Found, error: Option<&str>) -> Response {
    let next_link = found.next.as_deref().map(|cursor| {
        views::next_page(
            "/console/suppressions",
            &[("account", query.account.trim())],
            cursor,
        )
    });
    respond(
        status,
        page(
            "Suppressions",
            true,
            html! {
                h1 { "Suppressions" }
                p.note { "Addresses an account no longer sends to (bounces, complaints, unsubscribes, by hand). Look an address up across every account, or open one account's list." }
                form.filters method="get" action="/console/suppressions" {
                    label for="address" { "Address" }
                    input #address type="email" name="address" value=(query.address) spellcheck="false";
                    label for="account" { "or account id" }
                    input #account type="text" name="account" value=(query.account) spellcheck="false";
                    button type="submit" { "Search" }
                }
                @if let Some(error) = error {
                    p.error role="alert" { (error) }
                }
                @if found.searched {
                    div.live role="region" aria-label="Suppressions found" tabindex="0" {
                        table {
                            caption { "Newest first" }
                            thead {
                                tr {
                                    th scope="col" { "Address" }
                                    th scope="col" { "Account" }
                                    th scope="col" { "Reason" }
                                    th scope="col" { "Cause" }
                                    th scope="col" { "Request" }
                                    th scope="col" { "Since" }
                                    th scope="col" { "Actions" }
                                }
                            }
                            tbody {
                                @for (owner, entry) in &found.entries {
                                    tr data-suppression=(entry.id) {
                                        th scope="row" { (entry.address) }
                                        td { a.id href={ "/console/suppressions?account=" (owner) } { (owner) } }
                                        td { (entry.reason.as_str()) }
                                        td { (entry.detail.as_deref().unwrap_or("—")) }
                                        td {
                                            @match entry.request_id {
                                                Some(request) => a.id href={ "/console/requests/" (request) } { (request) },
                                                None => "—",
                                            }
                                        }
                                        td { (moment(entry.created_at)) }
                                        td {
                                            form.inline method="post" action={ "/console/suppressions/" (owner) "/" (entry.id) "/remove" } {
                                                button type="submit" id={ "remove-" (entry.id) }
                                                    aria-label={ "Remove " (entry.address) " from the list of account " (owner) } { "Remove" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if found.entries.is_empty() {
                        p #no-suppression { "No list holds it." }
                    }
                    @if let Some(link) = next_link {
                        p { a href=(link) rel="next" { "Older entries" } }
                    }
                }
            },
        ),
    )
}

/// `POST /console/suppressions/{owner}/{id}/remove`: the account may send to the
/// address again.
pub async fn remove(
    State(state): State<AppState>,
    Extension(admin): Extension<ConsoleAdmin>,
    Path((owner, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let (Ok(owner), Ok(id)) = (Uuid::parse_str(&owner), Uuid::parse_str(&id)) else {
        return views::not_found();
    };
    let operator = match super::session::operator(&admin, &headers, Permission::ManageUsers) {
        Ok(operator) => operator,
        Err(refusal) => return refusal,
    };
    match suppressions::remove_as_operator(&state, &operator, owner, id).await {
        Ok(()) => Redirect::to(&format!("/console/suppressions?account={owner}")).into_response(),
        Err(ApiError::NotFound(_)) => views::not_found(),
        Err(err) => views::error_page(err),
    }
}
