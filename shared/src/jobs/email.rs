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

/// A value sealed like a recipient: base64 of the PII ciphertext of its JSON, bound
/// to a purpose (content cannot be opened as variables, or the other way round).
fn seal_json<T: Serialize>(
    cipher: &PiiCipher,
    purpose: &str,
    value: &T,
) -> Result<String, serde_json::Error> {
    use base64::Engine as _;
    let json = serde_json::to_string(value)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(cipher.encrypt(purpose, &json)))
}

fn open_json<T: serde::de::DeserializeOwned>(
    cipher: &PiiCipher,
    purpose: &str,
    sealed: &str,
) -> Result<T, PiiError> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .map_err(|_| PiiError::Malformed)?;
    let json = cipher.decrypt(purpose, &bytes)?;
    serde_json::from_str(&json).map_err(|_| PiiError::Malformed)
}

/// Content sealed like a recipient: base64 of the PII ciphertext of its JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SealedContent(pub String);

impl SealedContent {
    pub fn seal(cipher: &PiiCipher, content: &EmailContent) -> Result<Self, serde_json::Error> {
        seal_json(cipher, CONTENT_PURPOSE, content).map(SealedContent)
    }

    pub fn open(&self, cipher: &PiiCipher) -> Result<EmailContent, PiiError> {
        open_json(cipher, CONTENT_PURPOSE, &self.0)
    }
}

/// The associated data of a recipient's sealed template variables.
pub const VARIABLES_PURPOSE: &str = "jobs.variables";

/// One recipient's template variables (a JSON object), sealed: they are as personal as
/// the address they go with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SealedVariables(pub String);

impl SealedVariables {
    pub fn seal(
        cipher: &PiiCipher,
        variables: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, serde_json::Error> {
        seal_json(cipher, VARIABLES_PURPOSE, variables).map(SealedVariables)
    }

    pub fn open(
        &self,
        cipher: &PiiCipher,
    ) -> Result<serde_json::Map<String, serde_json::Value>, PiiError> {
        open_json(cipher, VARIABLES_PURPOSE, &self.0)
    }
}

/// The template version a message was rendered from (recorded on its request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TemplateRef {
    pub id: uuid::Uuid,
    pub name: String,
    pub version: i32,
}

/// A campaign rendered from a template: the version's parts, copied when the campaign
/// was accepted (an edit or a deletion of the template later changes nothing queued),
/// and the variables every recipient shares; each recipient's own variables travel
/// sealed in its job and win over these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplatedContent {
    pub template: TemplateRef,
    pub subject: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default)]
    pub inline_css: bool,
    #[serde(default)]
    pub variables: serde_json::Map<String, serde_json::Value>,
}

/// A campaign's shared content, as its request stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CampaignContent {
    /// Listed first: only this shape has `template`.
    Template(TemplatedContent),
    Plain(EmailContent),
}

/// A campaign's request content: its messages' content, and when and how much it may
/// send (a send window, a daily cap counted per local day of the window's zone, or of
/// UTC without a window).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignRecord {
    #[serde(flatten)]
    pub content: CampaignContent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_window: Option<crate::mail::window::SendWindow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_cap: Option<u32>,
    /// Uploads attached to every message, by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<uuid::Uuid>,
}

/// What a one-off email's request stores: the template version it was rendered from
/// (the rendered message itself travels in the job).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailRecord {
    pub template: TemplateRef,
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
    /// A templated campaign's message: this recipient's own variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variables: Option<SealedVariables>,
    /// The sending account, whose own limits (`sending_limits`) apply; `None` for mail
    /// Conveyor sends about the account itself (verification links), never capped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<uuid::Uuid>,
    /// Uploads to attach (the owner's), by id; a campaign's are its request's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<uuid::Uuid>,
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
            variables: None,
            owner: None,
            attachments: Vec::new(),
        };
        let json = serde_json::to_string(&job).expect("serialize");
        assert!(!json.contains("ada@example.org"), "{json}");
        let back: EmailJob = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back.to[0].open(&cipher).as_deref(), Ok("ada@example.org"));
    }

    #[test]
    fn a_campaign_record_reads_both_contents_and_its_limits() {
        let plain = serde_json::json!({"subject": "S", "text": "T"});
        let record: CampaignRecord = serde_json::from_value(plain).expect("an older campaign");
        assert!(matches!(record.content, CampaignContent::Plain(_)));
        assert_eq!((record.send_window, record.daily_cap), (None, None));
        let templated = serde_json::json!({
            "template": {"id": uuid::Uuid::nil(), "name": "t", "version": 2},
            "subject": "S {{ a }}", "text": "T", "variables": {"a": 1},
            "send_window": {"time_zone": "Europe/Berlin", "days": ["mon"], "start": "09:00", "end": "17:00"},
            "daily_cap": 500
        });
        let record: CampaignRecord = serde_json::from_value(templated.clone()).expect("templated");
        assert!(matches!(&record.content, CampaignContent::Template(t) if t.template.version == 2));
        assert!(record.send_window.is_some());
        assert_eq!(record.daily_cap, Some(500));
        let again = serde_json::to_value(&record).expect("json");
        assert_eq!(
            serde_json::from_value::<CampaignRecord>(again).expect("back"),
            record
        );
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
