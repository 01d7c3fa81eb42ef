//! Messages as clients submit them, parsed: an email's recipients and content, a
//! campaign's name, content and distinct recipients. A route only extracts the body;
//! turning it into one of these values (every field checked, every problem reported
//! with its field) happens here, and a service seals and stores a value that is valid
//! by construction.

use std::collections::HashSet;

use super::EmailAddress;
use crate::jobs::email::EmailContent;
use crate::problem::FieldError;

/// Recipients of one email (`to`, `cc`, `bcc`: each list at most this).
pub const MAX_RECIPIENTS: usize = 50;
/// Recipients of one campaign.
pub const MAX_CAMPAIGN_RECIPIENTS: usize = 100_000;
/// Characters of a subject.
pub const MAX_SUBJECT_CHARS: usize = 998;
/// Characters of a campaign's name, once trimmed.
pub const MAX_NAME_CHARS: usize = 200;
/// Bytes of a text or HTML body (also of a rendered one).
pub const MAX_BODY_BYTES: usize = 512 * 1024;
/// Bytes of one recipient's variables (as JSON).
pub const MAX_RECIPIENT_VARIABLES_BYTES: usize = 16 * 1024;
/// Bytes of a message's (or a campaign's shared) variables (as JSON).
pub const MAX_VARIABLES_BYTES: usize = 64 * 1024;
/// Characters of a template's name (or its id).
pub const MAX_TEMPLATE_KEY_CHARS: usize = 100;

/// Attachments of one message (or of every message of a campaign).
pub const MAX_ATTACHMENTS: usize = 10;

/// Template variables: names to JSON values.
pub type Variables = serde_json::Map<String, serde_json::Value>;

/// A mailbox: an address, optionally with a display name. A CR or LF anywhere is
/// refused, so nothing can forge a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// As it goes into a header: `"Ada Lovelace" <ada@example.org>` or the address.
    text: String,
    /// The address alone, lowercased (what duplicates are found by).
    address: String,
}

