//! `POST /api/v1/emails` and `POST /api/v1/campaigns`: accepted with 202, delivered
//! by the workers. A handler only extracts: the body becomes a domain value
//! (`shared::domain::message`), the service (`services::emails`) seals the recipients
//! (encrypted before they are stored) and submits it.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use serde::Deserialize;
use shared::domain::message::{BodyFields, Campaign, CampaignFields, Email, EmailFields};
use shared::problem::FieldError;

use crate::error::ApiError;
use crate::extract::parse_json;
use crate::middleware::auth::{Authorized, perm};
use crate::services::emails::{self, Delivery};
use crate::services::requests::{self, Accepted, Idempotency};
use crate::services::webhooks;
use crate::state::AppState;

pub fn routes(campaign_body_limit: usize) -> Router<AppState> {
    Router::new().route("/emails", post(send_email)).route(
        "/campaigns",
        post(send_campaign).layer(DefaultBodyLimit::max(campaign_body_limit)),
    )
}

/// One message. Past what the schema states, each address is checked (see `to`), and
/// the recipients together (`to` + `cc` + `bcc`) are charged to the sender's hourly
/// and daily message quota: more than a whole quota is 422, more than what is left of
/// it 429 `message_quota_exceeded`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailRequest {
    /// 1 to 50 mailboxes, each `ada@example.org` or `Ada Lovelace <ada@example.org>`:
    /// a plain ASCII address (`local@domain`, local part up to 64 characters, at most
    /// 254 in all, a domain of at least two labels), optionally after a display name of
    /// up to 100 characters without `<`, `>`, `"` or `\`; no control characters.
    #[schema(
        min_items = 1,
        max_items = 50,
        examples("Ada Lovelace <ada@example.org>")
    )]
    pub to: Vec<String>,
    /// Up to 50 mailboxes, as in `to`.
    #[serde(default)]
    #[schema(max_items = 50)]
    pub cc: Vec<String>,
    /// Up to 50 mailboxes, as in `to`.
    #[serde(default)]
    #[schema(max_items = 50)]
    pub bcc: Vec<String>,
    /// One mailbox, as in `to`.
    pub reply_to: Option<String>,
    /// 1 to 998 characters, not all whitespace, without control characters (no CR or
    /// LF: nothing can forge a header). Required unless `template` is given.
    #[schema(
        min_length = 1,
        max_length = 998,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028-\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*$",
        examples("Your invoice")
    )]
    pub subject: Option<String>,
    /// The plain-text body: at most 512 KiB (524,288 bytes) of UTF-8, without NUL.
    /// Without it (and with `html`), the text part is made from the HTML.
    #[schema(
        pattern = r"^[^\x00]*$",
        examples("Hello Ada,\n\nyour invoice is attached.")
    )]
    pub text: Option<String>,
    /// The HTML body: at most 512 KiB (524,288 bytes) of UTF-8, without NUL.
    #[schema(
        pattern = r"^[^\x00]*$",
        examples("<p>Hello Ada,</p><p>your invoice is attached.</p>")
    )]
    pub html: Option<String>,
    /// Render the message from one of your templates (`/api/v1/templates`), by its id
    /// or its name, instead of giving `subject`, `text` and `html` (not allowed with
    /// it). The request records the version used.
    #[schema(min_length = 1, max_length = 100, examples("welcome"))]
    pub template: Option<String>,
    /// The template's version to render; default its current one. Needs `template`.
    #[schema(minimum = 1)]
    pub template_version: Option<i32>,
    /// The template's variables: an object of names to values (at most 64 KiB as
    /// JSON). Every variable the template uses must be given (a 422 names a missing
    /// one); a line break in a value the subject uses is refused. Needs `template`.
    #[schema(value_type = Option<Object>, examples(json!({"name": "Ada", "amount": "42.00"})))]
    pub variables: Option<serde_json::Value>,
    /// Up to 10 of your uploads to attach, by id (`/api/v1/uploads`): sent with their
    /// stored bytes, sanitized file name and detected type, together at most
    /// `ATTACHMENTS_MAX_BYTES` (default 10 MiB). One still being scanned makes the
    /// message wait for the scan (the request stays `queued`); one found infected then
    /// fails it (nothing sent). Another account's upload is 404; an infected or
    /// rejected one 422.
    #[serde(default)]
    #[schema(max_items = 10, examples(json!(["0193a5d2-7c4e-7b8a-9f10-2b3c4d5e6f70"])))]
    pub attachments: Vec<String>,
    /// When to send (a scheduled send): an RFC 3339 timestamp with an offset, at most
    /// `SEND_AT_MAX_AHEAD_SECS` (default 30 days) ahead. A time past, or within a
    /// second of now, sends at once. Until then the request can be cancelled.
    #[schema(format = DateTime, examples("2030-01-31T09:00:00Z"))]
    pub send_at: Option<String>,
    /// Where to POST a signed `request.finished` event when the request reaches its
    /// final state (see the README's "Completion webhooks"): an absolute http(s) URL
    /// of at most 2,048 bytes without user info or fragment, not at a loopback,
    /// private or link-local address. Needs a signing secret
    /// (`POST /api/v1/me/webhook-secret`; without one 422 `webhook_secret_missing`).
    #[schema(max_length = 2048, examples("https://hooks.example.org/conveyor"))]
    pub callback_url: Option<String>,
}

