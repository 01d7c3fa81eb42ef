//! The `emails` queue's payload. Recipient addresses are personal data: they are
//! stored sealed (AES-256-GCM, like other PII) and opened only by the worker that
//! sends the message.

use serde::{Deserialize, Serialize};

use crate::crypto::pii::{PiiCipher, PiiError};

/// The associated data of a sealed recipient.
pub const RECIPIENT_PURPOSE: &str = "jobs.recipient";

/// A sealed address: base64 of the PII ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(pub String);

impl Sealed {
    pub fn seal(cipher: &PiiCipher, address: &str) -> Self {
        use base64::Engine as _;
        Sealed(
            base64::engine::general_purpose::STANDARD
                .encode(cipher.encrypt(RECIPIENT_PURPOSE, address)),
        )
    }

    pub fn open(&self, cipher: &PiiCipher) -> Result<String, PiiError> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.0)
            .map_err(|_| PiiError::Malformed)?;
        cipher.decrypt(RECIPIENT_PURPOSE, &bytes)
    }
}

/// Subject and bodies. Stored in the job for a single email, once on the request
/// for a campaign (every recipient's job reads it from there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailContent {
    pub subject: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailJob {
    pub to: Vec<Sealed>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cc: Vec<Sealed>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bcc: Vec<Sealed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<Sealed>,
    /// `None`: the content is the request's (a campaign).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<EmailContent>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_sealed_in_the_payload() {
        let cipher = PiiCipher::new("k1", &[3; 32], &[]);
        let job = EmailJob {
            to: vec![Sealed::seal(&cipher, "ada@example.org")],
            cc: vec![],
            bcc: vec![],
            reply_to: None,
            content: Some(EmailContent {
                subject: "Hi".into(),
                text: "Hello".into(),
                html: None,
            }),
        };
        let json = serde_json::to_string(&job).expect("serialize");
        assert!(!json.contains("ada@example.org"), "{json}");
        let back: EmailJob = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back.to[0].open(&cipher).as_deref(), Ok("ada@example.org"));
    }
}
