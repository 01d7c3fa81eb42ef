//! An account's email templates: create (version 1), edit (the next version), read,
//! list, delete, and preview a rendering with given variables. Every part is checked
//! with the template engine (`shared::mail::template`) before it is stored, so a
//! template that does not parse is a 422 naming the part and the line, never a job
//! that dies later.

use serde::Serialize;
use serde_json::Value;
use shared::db::templates::{self as repo, Parts, TemplateRow};
use shared::domain::{Principal, Role};
use shared::jobs::email::{EmailContent, TemplateRef};
use shared::mail::compose::{self, MessageError};
use shared::mail::template::{Limits, Source, Template, TemplateError};
use shared::problem::FieldError;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// Templates a `user` account may keep.
pub const USER_TEMPLATES: i64 = 5;
/// Templates a `promoter` or `admin` account may keep.
pub const ACCOUNT_TEMPLATES: i64 = 1000;
/// The most characters of a name.
pub const MAX_NAME_CHARS: usize = 100;
/// The most bytes of a subject template.
pub const MAX_SUBJECT_BYTES: usize = 2 * 1024;
/// The most bytes of a text or HTML template.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// A template as its owner sees it: its current version's parts.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TemplateView {
    pub id: Uuid,
    pub name: String,
    /// 1 when created; each edit makes the next.
    pub version: i32,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    /// The HTML's `<style>` rules are inlined when a message is rendered.
    pub inline_css: bool,
    /// The variables the template uses (what a message must give).
    pub variables: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

/// A rendering, as a message would carry it (CSS inlined if the template asks; the
/// text part made from the HTML if the template has none).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Preview {
    pub version: i32,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

/// The parts of a template to store.
#[derive(Debug, Clone)]
pub struct Draft {
    pub name: Option<String>,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    pub inline_css: bool,
}

/// The 422 of a template error: its part as the field, the line and the variable in
/// the message.
pub fn unprocessable(err: &TemplateError) -> ApiError {
    ApiError::Unprocessable {
        detail: format!("the template cannot be used: {err}"),
        errors: vec![field_error(err, None)],
    }
}

/// A template error as a field error: `variables.{name}` for a variable, the part
/// otherwise. For a message (`message` is the prefix of its variables, e.g.
/// `recipients[3].`), a part is `template.{part}`: the message's own `text` is not
/// the template's.
fn field_error(err: &TemplateError, message: Option<&str>) -> FieldError {
    let field = match err {
        TemplateError::Missing { name, .. } | TemplateError::LineBreak { name } => {
            format!("{}variables.{name}", message.unwrap_or_default())
        }
        TemplateError::Syntax { part, .. }
        | TemplateError::TooLong { part, .. }
        | TemplateError::TooMuchWork { part }
        | TemplateError::Render { part, .. } => match message {
            Some(_) => format!("template.{}", part.as_str()),
            None => part.as_str().to_owned(),
        },
    };
    FieldError::new(field, err.to_string())
}

/// A message's template error as a field error (see [`field_error`]).
pub fn message_error(err: &MessageError, prefix: &str) -> FieldError {
    match err {
        MessageError::Template(err) => field_error(err, Some(prefix)),
        MessageError::Compose(err) => FieldError::new("template.html", err.to_string()),
    }
}

/// A template version a message is rendered from.
pub struct Loaded {
    pub reference: TemplateRef,
    pub row: TemplateRow,
    pub template: Template,
}

impl Loaded {
    /// One message from the template with `variables`: a rendered subject must still
    /// be a subject (at most 998 characters), a body at most 512 KiB (the limits of a
    /// message given directly).
    pub fn render(&self, variables: &Value, prefix: &str) -> Result<EmailContent, FieldError> {
        let content = compose::render(&self.template, variables, self.row.inline_css)
            .map_err(|err| message_error(&err, prefix))?;
        let mut errors = Vec::new();
        shared::domain::message::check_subject(&content.subject, "template.subject", &mut errors);
        if let Some(error) = errors.into_iter().next() {
            return Err(FieldError::new(
                error.field,
                format!("once rendered, {}", error.message),
            ));
        }
        Ok(content)
    }
}

/// The sender's template named by a message (its id or its name), at `version` or
/// its current one; a 422 on `template` when there is none (another account's
/// template is not found either).
pub async fn load(
    state: &AppState,
    user: &Principal,
    key: &str,
    version: Option<i32>,
) -> Result<Loaded, ApiError> {
    let row = repo::resolve(&state.pool, user.id, key, version)
        .await?
        .ok_or_else(|| ApiError::Unprocessable {
            detail: "the template cannot be used".into(),
            errors: vec![FieldError::new(
                if version.is_some() {
                    "template_version"
                } else {
                    "template"
                },
                match version {
                    Some(v) => format!("you have no template {key:?} at version {v}"),
                    None => format!("you have no template {key:?} (by id or name)"),
                },
            )],
        })?;
    let template =
        Template::parse(&source(&row), Limits::for_message()).map_err(|err| unprocessable(&err))?;
    Ok(Loaded {
        reference: TemplateRef {
            id: row.id,
            name: row.name.clone(),
            version: row.version,
        },
        row,
        template,
    })
}

fn source(row: &TemplateRow) -> Source {
    Source {
        subject: row.subject.clone(),
        text: row.text.clone(),
        html: row.html.clone(),
    }
}

fn parsed(row: &TemplateRow) -> Result<Template, ApiError> {
    Template::parse(&source(row), Limits::default()).map_err(|err| unprocessable(&err))
}