/// One message per distinct recipient, all with the same content. The distinct
/// recipients are charged to the sender's message quota, as for an email.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignRequest {
    /// 1 to 200 characters once leading and trailing whitespace is trimmed (the
    /// trimmed name is kept), without control characters inside.
    #[schema(
        min_length = 1,
        pattern = r"^[\x09-\x0D\x20\x85\xA0\u1680\u2000-\u200A\u2028-\u2029\u202F\u205F\u3000]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028-\u2029\u202F\u205F\u3000](?:[^\x00-\x1F\x7F-\x9F]{0,198}[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028-\u2029\u202F\u205F\u3000])?[\x09-\x0D\x20\x85\xA0\u1680\u2000-\u200A\u2028-\u2029\u202F\u205F\u3000]*$",
        examples("Spring launch")
    )]
    pub name: String,
    /// As an email's `subject` (required unless `template` is given).
    #[schema(
        min_length = 1,
        max_length = 998,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028-\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*$",
        examples("Spring is here")
    )]
    pub subject: Option<String>,
    /// As an email's `text`: at most 512 KiB (524,288 bytes) of UTF-8, without NUL;
    /// made from `html` when left out.
    #[schema(pattern = r"^[^\x00]*$", examples("Our spring collection is out."))]
    pub text: Option<String>,
    /// As an email's `html`: at most 512 KiB (524,288 bytes) of UTF-8, without NUL.
    #[schema(
        pattern = r"^[^\x00]*$",
        examples("<p>Our spring collection is out.</p>")
    )]
    pub html: Option<String>,
    /// As an email's `template`: every message rendered from it, each with the
    /// campaign's `variables` and its recipient's own (which win).
    #[schema(min_length = 1, max_length = 100, examples("spring-launch"))]
    pub template: Option<String>,
    /// As an email's `template_version`.
    #[schema(minimum = 1)]
    pub template_version: Option<i32>,
    /// Variables every recipient shares (at most 64 KiB as JSON). Needs `template`.
    #[schema(value_type = Option<Object>, examples(json!({"season": "spring"})))]
    pub variables: Option<serde_json::Value>,
    /// 1 to 100,000 recipients, each a mailbox as an email's `to`, or an object with
    /// the mailbox and its own template variables (at most 16 KiB as JSON; needs
    /// `template`); duplicates (by address) are sent once, with the first one's
    /// variables. Every recipient's message is rendered when the campaign is submitted:
    /// one the template cannot be rendered for is a 422 naming it
    /// (`recipients[3].variables.name`).
    #[schema(min_items = 1, max_items = 100000)]
    pub recipients: Vec<RecipientInput>,
    /// When the messages may go out: days of the week and hours of the day in an IANA
    /// time zone. A message due outside it waits (no attempt spent) until it opens,
    /// across worker restarts. Times are `HH:MM`; `end` after `start` (or `24:00`); a
    /// local time the clocks skip stands for the moment they jump.
    pub send_window: Option<shared::mail::window::SendWindowFields>,
    /// The most messages the campaign sends per day (1 to 10,000,000), counted per
    /// local day of the window's zone (UTC without a window) across every worker;
    /// the rest wait for the next day.
    #[schema(minimum = 1, maximum = 10000000)]
    pub daily_cap: Option<i64>,
    /// Up to 10 of your uploads attached to every message, by id (`/api/v1/uploads`): sent with their
    /// stored bytes, sanitized file name and detected type, together at most
    /// `ATTACHMENTS_MAX_BYTES` (default 10 MiB). One still being scanned makes the
    /// message wait for the scan (the request stays `queued`); one found infected then
    /// fails it (nothing sent). Another account's upload is 404; an infected or
    /// rejected one 422.
    #[serde(default)]
    #[schema(max_items = 10, examples(json!(["0193a5d2-7c4e-7b8a-9f10-2b3c4d5e6f70"])))]
    pub attachments: Vec<String>,
    /// When to send every message (a scheduled send): an RFC 3339 timestamp with an offset, at most
    /// `SEND_AT_MAX_AHEAD_SECS` (default 30 days) ahead. A time past, or within a
    /// second of now, sends at once. Until then the request can be cancelled.
    #[schema(format = DateTime, examples("2030-01-31T09:00:00Z"))]
    pub send_at: Option<String>,
    /// As an email's `callback_url`: one event when the whole campaign has finished.
    #[schema(max_length = 2048, examples("https://hooks.example.org/conveyor"))]
    pub callback_url: Option<String>,
}

