//! `POST /api/v1/emails` and `POST /api/v1/campaigns`: accepted with 202, delivered
//! by the workers. Recipients are sealed (encrypted) before they are stored.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use serde::Deserialize;
use shared::domain::{EmailAddress, RequestKind};
use shared::jobs::NewJob;
use shared::jobs::email::{EmailContent, EmailJob, Sealed};
use shared::problem::FieldError;
use shared::queue::Lane;

use crate::error::ApiError;
use crate::extract::parse_json;
use crate::middleware::auth::{Authorized, perm};
use crate::services::quotas::QuotaCharge;
use crate::services::requests::{self, Accepted, Idempotency, Submission};
use crate::services::webhooks;
use crate::state::AppState;

pub const MAX_RECIPIENTS: usize = 50;
pub const MAX_CAMPAIGN_RECIPIENTS: usize = 100_000;
const MAX_SUBJECT_CHARS: usize = 998;
/// Characters of a campaign's name, once trimmed.
const MAX_NAME_CHARS: usize = 200;
const MAX_BODY_BYTES: usize = 512 * 1024;

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
    /// LF: nothing can forge a header).
    #[schema(
        min_length = 1,
        max_length = 998,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028-\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*$",
        examples("Your invoice")
    )]
    pub subject: String,
    /// The plain-text body: at most 512 KiB (524,288 bytes) of UTF-8, without NUL.
    #[schema(
        pattern = r"^[^\x00]*$",
        examples("Hello Ada,\n\nyour invoice is attached.")
    )]
    pub text: String,
    /// The HTML body: at most 512 KiB (524,288 bytes) of UTF-8, without NUL.
    #[schema(
        pattern = r"^[^\x00]*$",
        examples("<p>Hello Ada,</p><p>your invoice is attached.</p>")
    )]
    pub html: Option<String>,
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
    /// As an email's `subject`.
    #[schema(
        min_length = 1,
        max_length = 998,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028-\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*$",
        examples("Spring is here")
    )]
    pub subject: String,
    /// As an email's `text`: at most 512 KiB (524,288 bytes) of UTF-8, without NUL.
    #[schema(pattern = r"^[^\x00]*$", examples("Our spring collection is out."))]
    pub text: String,
    /// As an email's `html`: at most 512 KiB (524,288 bytes) of UTF-8, without NUL.
    #[schema(
        pattern = r"^[^\x00]*$",
        examples("<p>Our spring collection is out.</p>")
    )]
    pub html: Option<String>,
    /// 1 to 100,000 mailboxes, each as an email's `to`; duplicates (by address) are
    /// sent once.
    #[schema(
        min_items = 1,
        max_items = 100000,
        examples("Grace Hopper <grace@example.org>")
    )]
    pub recipients: Vec<String>,
    /// When to send every message (a scheduled send): an RFC 3339 timestamp with an offset, at most
    /// `SEND_AT_MAX_AHEAD_SECS` (default 30 days) ahead. A time past, or within a
    /// second of now, sends at once. Until then the request can be cancelled.
    #[schema(format = DateTime, examples("2030-01-31T09:00:00Z"))]
    pub send_at: Option<String>,
    /// As an email's `callback_url`: one event when the whole campaign has finished.
    #[schema(max_length = 2048, examples("https://hooks.example.org/conveyor"))]
    pub callback_url: Option<String>,
}

/// A mailbox as text, checked: an address, optionally with a display name. A CR or
/// LF anywhere is refused, so nothing can forge a header.
fn mailbox(raw: &str) -> Result<(String, String), String> {
    if raw.chars().any(char::is_control) {
        return Err("must not contain control characters (CR, LF, …)".into());
    }
    let raw = raw.trim();
    let (name, address) = match raw.strip_suffix('>').and_then(|r| r.rsplit_once('<')) {
        Some((name, address)) => (name.trim().trim_matches('"').trim(), address),
        None => ("", raw),
    };
    if name.chars().count() > 100 || name.contains(['<', '>', '"', '\\']) {
        return Err("has an invalid display name".into());
    }
    let address = EmailAddress::parse(address).map_err(|e| e.to_string())?;
    let text = if name.is_empty() {
        address.as_str().to_owned()
    } else {
        format!("\"{name}\" <{}>", address.as_str())
    };
    Ok((text, address.into_string()))
}

