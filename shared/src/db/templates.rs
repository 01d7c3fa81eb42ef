//! `email_templates` and `email_template_versions`: an account's email templates.
//! [`create`] makes a template at version 1; [`add_version`] makes the next version
//! current (the old ones stay: a message records the version it used); [`delete`]
//! removes a template and its versions.

use serde::Serialize;
use sqlx::{FromRow, PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

/// A template at one version.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct TemplateRow {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub name: String,
    pub version: i32,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    /// Inline the HTML's `<style>` rules when rendering.
    pub inline_css: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

macro_rules! at_version {
    ($version:literal) => {
        concat!(
            "SELECT t.id, t.owner_id, t.name, v.version, v.subject, v.text, v.html, v.inline_css, \
                    t.created_at, t.updated_at \
             FROM email_templates t JOIN email_template_versions v ON v.template_id = t.id \
             WHERE ",
            $version
        )
    };
}

/// The parts of a version.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    pub subject: &'a str,
    pub text: &'a str,
    pub html: Option<&'a str>,
    pub inline_css: bool,
}

/// How many templates `owner` has (the caller holds the owner's lock: [`lock_owner`]).
pub async fn count(db: impl PgExecutor<'_>, owner: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM email_templates WHERE owner_id = $1")
        .bind(owner)
        .fetch_one(db)
        .await
}

/// Serializes the template changes of one owner (a count and an insert in one
/// transaction stay true under concurrent creates).
pub async fn lock_owner(db: &mut PgConnection, owner: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
        .bind(owner)
        .execute(db)
        .await
        .map(|_| ())
}

/// A new template at version 1; `None` when the owner already has one of that name.
pub async fn create(
    db: &mut PgConnection,
    owner: Uuid,
    name: &str,
    parts: Parts<'_>,
) -> Result<Option<TemplateRow>, sqlx::Error> {
    let id = Uuid::now_v7();
    let inserted = sqlx::query(
        "INSERT INTO email_templates (id, owner_id, name, current_version) VALUES ($1, $2, $3, 1) \
         ON CONFLICT (owner_id, name) DO NOTHING",
    )
    .bind(id)
    .bind(owner)
    .bind(name)
    .execute(&mut *db)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(None);
    }
    insert_version(&mut *db, id, 1, parts).await?;
    find(&mut *db, owner, id).await
}

async fn insert_version(
    db: &mut PgConnection,
    id: Uuid,
    version: i32,
    parts: Parts<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO email_template_versions (template_id, version, subject, text, html, inline_css) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(version)
    .bind(parts.subject)
    .bind(parts.text)
    .bind(parts.html)
    .bind(parts.inline_css)
    .execute(db)
    .await
    .map(|_| ())
}

/// `owner`'s template `id` at its current version.
pub async fn find(
    db: impl PgExecutor<'_>,
    owner: Uuid,
    id: Uuid,
) -> Result<Option<TemplateRow>, sqlx::Error> {
    sqlx::query_as(at_version!(
        "t.id = $1 AND t.owner_id = $2 AND v.version = t.current_version"
    ))
    .bind(id)
    .bind(owner)
    .fetch_optional(db)
    .await
}

/// `owner`'s template `id` at `version`.
pub async fn find_version(
    db: impl PgExecutor<'_>,
    owner: Uuid,
    id: Uuid,
    version: i32,
) -> Result<Option<TemplateRow>, sqlx::Error> {
    sqlx::query_as(at_version!(
        "t.id = $1 AND t.owner_id = $2 AND v.version = $3"
    ))
    .bind(id)
    .bind(owner)
    .bind(version)
    .fetch_optional(db)
    .await
}

/// `owner`'s template by id (`key` a UUID) or by name, at `version` or its current
/// one: what a message names.
pub async fn resolve(
    db: impl PgExecutor<'_>,
    owner: Uuid,
    key: &str,
    version: Option<i32>,
) -> Result<Option<TemplateRow>, sqlx::Error> {
    let id = Uuid::parse_str(key).ok();
    sqlx::query_as(at_version!(
        "t.owner_id = $1 AND (t.id = $2 OR ($2 IS NULL AND t.name = $3)) \
         AND v.version = COALESCE($4, t.current_version)"
    ))
    .bind(owner)
    .bind(id)
    .bind(key)
    .bind(version)
    .fetch_optional(db)
    .await
}

/// A page of `owner`'s templates at their current versions, newest first.
pub async fn list(
    db: impl PgExecutor<'_>,
    owner: Uuid,
    after: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> Result<Vec<TemplateRow>, sqlx::Error> {
    let (at, id) = after.unzip();
    sqlx::query_as(concat!(
        at_version!(
            "t.owner_id = $1 AND v.version = t.current_version \
             AND ($2::timestamptz IS NULL OR (t.created_at, t.id) < ($2, $3))"
        ),
        " ORDER BY t.created_at DESC, t.id DESC LIMIT $4"
    ))
    .bind(owner)
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Makes `parts` the next version of `owner`'s template `id` (locked while it does);
/// `None` when there is no such template.
pub async fn add_version(
    db: &mut PgConnection,
    owner: Uuid,
    id: Uuid,
    parts: Parts<'_>,
) -> Result<Option<TemplateRow>, sqlx::Error> {
    let next: Option<i32> = sqlx::query_scalar(
        "UPDATE email_templates SET current_version = current_version + 1, updated_at = now() \
         WHERE id = $1 AND owner_id = $2 RETURNING current_version",
    )
    .bind(id)
    .bind(owner)
    .fetch_optional(&mut *db)
    .await?;
    let Some(version) = next else {
        return Ok(None);
    };
    insert_version(&mut *db, id, version, parts).await?;
    find(&mut *db, owner, id).await
}

/// Deletes `owner`'s template `id` and its versions; false if there is none.
pub async fn delete(db: impl PgExecutor<'_>, owner: Uuid, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM email_templates WHERE id = $1 AND owner_id = $2")
        .bind(id)
        .bind(owner)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}