fn view(row: TemplateRow) -> Result<TemplateView, ApiError> {
    let variables = parsed(&row)?
        .variables()
        .into_iter()
        .map(str::to_owned)
        .collect();
    Ok(TemplateView {
        id: row.id,
        name: row.name,
        version: row.version,
        subject: row.subject,
        text: row.text,
        html: row.html,
        inline_css: row.inline_css,
        variables,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// Checks a draft's sizes and syntax.
fn check(draft: &Draft) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    if let Some(name) = &draft.name {
        let chars = name.chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
            errors.push(FieldError::new(
                "name",
                format!("1 to {MAX_NAME_CHARS} characters, no control characters"),
            ));
        }
    }
    if draft.subject.trim().is_empty() || draft.subject.len() > MAX_SUBJECT_BYTES {
        errors.push(FieldError::new(
            "subject",
            format!("not empty, at most {MAX_SUBJECT_BYTES} bytes"),
        ));
    }
    if draft.text.trim().is_empty() && draft.html.is_none() {
        errors.push(FieldError::new(
            "text",
            "a text part is needed when there is no html part",
        ));
    }
    if draft.text.len() > MAX_BODY_BYTES {
        errors.push(FieldError::new(
            "text",
            format!("at most {MAX_BODY_BYTES} bytes"),
        ));
    }
    if draft
        .html
        .as_ref()
        .is_some_and(|html| html.len() > MAX_BODY_BYTES)
    {
        errors.push(FieldError::new(
            "html",
            format!("at most {MAX_BODY_BYTES} bytes"),
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Unprocessable {
            detail: "the template is not valid".into(),
            errors,
        });
    }
    Template::parse(
        &Source {
            subject: draft.subject.clone(),
            text: draft.text.clone(),
            html: draft.html.clone(),
        },
        Limits::default(),
    )
    .map(|_| ())
    .map_err(|err| unprocessable(&err))
}

fn cap(role: Role) -> i64 {
    match role {
        Role::User => USER_TEMPLATES,
        Role::Promoter | Role::Admin => ACCOUNT_TEMPLATES,
    }
}

/// A new template (version 1). 409 when the name is taken or the account holds as
/// many templates as its role may.
pub async fn create(
    state: &AppState,
    user: &Principal,
    draft: Draft,
) -> Result<TemplateView, ApiError> {
    check(&draft)?;
    let name = draft.name.clone().unwrap_or_default();
    let mut tx = state.pool.begin().await?;
    repo::lock_owner(&mut tx, user.id).await?;
    let held = repo::count(&mut *tx, user.id).await?;
    if held >= cap(user.role) {
        return Err(ApiError::Conflict(format!(
            "the account already holds {held} templates, the most its role may; delete one first"
        )));
    }
    let parts = Parts {
        subject: &draft.subject,
        text: &draft.text,
        html: draft.html.as_deref(),
        inline_css: draft.inline_css,
    };
    let row = repo::create(&mut tx, user.id, &name, parts)
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("a template named {name:?} exists")))?;
    tx.commit().await?;
    view(row)
}

/// The caller's template, at its current version.
pub async fn find(state: &AppState, user: &Principal, id: Uuid) -> Result<TemplateView, ApiError> {
    let row = repo::find(&state.pool, user.id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no template {id}")))?;
    view(row)
}

/// A page of the caller's templates, newest first; `true` if more follow.
pub async fn list(
    state: &AppState,
    user: &Principal,
    after: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> Result<(Vec<TemplateView>, bool), ApiError> {
    let mut rows = repo::list(&state.pool, user.id, after, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let views = rows.into_iter().map(view).collect::<Result<_, _>>()?;
    Ok((views, more))
}

/// Makes `draft` the next version of the caller's template (its name stays).
pub async fn edit(
    state: &AppState,
    user: &Principal,
    id: Uuid,
    draft: Draft,
) -> Result<TemplateView, ApiError> {
    check(&draft)?;
    let mut tx = state.pool.begin().await?;
    let parts = Parts {
        subject: &draft.subject,
        text: &draft.text,
        html: draft.html.as_deref(),
        inline_css: draft.inline_css,
    };
    let row = repo::add_version(&mut tx, user.id, id, parts)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no template {id}")))?;
    tx.commit().await?;
    view(row)
}

/// Deletes the caller's template and its versions.
pub async fn delete(state: &AppState, user: &Principal, id: Uuid) -> Result<(), ApiError> {
    if repo::delete(&state.pool, user.id, id).await? {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("no template {id}")))
    }
}

/// Renders the caller's template (its current version, or `version`) with
/// `variables`, sending nothing.
pub async fn preview(
    state: &AppState,
    user: &Principal,
    id: Uuid,
    version: Option<i32>,
    variables: &serde_json::Value,
) -> Result<Preview, ApiError> {
    let row = match version {
        Some(version) => repo::find_version(&state.pool, user.id, id, version).await?,
        None => repo::find(&state.pool, user.id, id).await?,
    }
    .ok_or_else(|| ApiError::NotFound(format!("no template {id} at that version")))?;
    let rendered = compose::render(&parsed(&row)?, variables, row.inline_css).map_err(|err| {
        ApiError::Unprocessable {
            detail: format!("the template cannot be used: {err}"),
            errors: vec![match &err {
                MessageError::Template(err) => field_error(err, None),
                MessageError::Compose(err) => FieldError::new("html", err.to_string()),
            }],
        }
    })?;
    Ok(Preview {
        version: row.version,
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
    })
}
