//! DKIM signatures of outgoing mail (RFC 6376): relaxed/relaxed canonicalization,
//! `rsa-sha256` or `ed25519-sha256` (RFC 8463) depending on the configured key.
//!
//! The signature is computed over the exact bytes that are sent: the message lettre
//! formats, with line endings made CRLF. (lettre's own DKIM signer reads the headers
//! of its `Message` structure, where the `Content-Type` of a multipart message is not
//! kept, so it would leave that header out of a signature that claims it.)
//!
//! Every header in [`SIGNED_HEADERS`] is signed once per occurrence, plus once more
//! as absent ("oversigned", RFC 6376 section 8.15): adding any of them after signing,
//! say a second `From` or a `List-Unsubscribe` the message did not have, breaks the
//! signature.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::Signer as _;
use rsa::pkcs8::EncodePublicKey as _;
use sha2::{Digest as _, Sha256};
use shared::config::{DkimConfig, DkimKey};

/// The headers the signature covers, when present (and, when absent, their absence).
pub const SIGNED_HEADERS: [&str; 12] = [
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// Signs messages with the configured domain, selector and key.
pub struct DkimSigner {
    domain: String,
    selector: String,
    key: DkimKey,
    /// The `p=` value of the DNS record.
    public_key: String,
}

impl std::fmt::Debug for DkimSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimSigner")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("key", &self.key)
            .finish()
    }
}

