//! A client for ClamAV's daemon: `zPING`, `zVERSION` and `zINSTREAM` over TCP or a
//! unix socket, one connection per command. Anything but a clear verdict is
//! [`ScanError::Unavailable`], so a broken or silent engine can never pass a file.

use std::path::PathBuf;
use std::time::Duration;
use tracing::Instrument as _;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::{TcpStream, UnixStream};

use super::ScanError;

/// Bytes per `INSTREAM` chunk.
const CHUNK: usize = 64 * 1024;
/// Longer replies are not clamd's.
const MAX_REPLY: usize = 4096;
/// clamd appends this to the names of signatures that are not ClamAV's own.
const UNOFFICIAL: &str = ".UNOFFICIAL";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Tcp(String),
    Unix(PathBuf),
}

/// The address of one clamd and the deadline of one exchange with it.
#[derive(Debug, Clone)]
pub struct Clamd {
    endpoint: Endpoint,
    timeout: Duration,
}

impl Clamd {
    /// `address` is `host:port` or `unix:/path/to/clamd.ctl`; `timeout` bounds one
    /// whole exchange (connect, send, verdict).
    pub fn new(address: &str, timeout: Duration) -> Clamd {
        let endpoint = match address.strip_prefix("unix:") {
            Some(path) => Endpoint::Unix(PathBuf::from(path)),
            None => Endpoint::Tcp(address.to_owned()),
        };
        Clamd { endpoint, timeout }
    }

    /// Whether clamd answers `PONG`.
    pub async fn ping(&self) -> Result<(), ScanError> {
        let reply = self.exchange(b"zPING\0", None).await?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(unavailable(format!("unexpected reply to PING: {reply:?}")))
        }
    }

    /// clamd's version line, e.g. `ClamAV 1.4.6`.
    pub async fn version(&self) -> Result<String, ScanError> {
        let reply = self.exchange(b"zVERSION\0", None).await?;
        if reply.starts_with("ClamAV ") {
            Ok(reply)
        } else {
            Err(unavailable(format!(
                "unexpected reply to VERSION: {reply:?}"
            )))
        }
    }

    /// Streams `bytes` to clamd; `Some(signature)` when one matched (without the
    /// `.UNOFFICIAL` suffix clamd gives our own rules), `None` when clean.
    pub async fn scan(&self, bytes: &[u8]) -> Result<Option<String>, ScanError> {
        let span = tracing::info_span!(
            target: "conveyor_trace",
            "clamd",
            otel.name = "clamd INSTREAM",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            conveyor.scan.bytes = bytes.len(),
            conveyor.scan.verdict = tracing::field::Empty,
            conveyor.scan.signature = tracing::field::Empty,
        );
        let verdict = async {
            let reply = self.exchange(b"zINSTREAM\0", Some(bytes)).await?;
            parse_verdict(&reply)
        }
        .instrument(span.clone())
        .await;
        match &verdict {
            Ok(None) => span.record("conveyor.scan.verdict", "clean"),
            Ok(Some(signature)) => {
                span.record("conveyor.scan.signature", signature.as_str());
                span.record("conveyor.scan.verdict", "infected")
            }
            Err(_) => span.record("otel.status_code", "ERROR"),
        };
        verdict
    }

    async fn exchange(&self, command: &[u8], body: Option<&[u8]>) -> Result<String, ScanError> {
        let exchange = async {
            match &self.endpoint {
                Endpoint::Tcp(address) => {
                    let stream = TcpStream::connect(address.as_str()).await?;
                    // Chunk headers are tiny writes: without this, Nagle and delayed
                    // ACKs stall every chunk.
                    stream.set_nodelay(true)?;
                    converse(stream, command, body).await
                }
                Endpoint::Unix(path) => {
                    converse(UnixStream::connect(path).await?, command, body).await
                }
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(err)) => Err(unavailable(format!("{}: {err}", self.describe()))),
            Err(_) => Err(unavailable(format!(
                "{}: no verdict within {:?}",
                self.describe(),
                self.timeout
            ))),
        }
    }

    fn describe(&self) -> String {
        match &self.endpoint {
            Endpoint::Tcp(address) => format!("clamd at {address}"),
            Endpoint::Unix(path) => format!("clamd at unix:{}", path.display()),
        }
    }
}

fn unavailable(message: String) -> ScanError {
    ScanError::Unavailable(message)
}

/// Sends one command (and its stream), then reads the NUL-terminated reply.
async fn converse<S>(mut stream: S, command: &[u8], body: Option<&[u8]>) -> std::io::Result<String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let sent = send(&mut stream, command, body).await;
    // clamd answers early and hangs up when it refuses a stream (size limit): its
    // reply says why better than the broken pipe does, but is never a verdict.
    let reply = read_reply(&mut stream).await;
    match (sent, reply) {
        (Ok(()), reply) => reply,
        (Err(err), Ok(reply)) if !reply.is_empty() => {
            Err(std::io::Error::other(format!("{reply} ({err})")))
        }
        (Err(err), _) => Err(err),
    }
}