/// A campaign's recipient: a mailbox, or a mailbox with its own template variables.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum RecipientInput {
    #[schema(examples("Grace Hopper <grace@example.org>"))]
    Mailbox(String),
    Personal(PersonalRecipient),
}

/// A recipient with its own variables.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonalRecipient {
    /// A mailbox, as an email's `to`.
    #[schema(examples("Grace Hopper <grace@example.org>"))]
    pub address: String,
    /// This recipient's variables (win over the campaign's).
    #[schema(value_type = Object, examples(json!({"name": "Grace"})))]
    pub variables: serde_json::Value,
}

/// The request's `send_at`, checked ([`requests::send_at`]); an error joins `errors`.
fn checked_send_at(
    state: &AppState,
    raw: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> Option<time::OffsetDateTime> {
    let max_ahead = state.config.pipeline.send_at_max_ahead;
    requests::send_at(raw, time::OffsetDateTime::now_utc(), max_ahead).unwrap_or_else(|message| {
        errors.push(FieldError::new("send_at", message));
        None
    })
}

fn idempotency(
    headers: &HeaderMap,
    path: &str,
    body: &[u8],
) -> Result<Option<Idempotency>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::validation("Idempotency-Key must be 1 to 255 visible ASCII characters")
        })?;
    let mut material = Vec::with_capacity(path.len() + body.len() + 1);
    material.extend_from_slice(path.as_bytes());
    material.push(0);
    material.extend_from_slice(body);
    Ok(Some(Idempotency {
        key: key.to_owned(),
        fingerprint: shared::crypto::sha256(&material).to_vec(),
    }))
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    if crate::extract::media_type(headers).as_deref() == Some("application/json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(
            "the body must be JSON with Content-Type: application/json".into(),
        ))
    }
}

/// Queues one message (one job). Answers 202 at once; follow it at `Location`.
#[utoipa::path(post, path = "/api/v1/emails", tag = "emails", request_body = EmailRequest, security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = r"^[!-~]+$",
        description = "Repeat-safe submission (kept 24 h): 1 to 255 visible ASCII characters")),
    responses(
        (status = 202, body = Accepted, description = "Queued (until `send_at`, if given); `Location` names the request"),
        (status = 404, body = shared::problem::Problem, description = "an attachment is not one of your uploads"),
        (status = 409, body = shared::problem::Problem, description = "same Idempotency-Key still being processed"),
        (status = 422, body = shared::problem::Problem, description = "`validation_failed` (e.g. CR/LF in a header field, `send_at` not RFC 3339 or too far ahead, a template that cannot render with the variables, an infected attachment, attachments over the size limit) or `idempotency_key_reused`"),
    ))]
