//! The caller's email templates (`/templates`): create, read, list, edit (a new
//! version), delete, and preview a rendering without sending.

use axum::extract::State;

use crate::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use uuid::Uuid;

use super::cursor::{self, Page};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::middleware::auth::{Authorized, perm};
use crate::services::templates::{self as service, Draft, Preview, TemplateView};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/templates", get(list).post(create))
        .route("/templates/{id}", get(show).put(edit).delete(remove))
        .route("/templates/{id}/preview", post(preview))
}

/// A template's parts: minijinja templates (`{{ name }}`, `{% if %}`, `{% for %}`,
/// filters such as `| upper`). The HTML part escapes every value it inserts.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTemplate {
    /// Unique among the account's templates, 1 to 100 characters, no control
    /// characters.
    #[schema(
        examples("welcome"),
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub name: String,
    /// One line once rendered (a variable holding a line break is refused).
    #[schema(examples("Welcome, {{ name }}"), min_length = 1, max_length = 2048)]
    pub subject: String,
    /// At most 256 KiB (and the whole body at most `BODY_LIMIT_BYTES`). May be
    /// empty (or left out) when `html` is given: the text part is then made from the
    /// rendered HTML.
    #[schema(examples("Hello {{ name }}, your code is {{ code }}."))]
    #[serde(default)]
    pub text: String,
    /// At most 256 KiB.
    #[schema(examples("<p>Hello {{ name }}</p>"))]
    pub html: Option<String>,
    /// Write the rules of the HTML's `<style>` elements into the `style` attribute of
    /// each element they match when a message is rendered (many mail clients ignore
    /// `<style>`). No linked stylesheet is fetched. Default false.
    #[serde(default)]
    pub inline_css: bool,
}

/// The next version's parts (the name stays).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateEdit {
    #[schema(
        examples("Welcome back, {{ name }}"),
        min_length = 1,
        max_length = 2048
    )]
    pub subject: String,
    /// At most 256 KiB; may be empty when `html` is given (made from it).
    #[serde(default)]
    pub text: String,
    /// At most 256 KiB.
    pub html: Option<String>,
    /// As when created. Default false.
    #[serde(default)]
    pub inline_css: bool,
}

/// Variables to render with (a JSON object: names to values), and which version.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    #[schema(value_type = Object, examples(json!({"name": "Ada", "code": "1234"})))]
    #[serde(default = "empty_object")]
    pub variables: serde_json::Value,
    /// A past version; default the current one.
    #[schema(minimum = 1)]
    pub version: Option<i32>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page, as it was given.
    #[param(pattern = "^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
}

/// Creates a template at version 1. Its parts are checked: a syntax error is a 422
/// that names the part and the line. A `user` may keep 5 templates, a `promoter` or
/// `admin` 1,000.
#[utoipa::path(post, path = "/api/v1/templates", tag = "templates", request_body = NewTemplate, security(("bearer" = [])),
    responses((status = 201, body = TemplateView),
              (status = 409, body = shared::problem::Problem, description = "`conflict`: the name is taken, or the account holds as many templates as its role may"),
              (status = 422, body = shared::problem::Problem, description = "`validation_failed`: a part does not parse (its field and line named), or a size is out of bounds")))]
pub async fn create(
    State(state): State<AppState>,
    Authorized(user, ..): Authorized<perm::SubmitEmail>,
    ApiJson(body): ApiJson<NewTemplate>,
) -> Result<Response, ApiError> {
    let draft = Draft {
        name: Some(body.name),
        subject: body.subject,
        text: body.text,
        html: body.html,
        inline_css: body.inline_css,
    };
    let template = service::create(&state, &user, draft).await?;
    let location = format!("/api/v1/templates/{}", template.id);
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::LOCATION, location)],
        Json(template),
    )
        .into_response())
}

/// The caller's templates at their current versions, newest first.
#[utoipa::path(get, path = "/api/v1/templates", tag = "templates", params(ListQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<TemplateView>), (status = 400, body = shared::problem::Problem)))]
pub async fn list(
    State(state): State<AppState>,
    Authorized(user, ..): Authorized<perm::SubmitEmail>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<TemplateView>>, ApiError> {
    let limit = cursor::page_size(query.limit)?;
    let after = query.cursor.as_deref().map(cursor::decode).transpose()?;
    let (items, more) = service::list(&state, &user, after, limit).await?;
    Ok(Json(Page::keyset(
        items,
        more,
        |t| (t.created_at, t.id),
        |t| t,
    )))
}

/// One of the caller's templates, at its current version.
#[utoipa::path(get, path = "/api/v1/templates/{id}", tag = "templates", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = TemplateView), (status = 404, body = shared::problem::Problem)))]
pub async fn show(
    State(state): State<AppState>,
    Authorized(user, ..): Authorized<perm::SubmitEmail>,
    Path(id): Path<Uuid>,
) -> Result<Json<TemplateView>, ApiError> {
    Ok(Json(service::find(&state, &user, id).await?))
}

/// Makes the body the template's next version (the previous ones are kept: a
/// message records the version it used).
#[utoipa::path(put, path = "/api/v1/templates/{id}", tag = "templates", params(("id" = Uuid, Path)), request_body = TemplateEdit, security(("bearer" = [])),
    responses((status = 200, body = TemplateView), (status = 404, body = shared::problem::Problem),
              (status = 422, body = shared::problem::Problem, description = "`validation_failed`: a part does not parse, or a size is out of bounds")))]
pub async fn edit(
    State(state): State<AppState>,
    Authorized(user, ..): Authorized<perm::SubmitEmail>,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<TemplateEdit>,
) -> Result<Json<TemplateView>, ApiError> {
    let draft = Draft {
        name: None,
        subject: body.subject,
        text: body.text,
        html: body.html,
        inline_css: body.inline_css,
    };
    Ok(Json(service::edit(&state, &user, id, draft).await?))
}

/// Deletes a template and all its versions.
#[utoipa::path(delete, path = "/api/v1/templates/{id}", tag = "templates", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204, description = "deleted"), (status = 404, body = shared::problem::Problem)))]
pub async fn remove(
    State(state): State<AppState>,
    Authorized(user, ..): Authorized<perm::SubmitEmail>,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    service::delete(&state, &user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Renders the template with `variables` and sends nothing: what a message would
/// carry. A variable the template uses but the body lacks, a line break in a subject
/// variable, or a render that runs too long or too large is a 422 that names it.
#[utoipa::path(post, path = "/api/v1/templates/{id}/preview", tag = "templates", params(("id" = Uuid, Path)), request_body = PreviewRequest, security(("bearer" = [])),
    responses((status = 200, body = Preview), (status = 404, body = shared::problem::Problem, description = "no such template (or version)"),
              (status = 422, body = shared::problem::Problem, description = "`validation_failed`: a variable missing (`variables.<name>`), a line break in the subject, or too much output or work")))]
pub async fn preview(
    State(state): State<AppState>,
    Authorized(user, ..): Authorized<perm::SubmitEmail>,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<PreviewRequest>,
) -> Result<Json<Preview>, ApiError> {
    if !body.variables.is_object() {
        return Err(ApiError::Unprocessable {
            detail: "variables must be an object of names to values".into(),
            errors: vec![shared::problem::FieldError::new("variables", "an object")],
        });
    }
    Ok(Json(
        service::preview(&state, &user, id, body.version, &body.variables).await?,
    ))
}
