//! An email address that passed validation, in its normalized (lower-case) form.
//! The grammar is deliberately narrower than RFC 5322: plain ASCII `local@domain`,
//! which is what mail systems actually deliver; quoted local parts and address
//! literals are refused, and so is any CR or LF (no header injection).

use std::fmt;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("is empty")]
    Empty,
    #[error("is longer than 254 characters")]
    TooLong,
    #[error("is not an email address")]
    Syntax,
}

const LOCAL_SPECIALS: &[u8] = b"!#$%&'*+-/=?^_`{|}~.";

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        // A control character (CR, LF, tab, NUL…) is refused outright, never trimmed.
        if raw.chars().any(char::is_control) {
            return Err(EmailError::Syntax);
        }
        let trimmed = raw.trim_matches(' ');
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        if trimmed.len() > 254 {
            return Err(EmailError::TooLong);
        }
        let (local, domain) = trimmed.split_once('@').ok_or(EmailError::Syntax)?;
        let local_ok = (1..=64).contains(&local.len())
            && local
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || LOCAL_SPECIALS.contains(&b))
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..");
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = domain.len() <= 253
            && labels.len() >= 2
            && labels.iter().all(|label| {
                (1..=63).contains(&label.len())
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
            && labels
                .last()
                .is_some_and(|tld| tld.len() >= 2 && !tld.bytes().all(|b| b.is_ascii_digit()));
        if local_ok && domain_ok {
            Ok(EmailAddress(trimmed.to_ascii_lowercase()))
        } else {
            Err(EmailError::Syntax)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Addresses are personal data: `Debug` does not print them.
impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EmailAddress(<redacted>)")
    }
}

/// What an address becomes in redacted text.
pub const REDACTED_ADDRESS: &str = "[redacted]";

/// `text` with every email address replaced by `[redacted]`, for error messages that
/// end up in logs and in `jobs.last_error` (an SMTP server may echo a recipient in its
/// reply: `550 5.1.1 <ada@example.org>: Recipient address rejected`).
///
/// Deliberately broader than `EmailAddress::parse`: any run of characters around an
/// `@` that could belong to an address (non-ASCII ones included, for internationalized
/// addresses) is redacted, up to whitespace, brackets, quotes or separators.
pub fn redact_addresses(text: &str) -> String {
    let is_part = |c: char| {
        !c.is_whitespace()
            && !c.is_control()
            && !matches!(
                c,
                '<' | '>' | '(' | ')' | '[' | ']' | '{' | '}' | ',' | ';' | ':' | '"'
            )
    };
    let mut out = String::with_capacity(text.len());
    // Everything before `copied` is in `out` already.
    let mut copied = 0;
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        let at = text.len() - rest.len() + at;
        let start = text[copied..at]
            .char_indices()
            .rev()
            .take_while(|&(_, c)| is_part(c))
            .last()
            .map_or(at, |(i, _)| copied + i);
        // The domain runs on over further `@`s, so `a@b@c` is one redaction; a
        // sentence's full stop after it is kept.
        let after = &text[at + 1..];
        let len = after.find(|c: char| !is_part(c)).unwrap_or(after.len());
        let end = at + 1 + after[..len].trim_end_matches('.').len();
        if start == at && end == at + 1 {
            out.push_str(&text[copied..=at]);
        } else {
            out.push_str(&text[copied..start]);
            out.push_str(REDACTED_ADDRESS);
        }
        copied = end;
        rest = &text[copied..];
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_addresses_in_angle_brackets_and_bare() {
        assert_eq!(
            redact_addresses("550 5.1.1 <ada@example.org>: Recipient address rejected"),
            "550 5.1.1 <[redacted]>: Recipient address rejected"
        );
        assert_eq!(
            redact_addresses("mailbox ada.lovelace+tag@mail.example.co.uk unknown."),
            "mailbox [redacted] unknown."
        );
        assert_eq!(
            redact_addresses("user o'brien@example.org."),
            "user [redacted]."
        );
        assert_eq!(
            redact_addresses("RCPT TO:<Ada@Example.ORG> refused"),
            "RCPT TO:<[redacted]> refused"
        );
        assert_eq!(redact_addresses("to=bob@example.org,"), "[redacted],");
    }

    #[test]
    fn redacts_internationalized_addresses() {
        assert_eq!(
            redact_addresses("550 <josé@bücher.example> rejected"),
            "550 <[redacted]> rejected"
        );
        assert_eq!(
            redact_addresses("unknown user 用户@例子.广告"),
            "unknown user [redacted]"
        );
        assert_eq!(
            redact_addresses("<ada@xn--bcher-kva.example>"),
            "<[redacted]>"
        );
    }

    #[test]
    fn redacts_many_addresses_and_leaves_other_text() {
        let many: Vec<String> = (0..1000).map(|i| format!("<u{i}@example.org>")).collect();
        let redacted = redact_addresses(&many.join(", "));
        assert!(!redacted.contains("example.org"), "{redacted}");
        assert_eq!(redacted.matches(REDACTED_ADDRESS).count(), 1000);
        assert_eq!(
            redact_addresses("a@b.c d@e.f, g@h@i"),
            "[redacted] [redacted], [redacted]"
        );
        for plain in [
            "",
            "SMTP failed: connection refused",
            "a @ b",
            "@",
            "451 4.3.0 @ later",
        ] {
            assert_eq!(redact_addresses(plain), plain);
        }
        assert_eq!(redact_addresses("user@"), "[redacted]");
        assert_eq!(redact_addresses("@example.org"), "[redacted]");
    }

    #[test]
    fn accepts_and_normalizes_ordinary_addresses() {
        let email = EmailAddress::parse("  Ada.Lovelace+tag@Example.ORG ").expect("valid");
        assert_eq!(email.as_str(), "ada.lovelace+tag@example.org");
        assert!(EmailAddress::parse("o'brien@sub.example.co.uk").is_ok());
    }

    #[test]
    fn refuses_malformed_and_injected_addresses() {
        for bad in [
            "",
            "plain",
            "a@b",
            "a@@b.com",
            "a@b@c.com",
            ".a@b.com",
            "a.@b.com",
            "a..b@c.com",
            "a b@c.com",
            "a@-b.com",
            "a@b-.com",
            "a@b.c",
            "a@1.23",
            "victim@example.com\r\nBcc: all@example.com",
            "a@b.com\n",
            "\"quoted\"@example.com",
            "a@[127.0.0.1]",
            "ünï@example.com",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?}");
        }
        assert!(EmailAddress::parse("victim@example.com\r\nBcc: x@y.com").is_err());
        assert_eq!(
            EmailAddress::parse(&format!("{}@example.com", "a".repeat(65))),
            Err(EmailError::Syntax)
        );
        assert_eq!(
            EmailAddress::parse(&format!("a@{}.com", "b".repeat(250))),
            Err(EmailError::TooLong)
        );
    }

    #[test]
    fn debug_does_not_reveal_the_address() {
        let email = EmailAddress::parse("secret@example.com").expect("valid");
        assert!(!format!("{email:?}").contains("secret"));
    }
}