pub async fn send_email(
    State(state): State<AppState>,
    Authorized(user, ..): Authorized<perm::SubmitEmail>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let request: EmailRequest = parse_json(&body)?;
    let mut errors = Vec::new();
    let email = Email::parse(
        EmailFields {
            to: request.to,
            cc: request.cc,
            bcc: request.bcc,
            reply_to: request.reply_to,
            body: BodyFields {
                subject: request.subject,
                text: request.text,
                html: request.html,
                template: request.template,
                template_version: request.template_version,
                variables: request.variables,
            },
            attachments: request.attachments,
        },
        &mut errors,
    );
    let send_at = checked_send_at(&state, request.send_at.as_deref(), &mut errors);
    let callback_url = webhooks::parse_callback(
        &state,
        "callback_url",
        request.callback_url.as_deref(),
        &mut errors,
    );
    let Some(email) = email.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Unprocessable {
            detail: "the email is not valid".into(),
            errors,
        });
    };
    let delivery = Delivery {
        send_at,
        callback_url,
        correlation_id: super::correlation(&headers),
        idempotency: idempotency(&headers, "/api/v1/emails", &body)?,
    };
    Ok(super::accepted(
        emails::submit_email(&state, &user, email, delivery).await?,
    ))
}

/// Queues one message per distinct recipient (promoters and admins).
#[utoipa::path(post, path = "/api/v1/campaigns", tag = "emails", request_body = CampaignRequest, security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = r"^[!-~]+$",
        description = "Repeat-safe submission (kept 24 h): 1 to 255 visible ASCII characters")),
    responses(
        (status = 202, body = Accepted, description = "Queued (until `send_at`, if given); `total` is the number of distinct recipients"),
        (status = 403, body = shared::problem::Problem, description = "role `user`"),
        (status = 404, body = shared::problem::Problem, description = "an attachment is not one of your uploads"),
        (status = 422, body = shared::problem::Problem, description = "`validation_failed`: as for an email, and a recipient the template cannot be rendered for (`recipients[i].variables.name`), a send window or daily cap out of bounds"),
    ))]
pub async fn send_campaign(
    State(state): State<AppState>,
    Authorized(user, ..): Authorized<perm::SubmitCampaign>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let request: CampaignRequest = parse_json(&body)?;
    let mut errors = Vec::new();
    let campaign = Campaign::parse(
        CampaignFields {
            name: request.name,
            body: BodyFields {
                subject: request.subject,
                text: request.text,
                html: request.html,
                template: request.template,
                template_version: request.template_version,
                variables: request.variables,
            },
            recipients: request
                .recipients
                .into_iter()
                .map(|r| match r {
                    RecipientInput::Mailbox(address) => (address, None),
                    RecipientInput::Personal(p) => (p.address, Some(p.variables)),
                })
                .collect(),
            send_window: request.send_window,
            daily_cap: request.daily_cap,
            attachments: request.attachments,
        },
        &mut errors,
    );
    let send_at = checked_send_at(&state, request.send_at.as_deref(), &mut errors);
    let callback_url = webhooks::parse_callback(
        &state,
        "callback_url",
        request.callback_url.as_deref(),
        &mut errors,
    );
    let Some(campaign) = campaign.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Unprocessable {
            detail: "the campaign is not valid".into(),
            errors,
        });
    };
    let delivery = Delivery {
        send_at,
        callback_url,
        correlation_id: super::correlation(&headers),
        idempotency: idempotency(&headers, "/api/v1/campaigns", &body)?,
    };
    Ok(super::accepted(
        emails::submit_campaign(&state, &user, campaign, delivery).await?,
    ))
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        /// An Idempotency-Key is accepted exactly when it is 1 to 255 visible ASCII
        /// characters; the fingerprint depends on the path and the body.
        #[test]
        fn idempotency_keys_are_visible_ascii_up_to_255(key in "[!-~]{1,300}|.{0,20}", body in ".{0,40}") {
            let mut headers = axum::http::HeaderMap::new();
            let Ok(value) = axum::http::HeaderValue::from_str(&key) else {
                return Ok(());
            };
            headers.insert("idempotency-key", value);
            let valid = !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic());
            let parsed = super::idempotency(&headers, "/api/v1/emails", body.as_bytes());
            proptest::prop_assert_eq!(parsed.is_ok(), valid);
            if let Ok(Some(first)) = parsed {
                let other_path = super::idempotency(&headers, "/api/v1/campaigns", body.as_bytes())
                    .ok()
                    .flatten()
                    .map(|i| i.fingerprint);
                proptest::prop_assert_ne!(Some(first.fingerprint), other_path);
            }
        }
    }
}

/// The published constraints, checked against the limits above: a pattern's character
/// classes are spelled out here from the predicates the handlers use.
#[cfg(test)]
pub(crate) mod spec_check {
    use serde_json::Value;

