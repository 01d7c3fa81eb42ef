//! TOTP (RFC 6238): HMAC-SHA1, 6 digits, 30-second steps, one step of clock skew
//! either way. [`Totp::verify`] returns the matched step so callers can refuse a
//! code already used (replay).

use data_encoding::BASE32_NOPAD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::random_bytes;

pub const STEP_SECS: u64 = 30;
pub const DIGITS: u32 = 6;
/// Steps accepted on either side of now.
pub const SKEW_STEPS: u64 = 1;

/// A TOTP secret (160 bits, as RFC 4226 recommends).
#[derive(Clone)]
pub struct Totp {
    secret: Vec<u8>,
}

impl std::fmt::Debug for Totp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Totp(<secret redacted>)")
    }
}

impl Totp {
    pub fn generate() -> Self {
        Totp {
            secret: random_bytes::<20>().to_vec(),
        }
    }

    pub fn from_bytes(secret: Vec<u8>) -> Self {
        Totp { secret }
    }

    pub fn from_base32(encoded: &str) -> Option<Self> {
        BASE32_NOPAD
            .decode(encoded.trim_end_matches('=').as_bytes())
            .ok()
            .map(Totp::from_bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.secret
    }

    /// The secret as authenticator apps take it (RFC 4648 base32, no padding).
    pub fn base32(&self) -> String {
        BASE32_NOPAD.encode(&self.secret)
    }

    /// `otpauth://totp/…` for QR codes.
    pub fn otpauth_url(&self, issuer: &str, account: &str) -> String {
        let label = format!("{}:{}", encode(issuer), encode(account));
        format!(
            "otpauth://totp/{label}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
            self.base32(),
            encode(issuer)
        )
    }

    /// The code for time step `step` with `digits` digits (RFC 4226 truncation).
    pub fn code_at_step(&self, step: u64, digits: u32) -> u32 {
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(&step.to_be_bytes());
        let digest = mac.finalize().into_bytes();
        let offset = usize::from(digest[19] & 0x0f);
        let binary = (u32::from(digest[offset]) & 0x7f) << 24
            | u32::from(digest[offset + 1]) << 16
            | u32::from(digest[offset + 2]) << 8
            | u32::from(digest[offset + 3]);
        binary % 10u32.pow(digits)
    }

    pub fn code_at(&self, unix_secs: u64) -> String {
        format!(
            "{:0width$}",
            self.code_at_step(unix_secs / STEP_SECS, DIGITS),
            width = DIGITS as usize
        )
    }

    /// The step `code` matches at `unix_secs` (± skew), if any.
    pub fn verify(&self, code: &str, unix_secs: u64) -> Option<u64> {
        let code = code.trim();
        if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let now = unix_secs / STEP_SECS;
        let mut matched = None;
        // Check every candidate so timing does not depend on which one matched.
        for step in now.saturating_sub(SKEW_STEPS)..=now + SKEW_STEPS {
            let candidate = format!(
                "{:0width$}",
                self.code_at_step(step, DIGITS),
                width = DIGITS as usize
            );
            if subtle::ConstantTimeEq::ct_eq(candidate.as_bytes(), code.as_bytes()).into() {
                matched = Some(step);
            }
        }
        matched
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 rows (8 digits, secret "12345678901234567890").
    #[test]
    fn rfc6238_appendix_b_vectors() {
        let totp = Totp::from_bytes(b"12345678901234567890".to_vec());
        for (time, expected) in [
            (59u64, 94_287_082u32),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
            (20_000_000_000, 65_353_130),
        ] {
            assert_eq!(
                totp.code_at_step(time / STEP_SECS, 8),
                expected,
                "T = {time}"
            );
        }
        // The 6-digit form used by authenticator apps is the last six digits.
        assert_eq!(totp.code_at(59), "287082");
    }

    #[test]
    fn verify_accepts_one_step_of_skew_and_returns_the_step() {
        let totp = Totp::generate();
        let now = 1_700_000_000;
        let code = totp.code_at(now - STEP_SECS);
        assert_eq!(totp.verify(&code, now), Some(now / STEP_SECS - 1));
        assert_eq!(totp.verify(&totp.code_at(now - 3 * STEP_SECS), now), None);
        assert_eq!(totp.verify("12345", now), None);
        assert_eq!(totp.verify("abcdef", now), None);
    }

    #[test]
    fn base32_round_trips_and_url_is_well_formed() {
        let totp = Totp::generate();
        let again = Totp::from_base32(&totp.base32()).expect("decodes");
        assert_eq!(again.as_bytes(), totp.as_bytes());
        let url = totp.otpauth_url("Conveyor", "ada@example.org");
        assert!(
            url.starts_with("otpauth://totp/Conveyor:ada%40example.org?secret="),
            "{url}"
        );
        assert!(url.contains("digits=6&period=30"));
    }
}
