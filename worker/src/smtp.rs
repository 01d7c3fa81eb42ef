//! Conveyor's SMTP client: lettre's protocol code ([`AsyncSmtpConnection`]) on sockets
//! Conveyor connects itself, kept open in a pool between messages.
//!
//! Why not lettre's own transport: it does not set `TCP_NODELAY`, and lettre writes a
//! message's body and its terminating `.` as separate small writes, so Nagle's
//! algorithm holds the second write until the server's delayed ACK of the first —
//! about 40 ms per message on loopback, whatever the server. Here the socket is
//! connected with `TCP_NODELAY` and handed to lettre, for plain SMTP and STARTTLS
//! (the TLS session wraps the same socket). Implicit TLS (`smtps://`) still connects
//! through lettre, which owns the TLS handshake from the first byte.
//!
//! At most `SMTP_POOL_SIZE` connections are open at once; a send waits for one. After
//! a message a connection goes back to the pool; one idle for more than
//! [`CHECK_AFTER`] is checked with `NOOP` before it is used, and one idle for more than
//! [`IDLE_LIMIT`] is closed. A connection that saw any error is closed (lettre aborts
//! it).

use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::Instrument as _;

use lettre::Address;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::extension::{Extension, MailBodyParameter, MailParameter};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// An idle connection older than this is checked with `NOOP` before use.
pub const CHECK_AFTER: Duration = Duration::from_secs(5);
/// An idle connection older than this is closed rather than used.
pub const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// `smtp://`: plain text.
    Plain,
    /// `smtp://…?tls=required` (or `opportunistic`: only if the server offers it).
    StartTls { required: bool },
    /// `smtps://`: TLS from the first byte.
    Implicit,
}

/// Where and how to connect, from `SMTP_URL`.
#[derive(Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    credentials: Option<Credentials>,
    hello: ClientId,
    pub timeout: Duration,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("credentials", &self.credentials.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

impl SmtpSettings {
    /// `smtp://[user:password@]host[:port][/hello-name][?tls=required|opportunistic]`
    /// or `smtps://…`, read as lettre reads it (default ports 25, 587 with STARTTLS,
    /// 465 for `smtps`).
    pub fn from_url(raw: &str, timeout: Duration) -> anyhow::Result<Self> {
        let url = url::Url::parse(raw).map_err(|err| anyhow::anyhow!("not a URL: {err}"))?;
        let host = url
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tls = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let (security, default_port) = match (url.scheme(), tls.as_deref()) {
            ("smtp", None) => (Security::Plain, 25),
            ("smtp", Some("required")) => (Security::StartTls { required: true }, 587),
            ("smtp", Some("opportunistic")) => (Security::StartTls { required: false }, 587),
            ("smtps", None) => (Security::Implicit, 465),
            (scheme, tls) => anyhow::bail!(
                "unknown scheme {scheme:?} or tls={tls:?} (smtp, smtp?tls=required, \
                 smtp?tls=opportunistic or smtps)"
            ),
        };
        let hello = match url.path().trim_matches('/') {
            "" => ClientId::default(),
            name => ClientId::Domain(name.to_owned()),
        };
        let credentials = match url.password() {
            Some(password) => Some(Credentials::new(
                percent_decode(url.username())?,
                percent_decode(password)?,
            )),
            None => None,
        };
        Ok(SmtpSettings {
            port: url.port().unwrap_or(default_port),
            host,
            security,
            credentials,
            hello,
            timeout,
        })
    }
}

/// `%XX` escapes of a URL's user or password.
fn percent_decode(text: &str) -> anyhow::Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| anyhow::anyhow!("a bad %-escape in the URL's credentials"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| anyhow::anyhow!("the URL's credentials are not UTF-8"))
}

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmtpFailure {
    /// Worth retrying: 4xx, a timeout, a connection refused or lost.
    Transient(String),
    /// Will never succeed: 5xx, or a message the server cannot take.
    Permanent(String),
    /// Every recipient was refused for good (5xx to `RCPT TO`); nothing was sent.
    AllRefused(Vec<Refusal>),
    /// The server deferred a recipient (a 4xx reply to its `RCPT TO`: the recipient's
    /// domain is throttling): nothing was sent; retry later, and slow down.
    Deferred(String),
    /// No session could be opened (connection refused or timed out, a 4xx greeting or
    /// `EHLO`): nothing was sent, and no message can be until the server is back.
    Unreachable(String),
}

