//! Opaque bearer secrets (refresh tokens, MFA tokens, recovery codes): random values
//! handed to the client once and stored only as SHA-256 hashes. Their entropy (≥ 128
//! bits for tokens) makes a fast hash the right choice; a slow hash guards passwords.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{random_bytes, sha256};

/// A new 256-bit token, base64url without padding (43 characters).
pub fn new_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// What is stored for a token.
pub fn hash_token(token: &str) -> Vec<u8> {
    sha256(token.as_bytes()).to_vec()
}

/// A recovery code: 10 characters of Crockford-like base32 (50 bits), shown as
/// `xxxxx-xxxxx`. Stored hashed like a token; compared case-insensitively.
pub fn new_recovery_code() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let bytes = random_bytes::<10>();
    let chars: String = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(b % 32)] as char)
        .collect();
    format!("{}-{}", &chars[..5], &chars[5..])
}

/// The normal form of a recovery code as typed by a person.
pub fn normalize_recovery_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_hashes_stable() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
    }

    #[test]
    fn recovery_codes_normalize() {
        let code = new_recovery_code();
        assert_eq!(code.len(), 11);
        assert_eq!(
            normalize_recovery_code(&code.to_uppercase()),
            code.replace('-', "")
        );
    }
}
