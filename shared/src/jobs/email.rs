//! The `emails` queue's payload. Recipient addresses are personal data: they are
//! stored sealed (AES-256-GCM, like other PII) and opened only by the worker that
//! sends the message.

use serde::{Deserialize, Serialize};

use crate::crypto::pii::{PiiCipher, PiiError};

/// The associated data of a sealed recipient.
pub const RECIPIENT_PURPOSE: &str = "jobs.recipient";
/// The associated data of sealed content (account emails carry a credential: a
/// verification link must not sit readable in the jobs table).
pub const CONTENT_PURPOSE: &str = "jobs.content";

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

/// Content sealed like a recipient: base64 of the PII ciphertext of its JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SealedContent(pub String);

impl SealedContent {
    pub fn seal(cipher: &PiiCipher, content: &EmailContent) -> Result<Self, serde_json::Error> {
        use base64::Engine as _;
        let json = serde_json::to_string(content)?;
        Ok(SealedContent(
            base64::engine::general_purpose::STANDARD
                .encode(cipher.encrypt(CONTENT_PURPOSE, &json)),
        ))
    }

    pub fn open(&self, cipher: &PiiCipher) -> Result<EmailContent, PiiError> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.0)
            .map_err(|_| PiiError::Malformed)?;
        let json = cipher.decrypt(CONTENT_PURPOSE, &bytes)?;
        serde_json::from_str(&json).map_err(|_| PiiError::Malformed)
    }
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
    /// `None`: the content is sealed (below) or the request's (a campaign).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<EmailContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_content: Option<SealedContent>,
}

impl super::Job for EmailJob {
    const QUEUE: crate::queue::QueueName = crate::queue::QueueName::Emails;
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
            sealed_content: None,
        };
        let json = serde_json::to_string(&job).expect("serialize");
        assert!(!json.contains("ada@example.org"), "{json}");
        let back: EmailJob = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back.to[0].open(&cipher).as_deref(), Ok("ada@example.org"));
    }

    #[test]
    fn sealed_content_hides_the_body_and_opens_only_with_its_key() {
        let cipher = PiiCipher::new("k1", &[3; 32], &[]);
        let content = EmailContent {
            subject: "Confirm".into(),
            text: "https://example.org/verify?token=s3cret".into(),
            html: None,
        };
        let sealed = SealedContent::seal(&cipher, &content).expect("seal");
        assert!(!sealed.0.contains("s3cret"));
        assert_eq!(sealed.open(&cipher), Ok(content));
        let other = PiiCipher::new("k2", &[4; 32], &[]);
        assert!(sealed.open(&other).is_err());
    }
}