/// The client span of one SMTP transaction: the relay, the recipients' domains and
/// how many there are — never an address.
fn smtp_span(settings: &SmtpSettings, envelope: &Envelope) -> tracing::Span {
    let mut domains: Vec<&str> = envelope.to().iter().map(|a| a.domain()).collect();
    domains.sort_unstable();
    domains.dedup();
    tracing::info_span!(
        target: "conveyor_trace",
        "smtp",
        otel.name = "smtp send",
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        otel.status_message = tracing::field::Empty,
        network.protocol.name = "smtp",
        server.address = %settings.host,
        server.port = settings.port,
        conveyor.smtp.recipient_domains = %domains.join(","),
        conveyor.smtp.recipients = envelope.to().len(),
        conveyor.smtp.outcome = tracing::field::Empty,
        smtp.reply_code = tracing::field::Empty,
    )
}

/// The first SMTP reply code (2xx–5xx) a failure's text quotes.
fn reply_code(text: &str) -> Option<u16> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|word| word.len() == 3)
        .filter_map(|word| word.parse::<u16>().ok())
        .find(|code| (200..600).contains(code))
}

impl SmtpFailure {
    /// The server's reply or the failure, without the addresses it may quote: what a
    /// trace may record.
    pub fn reply(&self) -> String {
        match self {
            SmtpFailure::AllRefused(refusals) => format!("{} recipients refused", refusals.len()),
            SmtpFailure::Transient(e)
            | SmtpFailure::Permanent(e)
            | SmtpFailure::Deferred(e)
            | SmtpFailure::Unreachable(e) => shared::domain::email::redact_addresses(e),
        }
    }
}

/// A recipient the server refused for good: a 5xx reply to its `RCPT TO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub recipient: Address,
    /// The server's reply (it may quote the address).
    pub reply: String,
}

/// A message the server took, for at least one of its recipients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// The recipients refused for good; the message went to the others.
    pub refused: Vec<Refusal>,
}

impl From<lettre::transport::smtp::Error> for SmtpFailure {
    fn from(err: lettre::transport::smtp::Error) -> Self {
        if err.is_permanent() {
            SmtpFailure::Permanent(format!("SMTP refused: {err}"))
        } else {
            SmtpFailure::Transient(format!("SMTP failed: {err}"))
        }
    }
}

/// One SMTP transaction (`MAIL`, a `RCPT` per recipient, `DATA`) on `conn`. Any
/// error other than a refused recipient aborts the connection.
async fn transaction(
    conn: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    message: &[u8],
) -> Result<Delivered, SmtpFailure> {
    let mut options = Vec::new();
    let non_ascii = |a: &Address| !AsRef::<str>::as_ref(a).is_ascii();
    if envelope.to().iter().any(non_ascii) || envelope.from().is_some_and(non_ascii) {
        if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
            return Err(SmtpFailure::Permanent(
                "a non-ASCII address, and the SMTP server does not support SMTPUTF8".into(),
            ));
        }
        options.push(MailParameter::SmtpUtfEight);
    }
    if !message.is_ascii() {
        if !conn.server_info().supports_feature(Extension::EightBitMime) {
            return Err(SmtpFailure::Permanent(
                "a non-ASCII message, and the SMTP server does not support 8BITMIME".into(),
            ));
        }
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    if let Err(err) = conn
        .command(Mail::new(envelope.from().cloned(), options))
        .await
    {
        conn.abort().await;
        return Err(err.into());
    }
    let mut refused = Vec::new();
    for recipient in envelope.to() {
        match conn.command(Rcpt::new(recipient.clone(), vec![])).await {
            Ok(_) => {}
            Err(err) if err.is_permanent() => refused.push(Refusal {
                recipient: recipient.clone(),
                reply: err.to_string(),
            }),
            Err(err) => {
                // 4xx: nothing is sent now; the whole message is tried again later.
                let deferred = err.is_transient();
                if !deferred || conn.command(Rset).await.is_err() {
                    conn.abort().await;
                }
                return Err(if deferred {
                    SmtpFailure::Deferred(format!("SMTP deferred a recipient: {err}"))
                } else {
                    err.into()
                });
            }
        }
    }
    if refused.len() == envelope.to().len() {
        if conn.command(Rset).await.is_err() {
            conn.abort().await;
        }
        return Err(SmtpFailure::AllRefused(refused));
    }
    let sent = match conn.command(Data).await {
        Ok(_) => conn.message(message).await,
        Err(err) => Err(err),
    };
    match sent {
        Ok(_) => Ok(Delivered { refused }),
        Err(err) => {
            conn.abort().await;
            Err(err.into())
        }
    }
}

