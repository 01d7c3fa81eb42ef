//! PII at rest: AES-256-GCM with a versioned key ring, and a keyed HMAC blind index
//! for lookups and uniqueness without storing plaintext.
//!
//! Ciphertext layout: `0x01 | len(key_id) | key_id | nonce (12) | ciphertext+tag`.
//! The key id lets keys rotate: new values use the current key, old values still
//! decrypt with the previous keys until re-encrypted. The associated data binds a
//! ciphertext to its purpose (e.g. `users.email`), so one cannot be swapped for another.

use std::collections::HashMap;
use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::random_bytes;

const FORMAT_V1: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PiiError {
    #[error("ciphertext is malformed")]
    Malformed,
    #[error("ciphertext names an unknown key `{0}`")]
    UnknownKey(String),
    #[error("ciphertext does not authenticate")]
    Tampered,
}

/// The key ring: the current key (encrypts) and previous ones (decrypt only).
#[derive(Clone)]
pub struct PiiCipher {
    current_id: String,
    keys: HashMap<String, Aes256Gcm>,
}

impl fmt::Debug for PiiCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PiiCipher")
            .field("current_id", &self.current_id)
            .finish_non_exhaustive()
    }
}

impl PiiCipher {
    /// `current` encrypts; `previous` (id, key) pairs still decrypt.
    pub fn new(current_id: &str, current: &[u8; 32], previous: &[(String, [u8; 32])]) -> Self {
        let mut keys: HashMap<String, Aes256Gcm> = previous
            .iter()
            .map(|(id, key)| (id.clone(), Aes256Gcm::new(key.into())))
            .collect();
        keys.insert(current_id.to_owned(), Aes256Gcm::new(current.into()));
        PiiCipher {
            current_id: current_id.to_owned(),
            keys,
        }
    }

    pub fn encrypt(&self, purpose: &str, plaintext: &str) -> Vec<u8> {
        let nonce_bytes = random_bytes::<12>();
        let cipher = &self.keys[&self.current_id];
        let sealed = cipher
            .encrypt(
                &Nonce::from(nonce_bytes),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: purpose.as_bytes(),
                },
            )
            .unwrap_or_else(|_| {
                unreachable!("AES-GCM encryption of a bounded message cannot fail")
            });
        let id = self.current_id.as_bytes();
        let mut out = Vec::with_capacity(2 + id.len() + 12 + sealed.len());
        out.push(FORMAT_V1);
        out.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(id);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&sealed);
        out
    }

    pub fn decrypt(&self, purpose: &str, data: &[u8]) -> Result<String, PiiError> {
        let (&version, rest) = data.split_first().ok_or(PiiError::Malformed)?;
        if version != FORMAT_V1 {
            return Err(PiiError::Malformed);
        }
        let (&id_len, rest) = rest.split_first().ok_or(PiiError::Malformed)?;
        let id_len = usize::from(id_len);
        if rest.len() < id_len + 12 + 16 {
            return Err(PiiError::Malformed);
        }
        let (id, rest) = rest.split_at(id_len);
        let (nonce, sealed) = rest.split_at(12);
        let id = std::str::from_utf8(id).map_err(|_| PiiError::Malformed)?;
        let cipher = self
            .keys
            .get(id)
            .ok_or_else(|| PiiError::UnknownKey(id.to_owned()))?;
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| PiiError::Malformed)?;
        let plain = cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: purpose.as_bytes(),
                },
            )
            .map_err(|_| PiiError::Tampered)?;
        String::from_utf8(plain).map_err(|_| PiiError::Malformed)
    }

    /// The key id a ciphertext was made with (to find values to re-encrypt).
    pub fn key_id_of(data: &[u8]) -> Option<&str> {
        let id_len = usize::from(*data.get(1)?);
        std::str::from_utf8(data.get(2..2 + id_len)?).ok()
    }
}

/// HMAC-SHA256 of a normalized value under a dedicated key.
#[derive(Clone)]
pub struct BlindIndex {
    key: [u8; 32],
}

impl fmt::Debug for BlindIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlindIndex(<key redacted>)")
    }
}

impl BlindIndex {
    pub fn new(key: &[u8; 32]) -> Self {
        BlindIndex { key: *key }
    }

    /// `purpose` separates indexes of different columns that share the key.
    pub fn index(&self, purpose: &str, normalized: &str) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(normalized.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> PiiCipher {
        PiiCipher::new("k2", &[2; 32], &[("k1".to_owned(), [1; 32])])
    }

    #[test]
    fn round_trips_and_hides_the_plaintext() {
        let c = cipher();
        let sealed = c.encrypt("users.email", "ada@example.org");
        assert!(!sealed.windows(3).any(|w| w == b"ada"));
        assert_eq!(PiiCipher::key_id_of(&sealed), Some("k2"));
        assert_eq!(
            c.decrypt("users.email", &sealed).as_deref(),
            Ok("ada@example.org")
        );
        assert_ne!(
            sealed,
            c.encrypt("users.email", "ada@example.org"),
            "nonces differ"
        );
    }

    #[test]
    fn old_keys_still_decrypt_after_rotation() {
        let old = PiiCipher::new("k1", &[1; 32], &[]);
        let sealed = old.encrypt("users.phone", "+14155550123");
        assert_eq!(
            cipher().decrypt("users.phone", &sealed).as_deref(),
            Ok("+14155550123")
        );
        let unknown = PiiCipher::new("k9", &[9; 32], &[]);
        assert_eq!(
            unknown.decrypt("users.phone", &sealed),
            Err(PiiError::UnknownKey("k1".into()))
        );
    }

    #[test]
    fn tampering_and_purpose_swaps_are_detected() {
        let c = cipher();
        let mut sealed = c.encrypt("users.email", "a@b.co");
        assert_eq!(c.decrypt("users.phone", &sealed), Err(PiiError::Tampered));
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(c.decrypt("users.email", &sealed), Err(PiiError::Tampered));
        assert_eq!(
            c.decrypt("users.email", &[1, 2, 3]),
            Err(PiiError::Malformed)
        );
        assert_eq!(c.decrypt("users.email", &[]), Err(PiiError::Malformed));
    }

    #[test]
    fn blind_index_is_keyed_and_purpose_separated() {
        let a = BlindIndex::new(&[7; 32]);
        let b = BlindIndex::new(&[8; 32]);
        assert_eq!(a.index("email", "x@y.co"), a.index("email", "x@y.co"));
        assert_ne!(a.index("email", "x@y.co"), b.index("email", "x@y.co"));
        assert_ne!(a.index("email", "x@y.co"), a.index("phone", "x@y.co"));
    }
}