impl Mailbox {
    pub fn parse(raw: &str) -> Result<Mailbox, String> {
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
        Ok(Mailbox {
            text,
            address: address.into_string(),
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn address(&self) -> &str {
        &self.address
    }
}

/// A subject (1 to 998 characters, no control characters) and bodies (at most 512 KiB
/// each; a text part, or an HTML part it is made from); problems join `errors`.
fn content(
    subject: Option<String>,
    text: Option<String>,
    html: Option<String>,
    errors: &mut Vec<FieldError>,
) -> Option<EmailContent> {
    let before = errors.len();
    let subject = subject.unwrap_or_default();
    check_subject(&subject, "subject", errors);
    if text.is_none() && html.is_none() {
        errors.push(FieldError::new(
            "text",
            "is required (or `html`, which a text part is then made from), unless `template` is given",
        ));
    }
    if text.as_ref().is_some_and(|t| t.len() > MAX_BODY_BYTES) {
        errors.push(FieldError::new(
            "text",
            format!("must be at most {MAX_BODY_BYTES} bytes"),
        ));
    }
    if html.as_ref().is_some_and(|h| h.len() > MAX_BODY_BYTES) {
        errors.push(FieldError::new(
            "html",
            format!("must be at most {MAX_BODY_BYTES} bytes"),
        ));
    }
    if errors.len() != before {
        return None;
    }
    let text = match (text, &html) {
        (Some(text), _) => text,
        (None, Some(html)) => match crate::mail::compose::text_from_html(html) {
            Ok(text) => text,
            Err(err) => {
                errors.push(FieldError::new("html", err.to_string()));
                return None;
            }
        },
        (None, None) => String::new(),
    };
    Some(EmailContent {
        subject,
        text,
        html,
    })
}

/// A subject: 1 to 998 characters, not all whitespace, no control characters.
pub fn check_subject(subject: &str, field: &str, errors: &mut Vec<FieldError>) {
    if subject.trim().is_empty() || subject.chars().count() > MAX_SUBJECT_CHARS {
        errors.push(FieldError::new(
            field,
            format!("must be 1 to {MAX_SUBJECT_CHARS} characters"),
        ));
    }
    if subject.contains(['\r', '\n']) || subject.chars().any(char::is_control) {
        errors.push(FieldError::new(
            field,
            "must not contain CR, LF or other control characters",
        ));
    }
}

/// A message's content as given: its parts, or a template to render them from.
#[derive(Debug, Clone)]
pub enum Body {
    Content(EmailContent),
    Template(TemplateUse),
}

/// A template to render a message from: the sender's template by id or name, a
/// version of it (default its current one) and the variables.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateUse {
    /// The template's id (a UUID) or its name.
    pub key: String,
    pub version: Option<i32>,
    pub variables: Variables,
}

/// The fields of a message's content as the client sent them.
#[derive(Debug, Clone, Default)]
pub struct BodyFields {
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub template: Option<String>,
    pub template_version: Option<i32>,
    pub variables: Option<serde_json::Value>,
}

/// Upload ids to attach: at most [`MAX_ATTACHMENTS`], each a UUID, repeats dropped.
fn attachments(raw: Vec<String>, errors: &mut Vec<FieldError>) -> Vec<uuid::Uuid> {
    if raw.len() > MAX_ATTACHMENTS {
        errors.push(FieldError::new(
            "attachments",
            format!("must hold at most {MAX_ATTACHMENTS} upload ids"),
        ));
        return Vec::new();
    }
    let mut ids: Vec<uuid::Uuid> = Vec::with_capacity(raw.len());
    for (i, id) in raw.iter().enumerate() {
        match uuid::Uuid::parse_str(id) {
            Ok(id) if !ids.contains(&id) => ids.push(id),
            Ok(_) => {}
            Err(_) => errors.push(FieldError::new(
                format!("attachments[{i}]"),
                "must be an upload's id (a UUID)",
            )),
        }
    }
    ids
}

/// A JSON object of variables of at most `max` bytes (as JSON), named `field`.
fn variables(
    field: &str,
    value: serde_json::Value,
    max: usize,
    errors: &mut Vec<FieldError>,
) -> Option<Variables> {
    match value {
        serde_json::Value::Object(map) => {
            if serde_json::to_string(&map).map_or(usize::MAX, |json| json.len()) > max {
                errors.push(FieldError::new(
                    field,
                    format!("must be at most {max} bytes as JSON"),
                ));
                return None;
            }
            Some(map)
        }
        _ => {
            errors.push(FieldError::new(
                field,
                "must be an object of names to values",
            ));
            None
        }
    }
}

fn body(fields: BodyFields, errors: &mut Vec<FieldError>) -> Option<Body> {
    let Some(key) = fields.template else {
        for (field, given) in [
            ("template_version", fields.template_version.is_some()),
            ("variables", fields.variables.is_some()),
        ] {
            if given {
                errors.push(FieldError::new(field, "needs `template`"));
            }
        }
        return content(fields.subject, fields.text, fields.html, errors).map(Body::Content);
    };
    let before = errors.len();
    for (field, given) in [
        ("subject", fields.subject.is_some()),
        ("text", fields.text.is_some()),
        ("html", fields.html.is_some()),
    ] {
        if given {
            errors.push(FieldError::new(
                field,
                "must not be given with `template` (the template has its own)",
            ));
        }
    }
    let chars = key.chars().count();
    if chars == 0 || chars > MAX_TEMPLATE_KEY_CHARS || key.chars().any(char::is_control) {
        errors.push(FieldError::new(
            "template",
            format!("must be a template's id or name: 1 to {MAX_TEMPLATE_KEY_CHARS} characters"),
        ));
    }
    if fields.template_version.is_some_and(|v| v < 1) {
        errors.push(FieldError::new("template_version", "must be at least 1"));
    }
    let variables = match fields.variables {
        Some(value) => variables("variables", value, MAX_VARIABLES_BYTES, errors),
        None => Some(Variables::new()),
    };
    (errors.len() == before).then(|| {
        Body::Template(TemplateUse {
            key,
            version: fields.template_version,
            variables: variables.unwrap_or_default(),
        })
    })
}

/// The mailboxes of `list` (`field[i]` names a bad one). An oversized list is refused
/// as a whole, unchecked: checking each entry would be work, and an answer,
/// proportional to the abuse.
fn mailboxes(
    field: &str,
    list: &[String],
    (min, max): (usize, usize),
    errors: &mut Vec<FieldError>,
) -> Vec<Mailbox> {
    if list.len() < min || list.len() > max {
        errors.push(FieldError::new(
            field,
            format!("must hold {min} to {max} addresses"),
        ));
        return Vec::new();
    }
    list.iter()
        .enumerate()
        .filter_map(|(i, raw)| match Mailbox::parse(raw) {
            Ok(mailbox) => Some(mailbox),
            Err(message) => {
                errors.push(FieldError::new(format!("{field}[{i}]"), message));
                None
            }
        })
        .collect()
}

/// An email's fields as the client sent them.
#[derive(Debug, Clone, Default)]
pub struct EmailFields {
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub reply_to: Option<String>,
    pub body: BodyFields,
    /// Upload ids, as given.
    pub attachments: Vec<String>,
}

/// One message to its recipients, every field valid.
#[derive(Debug, Clone)]
pub struct Email {
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub bcc: Vec<Mailbox>,
    pub reply_to: Option<Mailbox>,
    pub body: Body,
    /// The sender's uploads to attach (checked by the service: owned, scanned clean or
    /// still being scanned, within the size limit).
    pub attachments: Vec<uuid::Uuid>,
}

impl Email {
    /// The email, or `None` with every problem in `errors` (in field order).
    pub fn parse(fields: EmailFields, errors: &mut Vec<FieldError>) -> Option<Email> {
        let before = errors.len();
        let to = mailboxes("to", &fields.to, (1, MAX_RECIPIENTS), errors);
        let cc = mailboxes("cc", &fields.cc, (0, MAX_RECIPIENTS), errors);
        let bcc = mailboxes("bcc", &fields.bcc, (0, MAX_RECIPIENTS), errors);
        let reply_to = fields
            .reply_to
            .map(|raw| mailboxes("reply_to", &[raw], (1, 1), errors))
            .and_then(|mut list| list.pop());
        let body = body(fields.body, errors);
        let attachments = attachments(fields.attachments, errors);
        match body {
            Some(body) if errors.len() == before => Some(Email {
                to,
                cc,
                bcc,
                reply_to,
                body,
                attachments,
            }),
            _ => None,
        }
    }

    /// Messages charged to the quota: one per recipient.
    pub fn recipients(&self) -> usize {
        self.to.len() + self.cc.len() + self.bcc.len()
    }
}

/// A campaign's fields as the client sent them.
#[derive(Debug, Clone, Default)]
pub struct CampaignFields {
    pub name: String,
    pub body: BodyFields,
    /// Each address, with its own template variables if it has any.
    pub recipients: Vec<(String, Option<serde_json::Value>)>,
    pub send_window: Option<crate::mail::window::SendWindowFields>,
    pub daily_cap: Option<i64>,
    /// Upload ids, as given.
    pub attachments: Vec<String>,
}

/// The largest daily cap of a campaign.
pub const MAX_DAILY_CAP: i64 = 10_000_000;

/// A campaign's recipient: a mailbox and, with a template, its own variables (they
/// win over the campaign's `variables`).
#[derive(Debug, Clone)]
pub struct CampaignRecipient {
    pub mailbox: Mailbox,
    pub variables: Option<Variables>,
}

/// One message per distinct recipient, all with the same content (or the same
/// template, rendered with each recipient's variables).
#[derive(Debug, Clone)]
pub struct Campaign {
    /// Trimmed.
    pub name: String,
    pub body: Body,
    /// Distinct by address, in the order first given (a repeat's variables are
    /// ignored).
    pub recipients: Vec<CampaignRecipient>,
    /// When its messages may go out; `None`: any time.
    pub send_window: Option<crate::mail::window::SendWindow>,
    /// The most messages it sends per day (the window's local day, or UTC's).
    pub daily_cap: Option<u32>,
    /// The same uploads attached to every message.
    pub attachments: Vec<uuid::Uuid>,
}

impl Campaign {
    /// The campaign, or `None` with every problem in `errors` (in field order).
    pub fn parse(fields: CampaignFields, errors: &mut Vec<FieldError>) -> Option<Campaign> {
        let before = errors.len();
        let name = fields.name.trim().to_owned();
        if name.is_empty()
            || name.chars().count() > MAX_NAME_CHARS
            || name.chars().any(char::is_control)
        {
            errors.push(FieldError::new(
                "name",
                format!("must be 1 to {MAX_NAME_CHARS} characters without control characters"),
            ));
        }
        let templated = fields.body.template.is_some();
        let body = body(fields.body, errors);
        let (addresses, personal): (Vec<String>, Vec<Option<serde_json::Value>>) =
            fields.recipients.into_iter().unzip();
        let mailboxes = mailboxes(
            "recipients",
            &addresses,
            (1, MAX_CAMPAIGN_RECIPIENTS),
            errors,
        );
        let mut own = Vec::with_capacity(personal.len());
        for (i, value) in personal.into_iter().enumerate() {
            own.push(match value {
                None => None,
                Some(_) if !templated => {
                    errors.push(FieldError::new(
                        format!("recipients[{i}].variables"),
                        "needs `template`",
                    ));
                    None
                }
                Some(value) => variables(
                    &format!("recipients[{i}].variables"),
                    value,
                    MAX_RECIPIENT_VARIABLES_BYTES,
                    errors,
                ),
            });
        }
        let send_window = fields.send_window.and_then(|raw| {
            crate::mail::window::SendWindow::parse(raw)
                .map_err(|found| errors.extend(found))
                .ok()
        });
        let daily_cap = fields.daily_cap.and_then(|cap| {
            let valid = u32::try_from(cap)
                .ok()
                .filter(|&c| c >= 1 && i64::from(c) <= MAX_DAILY_CAP);
            if valid.is_none() {
                errors.push(FieldError::new(
                    "daily_cap",
                    format!("must be 1 to {MAX_DAILY_CAP}"),
                ));
            }
            valid
        });
        let attachments = attachments(fields.attachments, errors);
        let (Some(body), true) = (body, errors.len() == before) else {
            return None;
        };
        let mut seen = HashSet::with_capacity(mailboxes.len());
        let recipients = mailboxes
            .into_iter()
            .zip(own)
            .filter(|(m, _)| seen.insert(m.address.clone()))
            .map(|(mailbox, variables)| CampaignRecipient { mailbox, variables })
            .collect();
        Some(Campaign {
            name,
            body,
            recipients,
            send_window,
            daily_cap,
            attachments,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailboxes_with_and_without_names() {
        assert_eq!(
            Mailbox::parse("Ada@Example.org").map(|m| m.address),
            Ok("ada@example.org".to_owned())
        );
        assert_eq!(
            Mailbox::parse("Ada Lovelace <ada@example.org>").map(|m| m.text),
            Ok("\"Ada Lovelace\" <ada@example.org>".to_owned())
        );
        for bad in [
            "ada@example.org\r\nBcc: all@example.org",
            "Ada\r\nBcc: x@y.org <ada@example.org>",
            "Ada <ada@example.org\n>",
            "Ev\"il <ada@example.org>",
            "not an address",
        ] {
            assert!(Mailbox::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_email_reports_every_bad_field_and_a_campaign_keeps_distinct_recipients() {
        let mut errors = Vec::new();
        let email = Email::parse(
            EmailFields {
                to: vec!["ada@example.org".into(), "nope".into()],
                cc: vec!["x@example.org".into(); 51],
                body: BodyFields {
                    subject: Some("Hi\r\nBcc: all".into()),
                    text: Some("t".into()),
                    ..BodyFields::default()
                },
                ..EmailFields::default()
            },
            &mut errors,
        );
        assert!(email.is_none());
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["to[1]", "cc", "subject"]);

        let mut errors = Vec::new();
        let campaign = Campaign::parse(
            CampaignFields {
                name: "  Spring  ".into(),
                body: BodyFields {
                    subject: Some("S".into()),
                    text: Some("t".into()),
                    ..BodyFields::default()
                },
                recipients: vec![
                    ("Ada <ada@example.org>".into(), None),
                    ("ADA@example.org".into(), None),
                    ("grace@example.org".into(), None),
                ],
                ..CampaignFields::default()
            },
            &mut errors,
        )
        .expect("valid");
        assert!(errors.is_empty());
        assert_eq!(campaign.name, "Spring");
        let addresses: Vec<&str> = campaign
            .recipients
            .iter()
            .map(|r| r.mailbox.address())
            .collect();
        assert_eq!(addresses, ["ada@example.org", "grace@example.org"]);
    }

    proptest::proptest! {
        /// Whatever the input, a mailbox that passes holds no control character (so no
        /// header can be forged), and its text parses again to the same address.
        #[test]
        fn an_accepted_mailbox_is_safe_and_stable(raw in "\\PC{0,60}|[ -~]{0,60}|.{0,60}") {
            if let Ok(mailbox) = Mailbox::parse(&raw) {
                proptest::prop_assert!(!mailbox.text.chars().any(char::is_control), "{:?}", mailbox.text);
                proptest::prop_assert!(!mailbox.address.chars().any(char::is_control));
                let again = Mailbox::parse(&mailbox.text).map(|m| m.address);
                proptest::prop_assert_eq!(again, Ok(mailbox.address));
            }
        }
    }
}
