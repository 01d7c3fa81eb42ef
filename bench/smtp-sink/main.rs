//! A fast SMTP sink for `scripts/bench` (built as the `smtp_sink` example of the api
//! crate): accepts every message on `SINK_ADDR` (default `127.0.0.1:2525`) and
//! discards it. It answers pipelined commands (replies are written as the commands
//! are read and flushed only when no more input is buffered), sets `TCP_NODELAY`,
//! and on SIGTERM or SIGINT prints how many messages it accepted to stderr.
//!
//! Loopback only; tokio only.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::var("SINK_ADDR").unwrap_or_else(|_| "127.0.0.1:2525".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    let accepted = Arc::new(AtomicU64::new(0));
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    eprintln!("smtp-sink: listening on {addr}");
    loop {
        tokio::select! {
            conn = listener.accept() => {
                let (stream, _) = conn?;
                let accepted = accepted.clone();
                tokio::spawn(async move {
                    // A client that goes away mid-session is not the sink's problem.
                    let _ = session(stream, &accepted).await;
                });
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    eprintln!(
        "smtp-sink: {} messages accepted",
        accepted.load(Ordering::Relaxed)
    );
    Ok(())
}

/// One SMTP session: greeting, then one reply per command line; in DATA mode
/// every line up to the lone `.` is discarded.
async fn session(stream: TcpStream, accepted: &AtomicU64) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (read, write) = stream.into_split();
    let mut reader = BufReader::with_capacity(64 * 1024, read);
    let mut writer = BufWriter::with_capacity(16 * 1024, write);
    writer.write_all(b"220 sink ESMTP ready\r\n").await?;
    writer.flush().await?;
    let mut line = Vec::with_capacity(1024);
    let mut in_data = false;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        if in_data {
            if line == b".\r\n" || line == b".\n" {
                in_data = false;
                accepted.fetch_add(1, Ordering::Relaxed);
                writer.write_all(b"250 2.0.0 OK: discarded\r\n").await?;
            }
        } else {
            let verb: Vec<u8> = line.iter().take(4).map(u8::to_ascii_uppercase).collect();
            match verb.as_slice() {
                b"EHLO" => {
                    writer
                        .write_all(
                            b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 52428800\r\n",
                        )
                        .await?;
                }
                b"HELO" => writer.write_all(b"250 sink\r\n").await?,
                b"DATA" => {
                    in_data = true;
                    writer
                        .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                        .await?;
                }
                b"QUIT" => {
                    writer.write_all(b"221 2.0.0 Bye\r\n").await?;
                    writer.flush().await?;
                    return Ok(());
                }
                // MAIL, RCPT, RSET, NOOP and anything else: accepted.
                _ => writer.write_all(b"250 2.0.0 OK\r\n").await?,
            }
        }
        // Pipelining: answer a whole batch of commands with one write.
        if reader.buffer().is_empty() {
            writer.flush().await?;
        }
    }
}
