//! The console's uploads: every account's files in a filtered list a keyset page at a
//! time, one upload's facts (live), and an admin's rescan with the current rules
//! through the audited service. Never a file's content.

mod markup;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use shared::db::uploads::UploadFilter;
use shared::domain::UploadStatus;
use uuid::Uuid;

use super::live;
use super::session::{ConsoleAdmin, cross_site, same_origin};
use super::views;
use crate::error::ApiError;
use crate::routes::cursor;
use crate::services::uploads;
use crate::state::AppState;

/// Uploads shown per page.
const PAGE: i64 = 50;

/// The list's filters, as the form sends them (an empty field is no filter).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Filters {
    pub status: String,
    pub owner: String,
    pub cursor: String,
}

impl Filters {
    fn filter(&self) -> Result<UploadFilter, String> {
        let status = match self.status.as_str() {
            "" => None,
            name => Some(
                UploadStatus::ALL
                    .iter()
                    .copied()
                    .find(|s| s.as_str() == name)
                    .ok_or_else(|| format!("There is no upload status named {name}."))?,
            ),
        };
        let owner = match self.owner.trim() {
            "" => None,
            id => Some(
                Uuid::parse_str(id).map_err(|_| format!("{id} is not an account id (a UUID)."))?,
            ),
        };
        let after = match self.cursor.as_str() {
            "" => None,
            text => {
                Some(cursor::decode(text).map_err(|_| "That page link is not valid.".to_owned())?)
            }
        };
        Ok(UploadFilter {
            status,
            owner,
            after,
            limit: PAGE,
        })
    }
}

/// `GET /console/uploads`: every account's uploads, newest first, filtered, a page at
/// a time.
pub async fn list(State(state): State<AppState>, Query(filters): Query<Filters>) -> Response {
    let filter = match filters.filter() {
        Ok(filter) => filter,
        Err(problem) => {
            return markup::list(
                StatusCode::UNPROCESSABLE_ENTITY,
                &filters,
                &[],
                None,
                Some(&problem),
            );
        }
    };
    match uploads::list_all(&state, filter).await {
        Ok((rows, more)) => {
            let next = more
                .then(|| rows.last())
                .flatten()
                .map(|last| cursor::encode(last.created_at, last.id));
            markup::list(StatusCode::OK, &filters, &rows, next.as_deref(), None)
        }
        Err(err) => views::error_page(err),
    }
}

/// What the page was sent back with after an action.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Shown {
    /// The request of the rescan just queued.
    pub rescan: String,
}

/// `GET /console/uploads/{id}`: its facts, never its content.
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(shown): Query<Shown>,
) -> Response {
    let Ok(id) = Uuid::parse_str(&id) else {
        return views::not_found();
    };
    match uploads::find_any(&state, id).await {
        Ok(row) => markup::upload(&row, Uuid::parse_str(&shown.rescan).ok()),
        Err(ApiError::NotFound(_)) => views::not_found(),
        Err(err) => views::error_page(err),
    }
}

/// `GET /console/live/uploads/{id}`: one upload's facts, again whenever they change
/// (a verdict, a move to storage or quarantine).
pub async fn live(
    State(state): State<AppState>,
    Extension(admin): Extension<ConsoleAdmin>,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = Uuid::parse_str(&id) else {
        return views::not_found();
    };
    live::stream(
        state,
        admin,
        Box::new(move |state| {
            Box::pin(async move {
                let row = uploads::find_any(&state, id).await.ok()?;
                Some(markup::facts(&row).into_string())
            })
        }),
    )
}

/// `POST /console/uploads/{id}/rescan`: scans any account's upload again with the
/// current rules, then back to its page.
pub async fn rescan(
    State(state): State<AppState>,
    Extension(admin): Extension<ConsoleAdmin>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let Ok(id) = Uuid::parse_str(&id) else {
        return views::not_found();
    };
    let correlation = crate::routes::correlation(&headers);
    match uploads::rescan_as_admin(&state, &admin.0, id, correlation).await {
        Ok(accepted) => {
            Redirect::to(&format!("/console/uploads/{id}?rescan={}", accepted.id)).into_response()
        }
        Err(ApiError::NotFound(_)) => views::not_found(),
        Err(ApiError::Conflict(detail)) => markup::refused(StatusCode::CONFLICT, id, &detail),
        Err(err) => views::error_page(err),
    }
}
