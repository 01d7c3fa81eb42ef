//! The machine-readable half of a report: groups of `Name: value` fields separated by
//! blank lines (RFC 3464 section 2.1, RFC 5965 section 3), and the few value shapes
//! reports use — typed addresses, enhanced status codes, message ids.

use super::untrusted_mail_parser;
use crate::domain::EmailAddress;

/// One group of fields, in order, names as written; values unfolded and trimmed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldGroup(Vec<(String, String)>);

impl FieldGroup {
    /// The first value of the field `name` (names compare case-insensitively).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Every value of the field `name`, in order (a feedback report may repeat
    /// `Original-Rcpt-To`).
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Both groups' fields, `self`'s first.
    pub fn merged(mut self, other: FieldGroup) -> FieldGroup {
        self.0.extend(other.0);
        self
    }
}

/// Splits a report body into its field groups. Line endings may be CRLF or LF; a
/// line holding only whitespace separates groups. Each group's fields are read by
/// mail-parser's header parser, which unfolds continuation lines.
pub fn field_groups(body: &[u8]) -> Vec<FieldGroup> {
    let text = String::from_utf8_lossy(body);
    let mut groups = Vec::new();
    let mut block = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            push_group(&mut groups, &block);
            block.clear();
        } else {
            block.push_str(line.trim_end_matches('\r'));
            block.push('\n');
        }
    }
    push_group(&mut groups, &block);
    groups
}

fn push_group(groups: &mut Vec<FieldGroup>, block: &str) {
    if block.is_empty() {
        return;
    }
    // The blank line tells the header parser where the group ends.
    let block = format!("{block}\n");
    let Some(parsed) = untrusted_mail_parser().parse_headers(block.as_bytes()) else {
        return;
    };
    let fields: Vec<(String, String)> = parsed
        .parts
        .first()
        .map(|part| part.headers.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|header| {
            // The raw value, whatever type the parser gave a registered name.
            let start = usize::try_from(header.offset_start).ok()?;
            let end = usize::try_from(header.offset_end).ok()?;
            let raw = block.get(start..end)?;
            Some((header.name().to_owned(), collapse_whitespace(raw)))
        })
        .collect();
    if !fields.is_empty() {
        groups.push(FieldGroup(fields));
    }
}