fn check_content(subject: &str, text: &str, html: Option<&str>, errors: &mut Vec<FieldError>) {
    if subject.trim().is_empty() || subject.chars().count() > MAX_SUBJECT_CHARS {
        errors.push(FieldError::new(
            "subject",
            format!("must be 1 to {MAX_SUBJECT_CHARS} characters"),
        ));
    }
    if subject.contains(['\r', '\n']) || subject.chars().any(char::is_control) {
        errors.push(FieldError::new(
            "subject",
            "must not contain CR, LF or other control characters",
        ));
    }
    if text.len() > MAX_BODY_BYTES {
        errors.push(FieldError::new(
            "text",
            format!("must be at most {MAX_BODY_BYTES} bytes"),
        ));
    }
    if html.is_some_and(|h| h.len() > MAX_BODY_BYTES) {
        errors.push(FieldError::new(
            "html",
            format!("must be at most {MAX_BODY_BYTES} bytes"),
        ));
    }
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

fn seal_list(
    state: &AppState,
    field: &str,
    list: &[String],
    errors: &mut Vec<FieldError>,
) -> Vec<Sealed> {
    list.iter()
        .enumerate()
        .filter_map(|(i, raw)| match mailbox(raw) {
            Ok((text, _)) => Some(Sealed::seal(&state.security.pii, &text)),
            Err(message) => {
                errors.push(FieldError::new(format!("{field}[{i}]"), message));
                None
            }
        })
        .collect()
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
        (status = 409, body = shared::problem::Problem, description = "same Idempotency-Key still being processed"),
        (status = 422, body = shared::problem::Problem, description = "`validation_failed` (e.g. CR/LF in a header field, `send_at` not RFC 3339 or too far ahead) or `idempotency_key_reused`"),
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
    // An oversized list is refused as a whole: checking (and sealing) each of its
    // entries would be work, and an answer, proportional to the abuse.
    let mut checked_list = |field: &str, list: &[String], min: usize| {
        if list.len() < min || list.len() > MAX_RECIPIENTS {
            errors.push(FieldError::new(
                field,
                format!("must hold {min} to {MAX_RECIPIENTS} addresses"),
            ));
            Vec::new()
        } else {
            seal_list(&state, field, list, &mut errors)
        }
    };
    let to = checked_list("to", &request.to, 1);
    let cc = checked_list("cc", &request.cc, 0);
    let bcc = checked_list("bcc", &request.bcc, 0);
    let reply_to = request
        .reply_to
        .as_deref()
        .map(|raw| seal_list(&state, "reply_to", &[raw.to_owned()], &mut errors))
        .and_then(|mut sealed| sealed.pop());
    check_content(
        &request.subject,
        &request.text,
        request.html.as_deref(),
        &mut errors,
    );
    let send_at = checked_send_at(&state, request.send_at.as_deref(), &mut errors);
    let callback_url = webhooks::parse_callback(
        &state,
        "callback_url",
        request.callback_url.as_deref(),
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(ApiError::Unprocessable {
            detail: "the email is not valid".into(),
            errors,
        });
    }
    if callback_url.is_some() {
        webhooks::require_secret(&state, user.id).await?;
    }
    let job = EmailJob {
        to,
        cc,
        bcc,
        reply_to,
        content: Some(EmailContent {
            subject: request.subject,
            text: request.text,
            html: request.html,
        }),
        sealed_content: None,
    };
    // One message per recipient, for the quota.
    let messages = job.to.len() + job.cc.len() + job.bcc.len();
    let submission = Submission {
        owner: user.id,
        kind: RequestKind::Email,
        name: None,
        correlation_id: super::correlation(&headers),
        content: None,
        send_at,
        jobs: vec![NewJob::of(&job)?],
        quota: Some(QuotaCharge::new(user.role, messages)),
        callback_url,
    };
    let idem = idempotency(&headers, "/api/v1/emails", &body)?;
    Ok(super::accepted(
        requests::submit(&state, submission, idem).await?,
    ))
}

/// Queues one message per distinct recipient (promoters and admins).
#[utoipa::path(post, path = "/api/v1/campaigns", tag = "emails", request_body = CampaignRequest, security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = r"^[!-~]+$",
        description = "Repeat-safe submission (kept 24 h): 1 to 255 visible ASCII characters")),
    responses(
        (status = 202, body = Accepted, description = "Queued (until `send_at`, if given); `total` is the number of distinct recipients"),
        (status = 403, body = shared::problem::Problem, description = "role `user`"),
        (status = 422, body = shared::problem::Problem),
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
    let name = request.name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        errors.push(FieldError::new(
            "name",
            format!("must be 1 to {MAX_NAME_CHARS} characters without control characters"),
        ));
    }
    if request.recipients.is_empty() || request.recipients.len() > MAX_CAMPAIGN_RECIPIENTS {
        errors.push(FieldError::new(
            "recipients",
            format!("must hold 1 to {MAX_CAMPAIGN_RECIPIENTS} addresses"),
        ));
    }
    check_content(
        &request.subject,
        &request.text,
        request.html.as_deref(),
        &mut errors,
    );
    let send_at = checked_send_at(&state, request.send_at.as_deref(), &mut errors);
    // Past the limit the list is refused as a whole, unchecked (see `send_email`).
    let recipients = if request.recipients.len() > MAX_CAMPAIGN_RECIPIENTS {
        &[][..]
    } else {
        &request.recipients[..]
    };
    let mut seen = std::collections::HashSet::with_capacity(recipients.len());
    // Bulk: the owner's turn in the fair lane, behind no transactional mail.
    let lane = Lane::Fair(user.id);
    let mut jobs = Vec::with_capacity(recipients.len());
    for (i, raw) in recipients.iter().enumerate() {
        match mailbox(raw) {
            Ok((text, address)) => {
                if seen.insert(address) {
                    let job = EmailJob {
                        to: vec![Sealed::seal(&state.security.pii, &text)],
                        cc: vec![],
                        bcc: vec![],
                        reply_to: None,
                        content: None,
                        sealed_content: None,
                    };
                    jobs.push(NewJob::of(&job)?.in_lane(lane));
                }
            }
            Err(message) => errors.push(FieldError::new(format!("recipients[{i}]"), message)),
        }
    }
    let callback_url = webhooks::parse_callback(
        &state,
        "callback_url",
        request.callback_url.as_deref(),
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(ApiError::Unprocessable {
            detail: "the campaign is not valid".into(),
            errors,
        });
    }
    if callback_url.is_some() {
        webhooks::require_secret(&state, user.id).await?;
    }
    let content = EmailContent {
        subject: request.subject,
        text: request.text,
        html: request.html,
    };
    let submission = Submission {
        owner: user.id,
        kind: RequestKind::Campaign,
        name: Some(name.to_owned()),
        correlation_id: super::correlation(&headers),
        content: Some(serde_json::to_value(&content).map_err(|e| ApiError::Internal(e.into()))?),
        send_at,
        quota: Some(QuotaCharge::new(user.role, jobs.len())),
        jobs,
        callback_url,
    };
    let idem = idempotency(&headers, "/api/v1/campaigns", &body)?;
    Ok(super::accepted(
        requests::submit(&state, submission, idem).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::mailbox;

    #[test]
    fn mailboxes_with_and_without_names() {
        assert_eq!(
            mailbox("Ada@Example.org").map(|m| m.1),
            Ok("ada@example.org".to_owned())
        );
        assert_eq!(
            mailbox("Ada Lovelace <ada@example.org>").map(|m| m.0),
            Ok("\"Ada Lovelace\" <ada@example.org>".to_owned())
        );
        for bad in [
            "ada@example.org\r\nBcc: all@example.org",
            "Ada\r\nBcc: x@y.org <ada@example.org>",
            "Ada <ada@example.org\n>",
            "Ev\"il <ada@example.org>",
            "not an address",
        ] {
            assert!(mailbox(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        /// Whatever the input, a mailbox that passes holds no control character (so no
        /// header can be forged), and its text parses again to the same address.
        #[test]
        fn an_accepted_mailbox_is_safe_and_stable(raw in "\\PC{0,60}|[ -~]{0,60}|.{0,60}") {
            if let Ok((text, address)) = mailbox(&raw) {
                proptest::prop_assert!(!text.chars().any(char::is_control), "{text:?}");
                proptest::prop_assert!(!address.chars().any(char::is_control));
                let again = mailbox(&text).map(|m| m.1);
                proptest::prop_assert_eq!(again, Ok(address));
            }
        }

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
        use super::{MAX_CAMPAIGN_RECIPIENTS, MAX_NAME_CHARS, MAX_RECIPIENTS, MAX_SUBJECT_CHARS};
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
