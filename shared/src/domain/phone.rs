//! A phone number in E.164 form: `+` then 2 to 15 digits, the first not 0.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct PhoneNumber(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("is not an E.164 phone number (e.g. +14155550123)")]
pub struct PhoneError;

impl PhoneNumber {
    pub fn parse(raw: &str) -> Result<Self, PhoneError> {
        let digits = raw.strip_prefix('+').ok_or(PhoneError)?;
        let valid = (2..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if valid {
            Ok(PhoneNumber(raw.to_owned()))
        } else {
            Err(PhoneError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PhoneNumber(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_only() {
        assert!(PhoneNumber::parse("+14155550123").is_ok());
        assert!(PhoneNumber::parse("+442071838750").is_ok());
        for bad in [
            "14155550123",
            "+0123",
            "+1",
            "+1 415 555",
            "+1234567890123456",
            "+12a4",
            "",
        ] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad}");
        }
    }
}