impl DkimSigner {
    /// Checks the key by signing and verifying a probe, so a broken key stops the
    /// worker at startup rather than leaving mail unsigned.
    pub fn new(config: &DkimConfig) -> anyhow::Result<Self> {
        let public_key = match config.key() {
            DkimKey::Rsa(key) => BASE64.encode(
                key.to_public_key()
                    .to_public_key_der()
                    .context("cannot encode the DKIM public key")?
                    .as_bytes(),
            ),
            DkimKey::Ed25519(key) => BASE64.encode(key.verifying_key().to_bytes()),
        };
        let signer = DkimSigner {
            domain: config.domain.clone(),
            selector: config.selector.clone(),
            key: config.key().clone(),
            public_key,
        };
        let probe: [u8; 32] = Sha256::digest(b"conveyor dkim probe").into();
        let signature = signer
            .sign_digest(&probe)
            .map_err(|err| anyhow::anyhow!("the DKIM key cannot sign: {err}"))?;
        let verified = match &signer.key {
            DkimKey::Rsa(key) => key
                .to_public_key()
                .verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &probe, &signature)
                .is_ok(),
            DkimKey::Ed25519(key) => ed25519_dalek::Signature::from_slice(&signature)
                .is_ok_and(|sig| key.verifying_key().verify_strict(&probe, &sig).is_ok()),
        };
        anyhow::ensure!(verified, "the DKIM key's signatures do not verify");
        Ok(signer)
    }

    /// The message as it is to be sent, CRLF line endings, with a `DKIM-Signature`
    /// header first. Should signing ever fail (it cannot for a key [`Self::new`]
    /// accepted), the error is logged and the message goes unsigned.
    pub fn signed(&self, message: &lettre::Message) -> Vec<u8> {
        self.sign_formatted(&message.formatted())
    }

    /// [`Self::signed`] for a message already formatted (headers, blank line, body).
    pub fn sign_formatted(&self, message: &[u8]) -> Vec<u8> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let message = crlf(message);
        match self.signature_header(&message, timestamp) {
            Ok(header) => {
                let mut out = Vec::with_capacity(header.len() + message.len());
                out.extend_from_slice(header.as_bytes());
                out.extend_from_slice(&message);
                out
            }
            Err(err) => {
                tracing::error!(error = %err, "DKIM signing failed; the message goes unsigned");
                message
            }
        }
    }

    /// The TXT record to publish: its name (`selector._domainkey.domain`) and value
    /// (`v=DKIM1; k=rsa|ed25519; p=...`).
    pub fn dns_record(&self) -> (String, String) {
        (
            format!("{}._domainkey.{}", self.selector, self.domain),
            format!(
                "v=DKIM1; k={}; p={}",
                self.key.algorithm().key_type(),
                self.public_key
            ),
        )
    }

    /// The complete `DKIM-Signature` header (folded, ending in CRLF) for a message
    /// with CRLF line endings.
    fn signature_header(&self, message: &[u8], timestamp: u64) -> Result<String, String> {
        let (head, body) = split_message(message);
        let fields = header_fields(head);
        let body_hash = BASE64.encode(Sha256::digest(relaxed_body(body)));

        let mut names = Vec::new();
        let mut hasher = Sha256::new();
        for name in SIGNED_HEADERS {
            // Bottom-up, the order in which a verifier pairs h= names with fields.
            for field in fields
                .iter()
                .rev()
                .filter(|f| f.name.eq_ignore_ascii_case(name))
            {
                hasher.update(relaxed_header(field.raw));
                names.push(name.to_ascii_lowercase());
            }
            names.push(name.to_ascii_lowercase());
        }

        let mut header = Folded::new("DKIM-Signature:");
        header.push(" v=1;");
        header.push(&format!(" a={};", self.key.algorithm().signature_tag()));
        header.push(" c=relaxed/relaxed;");
        header.push(&format!(" d={};", self.domain));
        header.push(&format!(" s={};", self.selector));
        header.push(&format!(" t={timestamp};"));
        let last = names.len() - 1;
        for (n, name) in names.iter().enumerate() {
            let prefix = if n == 0 { " h=" } else { "" };
            let suffix = if n == last { ";" } else { ":" };
            header.push(&format!("{prefix}{name}{suffix}"));
        }
        header.push(&format!(" bh={body_hash};"));
        header.push(" b=");
        // The signed form of the header: b= empty, no trailing CRLF.
        let unsigned = relaxed_header(header.text.as_bytes());
        hasher.update(unsigned.strip_suffix(b"\r\n").unwrap_or(&unsigned));
        let digest: [u8; 32] = hasher.finalize().into();
        let signature = BASE64.encode(self.sign_digest(&digest)?);
        for chunk in signature.as_bytes().chunks(64) {
            header.push(&String::from_utf8_lossy(chunk));
        }
        header.text.push_str("\r\n");
        Ok(header.text)
    }

    /// RSA: PKCS#1 v1.5 over SHA-256, with blinding. Ed25519: the 32-byte hash signed
    /// as the message (RFC 8463).
    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, String> {
        match &self.key {
            DkimKey::Rsa(key) => key
                .sign_with_rng(
                    &mut rsa::rand_core::OsRng,
                    rsa::Pkcs1v15Sign::new::<Sha256>(),
                    digest,
                )
                .map_err(|err| err.to_string()),
            DkimKey::Ed25519(key) => Ok(key.sign(digest).to_bytes().to_vec()),
        }
    }
}

/// A header being written, folded before a piece that would pass 78 columns.
struct Folded {
    text: String,
    line: usize,
}

impl Folded {
    fn new(start: &str) -> Self {
        Folded {
            text: start.to_owned(),
            line: start.len(),
        }
    }

    fn push(&mut self, piece: &str) {
        if self.line + piece.len() > 78 && self.line > 1 {
            let piece = piece.trim_start();
            self.text.push_str("\r\n\t");
            self.text.push_str(piece);
            self.line = 1 + piece.len();
        } else {
            self.text.push_str(piece);
            self.line += piece.len();
        }
    }
}

/// The message with every line ending CRLF (a lone LF or CR becomes CRLF).
fn crlf(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64);
    let mut bytes = message.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        match b {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if bytes.peek() == Some(&b'\n') {
                    bytes.next();
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            _ => out.push(b),
        }
    }
    out
}

/// The header block (each field ending in CRLF) and the body after the blank line.
fn split_message(message: &[u8]) -> (&[u8], &[u8]) {
    if message.starts_with(b"\r\n") {
        return (&[], &message[2..]);
    }
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(at) => (&message[..at + 2], &message[at + 4..]),
        None => (message, &[]),
    }
}