/// `value` with runs of whitespace (folds included) turned into single spaces.
pub fn collapse_whitespace(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The text after a `type;` prefix (`rfc822; ada@example.org`, `dns; mx.example.net`,
/// `smtp; 550 5.1.1 …`), or the whole value when there is none.
pub fn strip_type(value: &str) -> &str {
    match value.split_once(';') {
        Some((kind, rest)) if is_type_token(kind.trim()) => rest.trim(),
        _ => value.trim(),
    }
}

fn is_type_token(kind: &str) -> bool {
    !kind.is_empty()
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The address in a DSN recipient field (`rfc822; Ada@Example.org`), normalized.
pub fn typed_address(value: &str) -> Option<String> {
    plain_address(strip_type(value))
}

/// An address as reports write it (`Ada@Example.org`, `<ada@example.org>`),
/// lower-cased; `None` for anything that is not one — including the redacted
/// recipients some feedback loops send (`redacted`, `xxxxx@example.org` passes).
pub fn plain_address(value: &str) -> Option<String> {
    let bare = value.trim().trim_start_matches('<').trim_end_matches('>');
    EmailAddress::parse(bare)
        .ok()
        .map(EmailAddress::into_string)
}

/// An enhanced status code (RFC 3463) at the start of `value`: `5.1.1`, `4.4.7`.
pub fn status_code(value: &str) -> Option<String> {
    let token = value.split_whitespace().next()?;
    let mut parts = token.split('.');
    let class = parts.next()?;
    let subject = parts.next()?;
    let detail = parts.next()?;
    let numeric = |part: &str, max_len: usize| {
        (1..=max_len).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit())
    };
    let valid = matches!(class, "2" | "4" | "5")
        && numeric(subject, 3)
        && numeric(detail, 3)
        && parts.next().is_none();
    valid.then(|| token.to_owned())
}

/// The status a `Diagnostic-Code: smtp; 550 5.1.1 <…>: …` implies when the report
/// gives no usable `Status`: its enhanced code, else the basic reply code's class
/// (`550` is `5.0.0`).
pub fn status_from_diagnostic(diagnostic: &str) -> Option<String> {
    let mut tokens = diagnostic.split_whitespace();
    let reply = tokens.next()?;
    // `550-5.1.1` (a multi-line reply copied verbatim) or `550 5.1.1`.
    let (basic, rest) = match reply.split_once('-') {
        Some((basic, rest)) => (basic, Some(rest)),
        None => (reply, tokens.next()),
    };
    if basic.len() != 3 || !basic.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let class = &basic[..1];
    if let Some(enhanced) = rest.and_then(status_code)
        && enhanced.starts_with(class)
    {
        return Some(enhanced);
    }
    matches!(class, "4" | "5").then(|| format!("{class}.0.0"))
}

/// A message id without its angle brackets or whitespace; `None` if nothing is left.
pub fn bare_message_id(value: &str) -> Option<String> {
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    let bare = compact.trim_start_matches('<').trim_end_matches('>');
    (!bare.is_empty()).then(|| bare.to_owned())
}

/// The ids in a field that may hold several (`References: <a@x> <b@y>`).
pub fn message_ids(value: &str) -> Vec<String> {
    value
        .split(['<', '>', ' ', '\t', ','])
        .filter_map(bare_message_id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_split_on_blank_lines_and_unfold_values() {
        let body = b"Reporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient: rfc822;\r\n  Ada@Example.org\r\nStatus: 5.1.1\r\n \r\n\r\nAction: delayed\n";
        let groups = field_groups(body);
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[0].get("reporting-mta"), Some("dns; mx.example.net"));
        assert_eq!(
            groups[1].get("FINAL-RECIPIENT"),
            Some("rfc822; Ada@Example.org")
        );
        assert_eq!(groups[1].get("Status"), Some("5.1.1"));
        assert_eq!(groups[2].get("Action"), Some("delayed"));
    }

    #[test]
    fn typed_addresses_are_normalized_and_non_addresses_refused() {
        assert_eq!(
            typed_address("rfc822; <Ada@Example.ORG>").as_deref(),
            Some("ada@example.org")
        );
        assert_eq!(
            typed_address("ada@example.org").as_deref(),
            Some("ada@example.org")
        );
        assert_eq!(typed_address("rfc822; redacted"), None);
        assert_eq!(typed_address("x400; c=us;a=;p=x"), None);
    }

    #[test]
    fn status_codes_are_read_from_status_and_diagnostic_fields() {
        assert_eq!(status_code("5.1.1 (bad mailbox)").as_deref(), Some("5.1.1"));
        assert_eq!(status_code("4.4.7").as_deref(), Some("4.4.7"));
        assert_eq!(status_code("3.1.1"), None);
        assert_eq!(status_code("5.1"), None);
        assert_eq!(status_code("5.1.1.1"), None);
        assert_eq!(
            status_from_diagnostic("550 5.1.1 <ada@example.org>: unknown").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(
            status_from_diagnostic("550-5.7.1 blocked").as_deref(),
            Some("5.7.1")
        );
        assert_eq!(
            status_from_diagnostic("554 no such user").as_deref(),
            Some("5.0.0")
        );
        assert_eq!(
            status_from_diagnostic("450 4.2.0 later").as_deref(),
            Some("4.2.0")
        );
        assert_eq!(status_from_diagnostic("mailbox unavailable"), None);
    }

    #[test]
    fn message_ids_lose_brackets_and_whitespace() {
        assert_eq!(bare_message_id(" <a@b> ").as_deref(), Some("a@b"));
        assert_eq!(bare_message_id("<>"), None);
        assert_eq!(message_ids("<a@b>\r\n <c@d>"), vec!["a@b", "c@d"]);
    }
}
