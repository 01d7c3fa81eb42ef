//! Cryptography Conveyor relies on: randomness, PII encryption and blind indexes,
//! password hashing, opaque tokens and TOTP.

pub mod password;
pub mod pii;
pub mod token;
pub mod totp;

use sha2::{Digest, Sha256};

/// `N` bytes from the operating system's generator.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if let Err(err) = getrandom::fill(&mut bytes) {
        // No secure randomness means no secure anything; there is nothing to fall back on.
        panic!("the operating system's random generator failed: {err}");
    }
    bytes
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}
