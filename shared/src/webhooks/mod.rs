//! Completion webhooks, the parts api and worker share: which addresses a delivery
//! may reach ([`address`]), what a callback URL must be ([`callback_url`]), and the
//! Standard Webhooks signature ([`sign`]) with its per-user secret.

pub mod address;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::requests::RequestRow;
use crate::domain::{RequestKind, RequestStatus};

pub use address::{Cidr, refusal};

/// The one event type: a request reached its final state.
pub const EVENT_REQUEST_FINISHED: &str = "request.finished";
/// The PII cipher's purpose for a sealed secret.
pub const SECRET_PURPOSE: &str = "webhooks.secret";
/// The prefix of a secret as shown to its owner (as Standard Webhooks spells it).
pub const SECRET_PREFIX: &str = "whsec_";
/// The longest callback URL, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// The body of a `request.finished` delivery, as Standard Webhooks shapes an event:
/// its `type`, when it happened, and the request's final state in `data`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RequestFinishedEvent {
    /// Always `request.finished`.
    #[serde(rename = "type")]
    #[schema(example = "request.finished")]
    pub event_type: String,
    /// When the request finished (RFC 3339).
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub timestamp: Option<OffsetDateTime>,
    pub data: FinishedRequest,
}

/// A finished request, as `GET /api/v1/requests/{id}` (at `location`) shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FinishedRequest {
    pub id: Uuid,
    pub kind: RequestKind,
    pub status: RequestStatus,
    pub name: Option<String>,
    pub total: i32,
    pub succeeded: i32,
    pub failed: i32,
    pub cancelled: i32,
    /// Messages not sent: every recipient was on the sender's suppression list.
    pub suppressed: i32,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<OffsetDateTime>,
    /// The request in the api: `/api/v1/requests/{id}`.
    pub location: String,
}

impl RequestFinishedEvent {
    pub fn new(event: &str, request: &RequestRow) -> Self {
        RequestFinishedEvent {
            event_type: event.to_owned(),
            timestamp: request.finished_at,
            data: FinishedRequest {
                id: request.id,
                kind: request.kind,
                status: request.status,
                name: request.name.clone(),
                total: request.total,
                succeeded: request.succeeded,
                failed: request.failed,
                cancelled: request.cancelled,
                suppressed: request.suppressed,
                created_at: request.created_at,
                finished_at: request.finished_at,
                location: format!("/api/v1/requests/{}", request.id),
            },
        }
    }
}

/// A signing secret: 32 random bytes.
pub fn generate_secret() -> [u8; 32] {
    crate::crypto::random_bytes()
}

/// How a secret is shown (once) and stored sealed: `whsec_` + base64 of its bytes.
pub fn encode_secret(secret: &[u8]) -> String {
    format!("{SECRET_PREFIX}{}", BASE64.encode(secret))
}

/// The bytes of a secret in the form [`encode_secret`] writes.
pub fn decode_secret(text: &str) -> Option<Vec<u8>> {
    BASE64
        .decode(text.strip_prefix(SECRET_PREFIX).unwrap_or(text))
        .ok()
}

/// One Standard Webhooks signature: `v1,` + base64(HMAC-SHA256(secret,
/// "{id}.{timestamp}.{body}")).
pub fn sign(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header: one signature per secret still valid (the
/// current one first, then the one a rotation retired, during its grace period),
/// separated by spaces.
pub fn signature_header(secrets: &[&[u8]], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| sign(secret, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a callback URL is refused, as a field error message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidCallbackUrl(pub String);

/// A callback URL as submitted: an absolute `http`/`https` URL with a host, at most
/// [`MAX_URL_LEN`] bytes, without user info or fragment; a literal IP address must
/// be one deliveries may reach ([`refusal`], `allowed` exempt). A host name is
/// checked when a delivery resolves it (its addresses can change).
pub fn callback_url(raw: &str, allowed: &[Cidr]) -> Result<url::Url, InvalidCallbackUrl> {
    let invalid = |m: &str| InvalidCallbackUrl(m.to_owned());
    if raw.len() > MAX_URL_LEN {
        return Err(InvalidCallbackUrl(format!(
            "must be at most {MAX_URL_LEN} bytes"
        )));
    }
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid("must not contain whitespace or control characters"));
    }
    let url = url::Url::parse(raw).map_err(|_| invalid("must be an absolute http(s) URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("must be an http or https URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not contain user info"));
    }
    if url.fragment().is_some() {
        return Err(invalid("must not contain a fragment"));
    }
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
        Some(url::Host::Domain(d)) if !d.is_empty() => None,
        _ => return Err(invalid("must name a host")),
    };
    if let Some(reason) = ip.and_then(|ip| refusal(ip, allowed)) {
        return Err(InvalidCallbackUrl(format!(
            "must not point at a {reason} address"
        )));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification's reference libraries.
        let secret = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("base64");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_round_trip_and_several_sign_side_by_side() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_ne!(a, b);
        let shown = encode_secret(&a);
        assert!(shown.starts_with("whsec_"));
        assert_eq!(decode_secret(&shown).as_deref(), Some(&a[..]));
        let header = signature_header(&[&a, &b], "id", 1, b"{}");
        assert_eq!(
            header,
            format!("{} {}", sign(&a, "id", 1, b"{}"), sign(&b, "id", 1, b"{}"))
        );
    }

    #[test]
    fn callback_urls() {
        let allowed: Vec<Cidr> = vec!["127.0.0.1/32".parse().expect("cidr")];
        for good in [
            "https://hooks.example.org/conveyor?x=1",
            "http://example.org:8080/",
            "http://127.0.0.1:9000/hook",
            "http://8.8.8.8/",
        ] {
            assert!(callback_url(good, &allowed).is_ok(), "{good}");
        }
        for bad in [
            "ftp://example.org/",
            "/relative",
            "https://user:pw@example.org/",
            "https://example.org/#frag",
            "http://10.0.0.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://[::ffff:10.0.0.1]/",
            "http://127.0.0.2/",
            // WHATWG parsing: 127.0.0.2 in hex/short form.
            "http://0x7f.2/",
            "http://2130706434/",
            "https://example.org/ a",
        ] {
            assert!(callback_url(bad, &allowed).is_err(), "{bad}");
        }
        let long = format!("https://example.org/{}", "a".repeat(MAX_URL_LEN));
        assert!(callback_url(&long, &[]).is_err());
    }
}
