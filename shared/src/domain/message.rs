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
const MAX_BODY_BYTES: usize = 512 * 1024;

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
/// each); problems join `errors`.
fn content(
    subject: String,
    text: String,
    html: Option<String>,
    errors: &mut Vec<FieldError>,
) -> EmailContent {
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
    if html.as_ref().is_some_and(|h| h.len() > MAX_BODY_BYTES) {
        errors.push(FieldError::new(
            "html",
            format!("must be at most {MAX_BODY_BYTES} bytes"),
        ));
    }
    EmailContent {
        subject,
        text,
        html,
    }
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
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

/// One message to its recipients, every field valid.
#[derive(Debug, Clone)]
pub struct Email {
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub bcc: Vec<Mailbox>,
    pub reply_to: Option<Mailbox>,
    pub content: EmailContent,
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
        let content = content(fields.subject, fields.text, fields.html, errors);
        (errors.len() == before).then_some(Email {
            to,
            cc,
            bcc,
            reply_to,
            content,
        })
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
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    pub recipients: Vec<String>,
}

/// One message per distinct recipient, all with the same content.
#[derive(Debug, Clone)]
pub struct Campaign {
    /// Trimmed.
    pub name: String,
    pub content: EmailContent,
    /// Distinct by address, in the order first given.
    pub recipients: Vec<Mailbox>,
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
        let content = content(fields.subject, fields.text, fields.html, errors);
        let mut seen = HashSet::with_capacity(fields.recipients.len());
        let recipients = mailboxes(
            "recipients",
            &fields.recipients,
            (1, MAX_CAMPAIGN_RECIPIENTS),
            errors,
        )
        .into_iter()
        .filter(|m| seen.insert(m.address.clone()))
        .collect();
        (errors.len() == before).then_some(Campaign {
            name,
            content,
            recipients,
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
                subject: "Hi\r\nBcc: all".into(),
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
                subject: "S".into(),
                recipients: vec![
                    "Ada <ada@example.org>".into(),
                    "ADA@example.org".into(),
                    "grace@example.org".into(),
                ],
                ..CampaignFields::default()
            },
            &mut errors,
        )
        .expect("valid");
        assert!(errors.is_empty());
        assert_eq!(campaign.name, "Spring");
        let addresses: Vec<&str> = campaign.recipients.iter().map(Mailbox::address).collect();
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