async fn send<S>(stream: &mut S, command: &[u8], body: Option<&[u8]>) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let mut writer = BufWriter::with_capacity(CHUNK + 4, stream);
    writer.write_all(command).await?;
    if let Some(body) = body {
        for chunk in body.chunks(CHUNK) {
            let length = u32::try_from(chunk.len()).expect("a chunk fits in u32");
            writer.write_all(&length.to_be_bytes()).await?;
            writer.write_all(chunk).await?;
        }
        writer.write_all(&0u32.to_be_bytes()).await?;
    }
    writer.flush().await
}

async fn read_reply<S>(stream: &mut S) -> std::io::Result<String>
where
    S: AsyncRead + Unpin,
{
    let mut reply = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        if let Some(end) = reply.iter().position(|&b| b == 0) {
            reply.truncate(end);
            break;
        }
        if reply.len() > MAX_REPLY {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "reply too long",
            ));
        }
    }
    Ok(String::from_utf8_lossy(&reply).trim().to_owned())
}

/// `stream: OK`, `stream: <signature> FOUND`; anything else is an error.
fn parse_verdict(reply: &str) -> Result<Option<String>, ScanError> {
    if reply.ends_with("ERROR") {
        return Err(unavailable(format!("clamd: {reply}")));
    }
    let found = reply
        .strip_prefix("stream: ")
        .and_then(|rest| rest.strip_suffix(" FOUND"))
        .map(signature_name);
    match (reply, found) {
        ("stream: OK", _) => Ok(None),
        (_, Some(signature)) if !signature.is_empty() => Ok(Some(signature.to_owned())),
        _ => Err(unavailable(format!("unparseable clamd reply: {reply:?}"))),
    }
}

/// The bare name: without the `(hash:size)` that `ExtendedDetectionInfo` appends, nor
/// the `.UNOFFICIAL` suffix.
fn signature_name(found: &str) -> &str {
    let found = found.trim();
    let found = match found.rsplit_once('(') {
        Some((name, detail)) if detail.ends_with(')') => name,
        _ => found,
    };
    found.strip_suffix(UNOFFICIAL).unwrap_or(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_is_clean() {
        assert_eq!(parse_verdict("stream: OK").expect("verdict"), None);
    }

    #[test]
    fn found_names_the_signature_without_the_unofficial_suffix() {
        assert_eq!(
            parse_verdict("stream: Conveyor.Test.EICAR.UNOFFICIAL FOUND").expect("verdict"),
            Some("Conveyor.Test.EICAR".to_owned())
        );
        assert_eq!(
            parse_verdict("stream: Heuristics.Zip.OverlappingFiles FOUND").expect("verdict"),
            Some("Heuristics.Zip.OverlappingFiles".to_owned())
        );
        assert_eq!(
            parse_verdict(
                "stream: Conveyor.Test.EICAR.UNOFFICIAL(44d88612fea8a8f36de82e1278abb02f:68) FOUND"
            )
            .expect("verdict"),
            Some("Conveyor.Test.EICAR".to_owned())
        );
    }

    #[test]
    fn errors_and_unknown_replies_are_never_clean() {
        for reply in [
            "INSTREAM size limit exceeded. ERROR",
            "stream: Can't allocate memory ERROR",
            "stream: FOUND",
            "stream:  FOUND",
            "stream: (x:1) FOUND",
            "stream: ",
            "",
            "PONG",
            "UNKNOWN COMMAND",
        ] {
            assert!(
                matches!(parse_verdict(reply), Err(ScanError::Unavailable(_))),
                "{reply:?}"
            );
        }
    }

    #[test]
    fn addresses_are_tcp_or_unix() {
        let tcp = Clamd::new("127.0.0.1:3310", Duration::from_secs(1));
        assert_eq!(tcp.endpoint, Endpoint::Tcp("127.0.0.1:3310".to_owned()));
        let unix = Clamd::new("unix:/run/clamav/clamd.ctl", Duration::from_secs(1));
        assert_eq!(
            unix.endpoint,
            Endpoint::Unix(PathBuf::from("/run/clamav/clamd.ctl"))
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_unavailable() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port()
        };
        let clamd = Clamd::new(&format!("127.0.0.1:{port}"), Duration::from_secs(2));
        assert!(matches!(clamd.ping().await, Err(ScanError::Unavailable(_))));
        assert!(matches!(
            clamd.scan(b"hello").await,
            Err(ScanError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn a_silent_server_is_unavailable_after_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        let accepting = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.expect("accept");
            std::future::pending::<()>().await;
            drop(socket);
        });
        let clamd = Clamd::new(&address, Duration::from_millis(200));
        let error = clamd.scan(b"hello").await.expect_err("no verdict");
        assert!(error.to_string().contains("no verdict within"), "{error}");
        accepting.abort();
    }
}
