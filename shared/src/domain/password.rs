//! A new password that meets the policy: 12 to 256 characters (never truncated), not
//! the email address, and not weak by zxcvbn's estimate (score 3 or more), which
//! ships its own dictionaries of common passwords, names and words.

use std::fmt;

pub const MIN_CHARS: usize = 12;
pub const MAX_CHARS: usize = 256;

#[derive(Clone)]
pub struct NewPassword(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("must be at least {MIN_CHARS} characters")]
    TooShort,
    #[error("must be at most {MAX_CHARS} characters")]
    TooLong,
    #[error("must not be the email address")]
    SameAsEmail,
    #[error("is too easy to guess{0}")]
    Weak(String),
}

impl NewPassword {
    /// `context` holds words the password must not lean on (email, name).
    pub fn parse(raw: &str, email: &str, context: &[&str]) -> Result<Self, PasswordError> {
        let chars = raw.chars().count();
        if chars < MIN_CHARS {
            return Err(PasswordError::TooShort);
        }
        if chars > MAX_CHARS {
            return Err(PasswordError::TooLong);
        }
        if raw.trim().eq_ignore_ascii_case(email.trim()) {
            return Err(PasswordError::SameAsEmail);
        }
        let mut inputs: Vec<&str> = vec![email];
        if let Some((local, _)) = email.split_once('@') {
            inputs.push(local);
        }
        inputs.extend_from_slice(context);
        inputs.push("conveyor");
        let estimate = zxcvbn::zxcvbn(raw, &inputs);
        if (estimate.score() as u8) < 3 {
            let hint = estimate
                .feedback()
                .and_then(|f| f.warning())
                .map(|w| format!(": {w}"))
                .unwrap_or_default();
            return Err(PasswordError::Weak(hint));
        }
        Ok(NewPassword(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        let email = "ada@example.org";
        assert!(NewPassword::parse("correct horse battery staple", email, &[]).is_ok());
        assert_eq!(
            NewPassword::parse("short", email, &[]).err(),
            Some(PasswordError::TooShort)
        );
        assert_eq!(
            NewPassword::parse(&"x".repeat(257), email, &[]).err(),
            Some(PasswordError::TooLong)
        );
        let long: String = (0u32..256)
            .map(|i| char::from(b'!' + u8::try_from((i * 37 + i / 7) % 90).unwrap_or(0)))
            .collect();
        let kept = NewPassword::parse(&long, email, &[]).expect("a strong 256-character password");
        assert_eq!(kept.expose().chars().count(), 256, "never truncated");
        assert_eq!(
            NewPassword::parse("Ada@Example.org", "ada@example.org", &[]).err(),
            Some(PasswordError::SameAsEmail)
        );
        assert_eq!(
            NewPassword::parse("ada.lovelace@example.org", "ada.lovelace@example.org", &[]).err(),
            Some(PasswordError::SameAsEmail)
        );
        for weak in [
            "password1234",
            "123456789012",
            "qwertyuiopas",
            "aaaaaaaaaaaa",
        ] {
            assert!(
                matches!(
                    NewPassword::parse(weak, email, &[]),
                    Err(PasswordError::Weak(_))
                ),
                "{weak}"
            );
        }
    }
}