    /// A regex class body of every character `member` holds for, as the spec spells
    /// it: runs as ranges, `\xHH` up to U+00FF and `\uHHHH` above.
    pub fn class(member: impl Fn(char) -> bool) -> String {
        let escape = |c: char| {
            let code = u32::from(c);
            assert!(code <= 0xFFFF, "{code:X} needs a \\u{{…}} escape");
            if code <= 0xFF {
                format!("\\x{code:02X}")
            } else {
                format!("\\u{code:04X}")
            }
        };
        let mut runs: Vec<(char, char)> = Vec::new();
        for c in (0..=0x10FFFF)
            .filter_map(char::from_u32)
            .filter(|&c| member(c))
        {
            match runs.last_mut() {
                Some((_, end)) if u32::from(*end) + 1 == u32::from(c) => *end = c,
                _ => runs.push((c, c)),
            }
        }
        runs.iter()
            .map(|&(start, end)| {
                if start == end {
                    escape(start)
                } else {
                    format!("{}-{}", escape(start), escape(end))
                }
            })
            .collect()
    }

    /// Any character but a control character (`char::is_control`).
    pub fn not_control() -> String {
        format!("[^{}]", class(char::is_control))
    }

    /// Any character that `str::trim` keeps and that is not a control character.
    pub fn visible() -> String {
        format!("[^{}]", class(|c| c.is_control() || c.is_whitespace()))
    }

    /// What `str::trim` removes (`char::is_whitespace`).
    pub fn whitespace() -> String {
        format!("[{}]", class(char::is_whitespace))
    }

    /// `components.schemas.{name}` of the served spec.
    pub fn schema(name: &str) -> Value {
        let spec: Value = serde_json::from_str(&crate::openapi::json()).expect("the spec is JSON");
        spec["components"]["schemas"][name].clone()
    }

    /// The parameters of an operation of the served spec, by name.
    pub fn parameter(path: &str, method: &str, name: &str) -> Value {
        let spec: Value = serde_json::from_str(&crate::openapi::json()).expect("the spec is JSON");
        spec["paths"][path][method]["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .unwrap_or_else(|| panic!("{method} {path}: no parameter {name}"))
            .clone()
    }

    #[test]
    fn email_and_campaign_constraints_are_the_handlers_limits() {
        use shared::domain::message::{
            MAX_CAMPAIGN_RECIPIENTS, MAX_NAME_CHARS, MAX_RECIPIENTS, MAX_SUBJECT_CHARS,
        };
        let (nc, vis, ws) = (not_control(), visible(), whitespace());
        let subject = format!("^{nc}*{vis}{nc}*$");
        let no_nul = format!("^[^{}]*$", class(|c| c == '\0'));
        let email = &schema("EmailRequest")["properties"];
        assert_eq!(email["to"]["minItems"], 1);
        for list in ["to", "cc", "bcc"] {
            assert_eq!(email[list]["maxItems"], MAX_RECIPIENTS, "{list}");
        }
        let campaign = &schema("CampaignRequest")["properties"];
        assert_eq!(campaign["recipients"]["minItems"], 1);
        assert_eq!(campaign["recipients"]["maxItems"], MAX_CAMPAIGN_RECIPIENTS);
        for body in [email, campaign] {
            assert_eq!(body["subject"]["pattern"], subject.as_str());
            assert_eq!(body["subject"]["minLength"], 1);
            assert_eq!(body["subject"]["maxLength"], MAX_SUBJECT_CHARS);
            for field in ["text", "html"] {
                assert_eq!(body[field]["pattern"], no_nul.as_str(), "{field}");
                // A byte limit: no maxLength in characters, which would be exact for
                // ASCII only.
                assert!(body[field].get("maxLength").is_none(), "{field}");
            }
        }
        // The trimmed name: 1 visible character, or 2 around up to MAX - 2 others.
        let name = format!(
            "^{ws}*{vis}(?:{nc}{{0,{}}}{vis})?{ws}*$",
            MAX_NAME_CHARS - 2
        );
        assert_eq!(campaign["name"]["pattern"], name.as_str());
        for path in ["/api/v1/emails", "/api/v1/campaigns"] {
            let key = &parameter(path, "post", "Idempotency-Key")["schema"];
            assert_eq!(key["type"], "string", "{path}");
            assert_eq!(key["pattern"], "^[!-~]+$", "{path}");
            assert_eq!(
                (key["minLength"].clone(), key["maxLength"].clone()),
                (1.into(), 255.into())
            );
        }
    }
}
