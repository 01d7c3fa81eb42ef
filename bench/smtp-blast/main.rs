//! The baseline of the campaign delivery in `scripts/bench` (built as the `smtp_blast`
//! example of the api crate): a bare SMTP client that pushes `--messages` campaign-
//! shaped messages into the SMTP sink (`bench/smtp-sink`) over `--connections`
//! connections, each pipelining its transactions (RFC 2920), and prints what it took.
//! No database, queue, suppression check, encryption or rendering: what is left is the
//! floor any sender on this machine pays to hand the same messages to the same sink.
//!
//! ```text
//! usage: smtp_blast --messages N --connections C [--window W] [--addr HOST:PORT]
//!        (or BLAST_MESSAGES, BLAST_CONNECTIONS, BLAST_WINDOW, SINK_ADDR in the environment)
//!
//!   --addr         the SMTP server (default 127.0.0.1:2525)
//!   --messages     messages in all, split across the connections as evenly as possible
//!   --connections  connections, each opened and greeted (EHLO) once
//!   --window       1 (default): RFC 2920 pipelining as any server allows it — MAIL FROM,
//!                  RCPT TO and DATA go in one write, together with the previous message's
//!                  body and "." when there is one; a body waits for its DATA's 354, so one
//!                  round trip per message.
//!                  W > 1: up to W whole transactions (envelope, DATA, body, ".") written
//!                  before their replies are read: the body goes before its 354, which only
//!                  a server that never refuses DATA (like the sink) allows.
//!                  0: no pipelining, each command waits for its reply (four round trips
//!                  per message, as Conveyor's lettre-based client sends): for comparison.
//! ```
//!
//! Every reply is checked in order (2xx to MAIL, RCPT and the final ".", 354 to DATA);
//! any other reply, or a lost connection, ends the run with a message naming the
//! connection, the message and the reply (exit status 1).
//!
//! The message is the one Conveyor's worker sends a campaign recipient in
//! `scripts/bench` (captured from a worker run with `shared/testkit/smtp_server.py`:
//! 590 bytes before the terminating "."): the same headers in the same order (From,
//! Subject, Message-ID, MIME-Version, To, List-Unsubscribe with a 154-character token,
//! List-Unsubscribe-Post, Content-Type, Content-Transfer-Encoding, Date), the same
//! one-line text body, and the same envelope (`no-reply@conveyor.localhost` to
//! `r000000@example.org`…); the recipient, Message-ID, token and Date change per
//! message as they do in Conveyor's. DKIM is off in the bench, as here.
//!
//! stdout: one JSON line `{"messages", "connections", "window", "message_bytes",
//! "seconds", "messages_per_sec", "setup_s"}`: `seconds` from before the first connect
//! to the last message's final reply (connections and greetings included, as the
//! campaign's first claim → last success includes its connections), `setup_s` until
//! every connection was greeted.

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use time::format_description::well_known::Rfc2822;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use uuid::Uuid;

#[derive(Parser, Debug, Clone)]
#[command(about = "A bare pipelining SMTP client: the campaign delivery's baseline")]
struct Args {
    /// The SMTP server.
    #[arg(long, env = "SINK_ADDR", default_value = "127.0.0.1:2525")]
    addr: String,
    /// Messages in all.
    #[arg(long, env = "BLAST_MESSAGES")]
    messages: usize,
    /// Connections (the messages are split across them).
    #[arg(long, env = "BLAST_CONNECTIONS")]
    connections: usize,
    /// Transactions in flight per connection: 1 is RFC 2920 pipelining (a body waits
    /// for its 354); more writes whole transactions ahead (the sink allows it); 0 does
    /// not pipeline (each command waits for its reply).
    #[arg(long, env = "BLAST_WINDOW", default_value_t = 1)]
    window: usize,
}

/// The sender, as `SMTP_FROM` defaults it.
const FROM: &str = "no-reply@conveyor.localhost";
/// Bytes of the unsubscribe token's ciphertext: 154 characters of base64url, as in the
/// captured message (the plain text is two simple UUIDs and a 19-character address).
const TOKEN_BYTES: usize = 115;
/// The size of the message Conveyor's worker sent in the capture (without the ".").
const CAPTURED_BYTES: usize = 590;

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match run(&args).await {
        Ok(line) => println!("{line}"),
        Err(err) => {
            eprintln!("smtp-blast: {err:#}");
            std::process::exit(1);
        }
    }
}