/// A pool of SMTP connections to one server.
pub struct SmtpClient {
    settings: SmtpSettings,
    /// One permit per connection in use: at most `max_open` sends at once, and as
    /// a connection is only made when none is idle, at most that many open.
    busy: std::sync::Arc<Semaphore>,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

impl SmtpClient {
    /// A client holding at most `max_open` connections (at least one).
    pub fn new(settings: SmtpSettings, max_open: usize) -> Self {
        SmtpClient {
            settings,
            busy: std::sync::Arc::new(Semaphore::new(max_open.max(1))),
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn settings(&self) -> &SmtpSettings {
        &self.settings
    }

    /// Sends one message, recipient by recipient: a recipient refused for good is
    /// reported (in [`Delivered::refused`]) and the message still goes to the others;
    /// every recipient refused is [`SmtpFailure::AllRefused`]. A 4xx to any recipient
    /// sends nothing (the whole message is retried later). The connection goes back to
    /// the pool unless it broke.
    pub async fn send(
        &self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Delivered, SmtpFailure> {
        let span = smtp_span(&self.settings, envelope);
        let result = self
            .send_in_session(envelope, message)
            .instrument(span.clone())
            .await;
        let outcome = match &result {
            Ok(delivered) if delivered.refused.is_empty() => "delivered",
            Ok(_) => "partly_refused",
            Err(SmtpFailure::Transient(_)) => "transient",
            Err(SmtpFailure::Permanent(_)) => "permanent",
            Err(SmtpFailure::AllRefused(_)) => "all_refused",
            Err(SmtpFailure::Deferred(_)) => "deferred",
            Err(SmtpFailure::Unreachable(_)) => "unreachable",
        };
        span.record("conveyor.smtp.outcome", outcome);
        match &result {
            Ok(_) => {
                span.record("smtp.reply_code", 250);
            }
            Err(failure) => {
                let reply = failure.reply();
                if let Some(code) = reply_code(&reply) {
                    span.record("smtp.reply_code", code);
                }
                span.record("otel.status_code", "ERROR");
                span.record("otel.status_message", reply.as_str());
            }
        }
        result
    }

    async fn send_in_session(
        &self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Delivered, SmtpFailure> {
        let (mut conn, permit) = self.checkout().await?;
        match tokio::time::timeout(
            self.settings.timeout,
            transaction(&mut conn, envelope, message),
        )
        .await
        {
            Ok(result) => {
                // A connection that saw a protocol or I/O error was aborted: not kept.
                self.checkin(conn, permit);
                result
            }
            Err(_) => {
                tokio::spawn(async move { conn.abort().await });
                Err(SmtpFailure::Transient(format!(
                    "SMTP timed out after {:?}",
                    self.settings.timeout
                )))
            }
        }
    }

    /// How many connections are idle in the pool (tests, diagnostics).
    pub fn idle(&self) -> usize {
        self.idle.lock().map_or(0, |idle| idle.len())
    }

    /// A permit to send, and an idle connection that is still good, else a new one.
    async fn checkout(&self) -> Result<(AsyncSmtpConnection, OwnedSemaphorePermit), SmtpFailure> {
        let permit = self
            .busy
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SmtpFailure::Transient("the SMTP client is closed".into()))?;
        loop {
            let taken = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            let Some((mut conn, since)) = taken else {
                break;
            };
            let age = since.elapsed();
            if age > IDLE_LIMIT {
                tokio::spawn(async move { conn.abort().await });
                continue;
            }
            if age <= CHECK_AFTER || conn.test_connected().await {
                return Ok((conn, permit));
            }
        }
        let conn = tokio::time::timeout(self.settings.timeout, self.connect())
            .await
            .map_err(|_| {
                SmtpFailure::Unreachable(format!(
                    "SMTP connect timed out after {:?}",
                    self.settings.timeout
                ))
            })?
            .map_err(|failure| match failure {
                // The session never started: the server, not the message.
                SmtpFailure::Transient(error) => SmtpFailure::Unreachable(error),
                other => other,
            })?;
        Ok((conn, permit))
    }

    /// Whether a session can be opened now (a connection, the greeting, `EHLO`, and
    /// `QUIT`): the probe of an emails queue blocked on the server.
    pub async fn probe(&self) -> bool {
        match tokio::time::timeout(self.settings.timeout, self.connect()).await {
            Ok(Ok(mut conn)) => {
                let _ = conn.quit().await;
                true
            }
            _ => false,
        }
    }

    /// Back to the pool, then the permit goes (whoever waits for it finds it idle).
    fn checkin(&self, conn: AsyncSmtpConnection, permit: OwnedSemaphorePermit) {
        if !conn.has_broken()
            && let Ok(mut idle) = self.idle.lock()
        {
            idle.push((conn, Instant::now()));
        }
        drop(permit);
    }

    /// A new connection: greeted, secured and authenticated as configured.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SmtpFailure> {
        let s = &self.settings;
        let tls = || {
            TlsParameters::new(s.host.clone()).map_err(|err| {
                SmtpFailure::Permanent(format!("TLS for {} is not usable: {err}", s.host))
            })
        };
        let mut conn = match s.security {
            Security::Implicit => AsyncSmtpConnection::connect_tokio1(
                (s.host.as_str(), s.port),
                Some(s.timeout),
                &s.hello,
                Some(tls()?),
                None,
            )
            .await
            .map_err(SmtpFailure::from)?,
            Security::Plain | Security::StartTls { .. } => {
                let stream = TcpStream::connect((s.host.as_str(), s.port))
                    .await
                    .map_err(|err| SmtpFailure::Transient(format!("SMTP connect failed: {err}")))?;
                stream
                    .set_nodelay(true)
                    .map_err(|err| SmtpFailure::Transient(format!("TCP_NODELAY: {err}")))?;
                let mut conn =
                    AsyncSmtpConnection::connect_with_transport(Box::new(stream), &s.hello)
                        .await
                        .map_err(SmtpFailure::from)?;
                if let Security::StartTls { required } = s.security {
                    if conn.can_starttls() {
                        conn.starttls(tls()?, &s.hello)
                            .await
                            .map_err(SmtpFailure::from)?;
                    } else if required {
                        conn.abort().await;
                        return Err(SmtpFailure::Transient(
                            "the SMTP server does not offer STARTTLS, which SMTP_URL requires"
                                .into(),
                        ));
                    }
                }
                conn
            }
        };
        if let Some(credentials) = &s.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(SmtpFailure::from)?;
        }
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_code_is_the_first_smtp_code_a_failure_quotes() {
        assert_eq!(
            reply_code("SMTP failed: transient error (451): 4.3.0 Try again later"),
            Some(451)
        );
        assert_eq!(reply_code("SMTP timed out after 30s"), None);
        assert_eq!(reply_code("port 1025 refused, then 550 5.1.1"), Some(550));
    }

    #[test]
    fn urls_are_read_as_lettre_reads_them() {
        let t = Duration::from_secs(5);
        let plain = SmtpSettings::from_url("smtp://127.0.0.1:1025", t).expect("plain");
        assert_eq!(
            (plain.host.as_str(), plain.port, plain.security),
            ("127.0.0.1", 1025, Security::Plain)
        );
        assert!(plain.credentials.is_none());
        let starttls =
            SmtpSettings::from_url("smtp://us%40er:p%3Ass@mail.example.com?tls=required", t)
                .expect("starttls");
        assert_eq!(starttls.port, 587);
        assert_eq!(starttls.security, Security::StartTls { required: true });
        assert_eq!(
            starttls.credentials,
            Some(Credentials::new("us@er".into(), "p:ss".into()))
        );
        let implicit =
            SmtpSettings::from_url("smtps://mail.example.com/client.example", t).expect("smtps");
        assert_eq!(
            (implicit.port, implicit.security),
            (465, Security::Implicit)
        );
        assert_eq!(implicit.hello, ClientId::Domain("client.example".into()));
        let v6 = SmtpSettings::from_url("smtp://[::1]:2525", t).expect("v6");
        assert_eq!(v6.host, "::1");
        for bad in [
            "http://x",
            "smtp://x?tls=sometimes",
            "smtp://u:%zz@x",
            "not a url",
        ] {
            assert!(SmtpSettings::from_url(bad, t).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_output_hides_the_credentials() {
        let s =
            SmtpSettings::from_url("smtp://user:secret@x", Duration::from_secs(1)).expect("url");
        assert!(!format!("{s:?}").contains("secret"));
    }
}