struct Field<'a> {
    name: &'a str,
    /// The whole field, continuation lines included, with its final CRLF.
    raw: &'a [u8],
}

fn header_fields(head: &[u8]) -> Vec<Field<'_>> {
    let mut fields: Vec<Field<'_>> = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    while pos < head.len() {
        let end = head[pos..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(head.len(), |at| pos + at + 2);
        let continues = matches!(head.get(end), Some(b' ' | b'\t'));
        if !continues {
            let raw = &head[start..end];
            let name = raw
                .iter()
                .position(|&b| b == b':')
                .and_then(|colon| std::str::from_utf8(&raw[..colon]).ok())
                .map_or("", |name| name.trim_end_matches([' ', '\t']));
            fields.push(Field { name, raw });
            start = end;
        }
        pos = end;
    }
    fields
}

/// RFC 6376 3.4.2: the name lowercased, the value unfolded, runs of whitespace one
/// space, none around the colon or at the end; then CRLF.
fn relaxed_header(raw: &[u8]) -> Vec<u8> {
    let colon = raw.iter().position(|&b| b == b':').unwrap_or(raw.len());
    let (name, value) = raw.split_at(colon);
    let mut out = Vec::with_capacity(raw.len());
    out.extend(
        name.iter()
            .filter(|b| !matches!(b, b' ' | b'\t'))
            .map(u8::to_ascii_lowercase),
    );
    out.push(b':');
    let value = value.get(1..).unwrap_or_default();
    let (mut space, mut started) = (false, false);
    for &b in value {
        match b {
            b'\r' | b'\n' => {}
            b' ' | b'\t' => space = true,
            _ => {
                if space && started {
                    out.push(b' ');
                }
                (space, started) = (false, true);
                out.push(b);
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// RFC 6376 3.4.4: in each line runs of whitespace become one space and trailing
/// whitespace goes; empty lines at the end go; a non-empty body ends in CRLF.
fn relaxed_body(body: &[u8]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = body
        .split(|&b| b == b'\n')
        .map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let mut out = Vec::with_capacity(line.len());
            let mut space = false;
            for &b in line {
                if matches!(b, b' ' | b'\t') {
                    space = true;
                } else {
                    if space {
                        out.push(b' ');
                    }
                    space = false;
                    out.push(b);
                }
            }
            out
        })
        .collect();
    while lines.last().is_some_and(Vec::is_empty) {
        lines.pop();
    }
    let mut out = Vec::with_capacity(body.len());
    for line in lines {
        out.extend_from_slice(&line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relaxed_header_canonicalization() {
        assert_eq!(
            relaxed_header(b"Subject :  Re: Hello \t  world \r\n  again\t\r\n"),
            b"subject:Re: Hello world again\r\n"
        );
        assert_eq!(relaxed_header(b"X-Empty:\r\n"), b"x-empty:\r\n");
    }

    #[test]
    fn relaxed_body_canonicalization() {
        // RFC 6376 3.4.6, example 2 (relaxed body).
        assert_eq!(relaxed_body(b" C \r\nD \t E\r\n\r\n\r\n"), b" C\r\nD E\r\n");
        assert_eq!(relaxed_body(b"no newline"), b"no newline\r\n");
        assert_eq!(relaxed_body(b"\r\n\r\n"), b"");
        assert_eq!(relaxed_body(b""), b"");
    }

    #[test]
    fn fields_keep_their_continuation_lines() {
        let head = b"From: a@example.org\r\nSubject: one\r\n two\r\nTo: b@example.org\r\n";
        let fields = header_fields(head);
        let names: Vec<&str> = fields.iter().map(|f| f.name).collect();
        assert_eq!(names, ["From", "Subject", "To"]);
        assert_eq!(fields[1].raw, b"Subject: one\r\n two\r\n");
        let (head, body) = split_message(b"A: 1\r\n\r\nbody\r\n");
        assert_eq!((head, body), (&b"A: 1\r\n"[..], &b"body\r\n"[..]));
        assert_eq!(crlf(b"a\nb\r\nc\rd"), b"a\r\nb\r\nc\r\nd");
    }
}
