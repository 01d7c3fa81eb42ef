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

#[cfg(test)]
mod tests {
    use super::*;

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