async fn run(args: &Args) -> anyhow::Result<String> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let size = message(0, &mut Vec::new()).len();
    if size != CAPTURED_BYTES {
        eprintln!(
            "smtp-blast: warning: a message is {size} bytes, the captured one {CAPTURED_BYTES}"
        );
    }
    let started = Instant::now();
    let (greeted_tx, mut greeted_rx) = tokio::sync::mpsc::channel::<()>(args.connections);
    let mut tasks = Vec::with_capacity(args.connections);
    let mut first = 0;
    for k in 0..args.connections {
        let count =
            args.messages / args.connections + usize::from(k < args.messages % args.connections);
        let (addr, window, greeted) = (args.addr.clone(), args.window, greeted_tx.clone());
        tasks.push(tokio::spawn(async move {
            connection(k, &addr, first..first + count, window, greeted)
                .await
                .with_context(|| format!("connection {k}"))
        }));
        first += count;
    }
    drop(greeted_tx);
    let mut greeted = 0;
    while greeted_rx.recv().await.is_some() {
        greeted += 1;
    }
    let setup = (greeted == args.connections).then(|| started.elapsed());
    let mut last = started;
    let mut sent = 0;
    let mut failure = None;
    for task in tasks {
        match task.await {
            Ok(Ok((done, at))) => {
                sent += done;
                last = last.max(at);
            }
            Ok(Err(err)) => {
                failure.get_or_insert(err);
            }
            Err(err) => {
                failure.get_or_insert(anyhow!("a connection's task failed: {err}"));
            }
        }
    }
    if let Some(err) = failure {
        return Err(err);
    }
    if sent != args.messages {
        bail!("{sent} of {} messages accepted", args.messages);
    }
    let secs = (last - started).as_secs_f64();
    Ok(serde_json::json!({
        "messages": sent,
        "connections": args.connections,
        "window": args.window,
        "message_bytes": size,
        "seconds": round3(secs),
        "messages_per_sec": (sent as f64 / secs * 10.0).round() / 10.0,
        "setup_s": setup.map(|d| round3(d.as_secs_f64())),
    })
    .to_string())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One connection: greeting, EHLO, the messages `range`, QUIT. Returns how many
/// messages the server accepted and when the last one's final reply came.
async fn connection(
    k: usize,
    addr: &str,
    range: std::ops::Range<usize>,
    window: usize,
    greeted: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<(usize, Instant)> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let (read, mut write) = stream.into_split();
    let mut conn = Replies {
        reader: BufReader::with_capacity(16 * 1024, read),
        line: Vec::with_capacity(256),
        pipelining: false,
    };
    conn.expect(2, "the greeting", None).await?;
    send(
        &mut write,
        format!("EHLO blast-{k}.localhost\r\n").as_bytes(),
    )
    .await?;
    conn.expect(2, "EHLO", None).await?;
    if !conn.pipelining {
        bail!("the server does not offer PIPELINING");
    }
    // A closed channel only means nobody waits for the greetings any more.
    let _ = greeted.send(()).await;
    drop(greeted);

    let mut buf = Vec::with_capacity(window.max(2) * 1024);
    let mut body = Vec::with_capacity(1024);
    let (start, end) = (range.start, range.end);
    if window == 0 {
        // No pipelining: MAIL, RCPT, DATA and the body each wait for the reply before.
        for i in start..end {
            buf.clear();
            envelope(i, &mut buf);
            let mut lines = buf.split_inclusive(|&b| b == b'\n');
            for (what, class) in [("MAIL FROM", 2), ("RCPT TO", 2), ("DATA", 3)] {
                let line = lines.next().unwrap_or_default();
                send(&mut write, line).await?;
                conn.expect(class, what, Some(i)).await?;
            }
            body.clear();
            let mut data = message(i, &mut body).to_vec();
            data.extend_from_slice(b".\r\n");
            send(&mut write, &data).await?;
            conn.expect(2, "the end of data", Some(i)).await?;
        }
    } else if window == 1 {
        // RFC 2920: the envelope and DATA in one write; the body after the 354, sent
        // together with the next message's envelope and DATA.
        if start < end {
            envelope(start, &mut buf);
            send(&mut write, &buf).await?;
        }
        for i in start..end {
            conn.envelope_replies(i).await?;
            buf.clear();
            buf.extend_from_slice(message(i, &mut body));
            buf.extend_from_slice(b".\r\n");
            if i + 1 < end {
                envelope(i + 1, &mut buf);
            }
            send(&mut write, &buf).await?;
            conn.expect(2, "the end of data", Some(i)).await?;
        }
    } else {
        // Up to `window` whole transactions ahead of their replies.
        let (mut written, mut done) = (start, start);
        while done < end {
            buf.clear();
            while written < end && written - done < window {
                envelope(written, &mut buf);
                buf.extend_from_slice(message(written, &mut body));
                buf.extend_from_slice(b".\r\n");
                written += 1;
            }
            if !buf.is_empty() {
                send(&mut write, &buf).await?;
            }
            conn.envelope_replies(done).await?;
            conn.expect(2, "the end of data", Some(done)).await?;
            done += 1;
        }
    }
    let last = Instant::now();
    send(&mut write, b"QUIT\r\n").await?;
    // The session is over either way; a server that hangs up without 221 is fine.
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.expect(2, "QUIT", None)).await;
    Ok((end - start, last))
}

