//! Each sending account's suppression list: addresses it no longer sends to, added
//! by hard bounces, complaints and unsubscribes (or by hand), checked before every
//! send. An address is personal data: stored sealed (AES-256-GCM under the PII key,
//! like `users.email`) and found by its blind index (HMAC-SHA256), never in the clear.
//!
//! Also the one-click unsubscribe token (RFC 8058) of campaign mail: it names the
//! sender, the recipient and the message, sealed with the PII key, so it is both
//! signed (a forged or altered token does not open) and opaque (it reveals neither).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::crypto::pii::{BlindIndex, PiiCipher};
use crate::domain::EmailAddress;

/// The blind index purpose of a suppressed address.
pub const INDEX_PURPOSE: &str = "suppressions.address";
/// The associated data of a sealed suppressed address.
pub const ADDRESS_PURPOSE: &str = "suppressions.address";
/// The associated data of an unsubscribe token.
pub const TOKEN_PURPOSE: &str = "unsubscribe.v1";

crate::domain::status::text_enum!(
    /// Why an address is on a list.
    Reason {
        /// A permanent SMTP refusal (5xx) or a DSN reporting a permanent failure.
        Bounce => "bounce",
        /// The recipient reported the mail as spam (an ARF feedback report).
        Complaint => "complaint",
        /// The recipient used the one-click unsubscribe link.
        Unsubscribe => "unsubscribe",
        /// Added by the account through the API.
        Manual => "manual",
    }
);

/// The address of a mailbox (`Ada <ada@example.org>` or `ada@example.org`),
/// normalized (lowercase): what the list is keyed by.
pub fn address_of(mailbox: &str) -> Option<String> {
    let mailbox = mailbox.trim();
    let address = match mailbox.strip_suffix('>').and_then(|m| m.rsplit_once('<')) {
        Some((_, address)) => address,
        None => mailbox,
    };
    EmailAddress::parse(address)
        .ok()
        .map(EmailAddress::into_string)
}

/// The recipient domain of a normalized address.
pub fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, domain)| domain)
}

/// Index and seal of addresses, with the keys of one process.
#[derive(Clone, Debug)]
pub struct AddressKeys {
    pub index: BlindIndex,
    pub cipher: PiiCipher,
}

impl AddressKeys {
    /// The blind index of a normalized address.
    pub fn index(&self, address: &str) -> Vec<u8> {
        self.index.index(INDEX_PURPOSE, address)
    }

    pub fn seal(&self, address: &str) -> Vec<u8> {
        self.cipher.encrypt(ADDRESS_PURPOSE, address)
    }

    pub fn open(&self, sealed: &[u8]) -> Option<String> {
        self.cipher.decrypt(ADDRESS_PURPOSE, sealed).ok()
    }

    /// The unsubscribe token of one message: `owner` stops sending to `address`.
    pub fn unsubscribe_token(&self, owner: Uuid, job: Uuid, address: &str) -> String {
        let plain = format!("{}{}{address}", owner.simple(), job.simple());
        URL_SAFE_NO_PAD.encode(self.cipher.encrypt(TOKEN_PURPOSE, &plain))
    }

    /// What a token names, if it is one of ours (any current or retired PII key).
    pub fn open_unsubscribe_token(&self, token: &str) -> Option<Unsubscribe> {
        if token.len() > 1024 {
            return None;
        }
        let sealed = URL_SAFE_NO_PAD.decode(token).ok()?;
        let plain = self.cipher.decrypt(TOKEN_PURPOSE, &sealed).ok()?;
        let owner = Uuid::parse_str(plain.get(..32)?).ok()?;
        let job = Uuid::parse_str(plain.get(32..64)?).ok()?;
        let address = address_of(plain.get(64..)?)?;
        Some(Unsubscribe {
            owner,
            job,
            address,
        })
    }
}

/// An opened unsubscribe token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub owner: Uuid,
    pub job: Uuid,
    pub address: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(pii: u8) -> AddressKeys {
        AddressKeys {
            index: BlindIndex::new(&[9; 32]),
            cipher: PiiCipher::new("k1", &[pii; 32], &[]),
        }
    }

    #[test]
    fn addresses_are_normalized_from_mailboxes() {
        assert_eq!(
            address_of("\"Ada L\" <Ada@Example.ORG>").as_deref(),
            Some("ada@example.org")
        );
        assert_eq!(
            address_of(" grace@example.org ").as_deref(),
            Some("grace@example.org")
        );
        assert_eq!(address_of("not an address"), None);
        assert_eq!(domain_of("ada@example.org"), "example.org");
    }

    #[test]
    fn the_index_is_keyed_and_the_same_for_the_same_address() {
        let a = keys(1);
        assert_eq!(a.index("ada@example.org"), a.index("ada@example.org"));
        assert_ne!(a.index("ada@example.org"), a.index("grace@example.org"));
        let sealed = a.seal("ada@example.org");
        assert!(!String::from_utf8_lossy(&sealed).contains("ada"));
        assert_eq!(a.open(&sealed).as_deref(), Some("ada@example.org"));
    }

    #[test]
    fn an_unsubscribe_token_opens_only_unaltered_and_with_its_key() {
        let a = keys(1);
        let (owner, job) = (Uuid::new_v4(), Uuid::new_v4());
        let token = a.unsubscribe_token(owner, job, "ada@example.org");
        assert!(!token.contains("ada"), "{token}");
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(
            a.open_unsubscribe_token(&token),
            Some(Unsubscribe {
                owner,
                job,
                address: "ada@example.org".into()
            })
        );
        assert_eq!(keys(2).open_unsubscribe_token(&token), None);
        let mut altered = token.into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).expect("ascii");
        assert_eq!(a.open_unsubscribe_token(&altered), None);
        assert_eq!(a.open_unsubscribe_token("garbage!"), None);
    }
}