async fn send(write: &mut OwnedWriteHalf, bytes: &[u8]) -> anyhow::Result<()> {
    write.write_all(bytes).await.context("write to the server")
}

/// The server's replies on one connection, read in order.
struct Replies {
    reader: BufReader<OwnedReadHalf>,
    line: Vec<u8>,
    pipelining: bool,
}

impl Replies {
    /// The replies to MAIL FROM, RCPT TO and DATA of message `i`.
    async fn envelope_replies(&mut self, i: usize) -> anyhow::Result<()> {
        self.expect(2, "MAIL FROM", Some(i)).await?;
        self.expect(2, "RCPT TO", Some(i)).await?;
        self.expect(3, "DATA", Some(i)).await
    }

    /// Reads one (possibly multi-line) reply; an error unless its code is `class`xx.
    async fn expect(
        &mut self,
        class: u8,
        what: &str,
        message: Option<usize>,
    ) -> anyhow::Result<()> {
        let of = message
            .map(|i| format!(" of message {i}"))
            .unwrap_or_default();
        loop {
            self.line.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.line)
                .await
                .with_context(|| format!("reading the reply to {what}{of}"))?;
            if n == 0 {
                bail!("the server closed the connection before answering {what}{of}");
            }
            let text = String::from_utf8_lossy(&self.line);
            let text = text.trim_end();
            let code = self
                .line
                .get(..3)
                .filter(|c| c.iter().all(u8::is_ascii_digit));
            let Some(code) = code else {
                bail!("{what}{of} answered something that is not an SMTP reply: {text:?}");
            };
            if code[0] != b'0' + class {
                bail!("{what}{of} answered {text:?} (expected {class}xx)");
            }
            if what == "EHLO"
                && text
                    .get(4..)
                    .is_some_and(|ext| ext.eq_ignore_ascii_case("PIPELINING"))
            {
                self.pipelining = true;
            }
            // "250-…" continues the reply; "250 …" (or a bare "250") ends it.
            if self.line.get(3) != Some(&b'-') {
                return Ok(());
            }
        }
    }
}

/// Appends message `i`'s envelope and DATA.
fn envelope(i: usize, buf: &mut Vec<u8>) {
    buf.extend_from_slice(
        format!(
            "MAIL FROM:<{FROM}>\r\nRCPT TO:<{}>\r\nDATA\r\n",
            recipient(i)
        )
        .as_bytes(),
    );
}

fn recipient(i: usize) -> String {
    format!("r{i:06}@example.org")
}

/// Message `i` as Conveyor's worker writes a campaign recipient's (ends with CRLF;
/// no line starts with "." so nothing needs stuffing), built in `out`.
fn message(i: usize, out: &mut Vec<u8>) -> &[u8] {
    // A token of the captured length; its bytes vary per message (xorshift), as a
    // ciphertext's would.
    let mut token = [0u8; TOKEN_BYTES];
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for byte in &mut token {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x as u8;
    }
    let date = time::OffsetDateTime::now_utc()
        .format(&Rfc2822)
        .unwrap_or_else(|_| "Mon, 07 Dec 2026 21:24:32 +0000".to_owned());
    out.clear();
    out.extend_from_slice(
        format!(
            "From: Conveyor <{FROM}>\r\n\
             Subject: Spring is here\r\n\
             Message-ID: <{id}@conveyor>\r\n\
             MIME-Version: 1.0\r\n\
             To: {to}\r\n\
             List-Unsubscribe: <http://127.0.0.1:8080/api/v1/unsubscribe/{token}>\r\n\
             List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: 7bit\r\n\
             Date: {date}\r\n\
             \r\n\
             Our spring collection is out.\r\n",
            id = Uuid::now_v7(),
            to = recipient(i),
            token = URL_SAFE_NO_PAD.encode(token),
        )
        .as_bytes(),
    );
    out
}
