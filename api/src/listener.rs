//! Accepting and serving HTTP/1 connections with the limits `axum::serve` lacks: a
//! header-read timeout, an idle keep-alive timeout and a cap on open connections.
//!
//! A connection is in one of three phases, each with its own deadline:
//! - *awaiting a head*: from accept (or from the first byte of a later request) the
//!   whole request head must arrive within the header-read timeout; trickling bytes
//!   does not extend it;
//! - *busy*: from the head until the response body is dropped (fully written, or the
//!   connection gone) there is no connection deadline — `REQUEST_TIMEOUT_SECS` bounds
//!   the handler, and an event stream may rightly stay open for hours;
//! - *idle*: after the last response, the next request's first byte must arrive within
//!   the idle timeout.
//!
//! hyper's own `header_read_timeout` is not used: hyper 1.12 restarts that timer the
//! moment a response is written, so it is also an idle timeout of the same length,
//! and a 10 s header limit would close every kept-alive connection after 10 s. One
//! deadline per connection, kept here and moved by the phase changes above, gives
//! both limits their own length.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use shared::telemetry::metric;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

/// Derived connection caps never exceed this.
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// The longest pause after an accept error such as EMFILE.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// What one listener allows its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// Open connections at most; past it the listener waits for one to close.
    pub max_connections: usize,
}

/// The connection cap: `configured` if set, else three quarters of the process's
/// open-file limit (the rest stays for the database pool, Redis, the ops listener
/// and files), at most 10,000. Without a readable limit, 10,000.
pub fn connection_cap(configured: Option<usize>) -> usize {
    configured.unwrap_or_else(|| {
        open_file_limit().map_or(DEFAULT_MAX_CONNECTIONS, |limit| {
            (limit / 4 * 3).clamp(1, DEFAULT_MAX_CONNECTIONS)
        })
    })
}

/// The soft `RLIMIT_NOFILE`, read from `/proc` (Linux) so no libc binding is needed.
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Serves `listener` until `shutdown` resolves, then stops accepting, lets every open
/// connection finish its in-flight request (idle ones close at once) and returns when
/// the last one has closed. The caller bounds that drain with its grace period.
///
/// `make_service` is called with each client's address, as axum's
/// `into_make_service_with_connect_info::<SocketAddr>()` expects.
pub async fn serve<M, S>(
    listener: TcpListener,
    make_service: M,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send,
) where
    M: Service<SocketAddr, Response = S, Error = Infallible> + Clone + Send + 'static,
    M::Future: Send,
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    // The semaphore caps open connections, and, once every permit is back, says the
    // drain is over. The cap is at most 1,000,000 by configuration.
    let permits = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(permits as usize));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    let mut backoff = Duration::ZERO;
    loop {
        // Past the cap, wait for a slot: the kernel's backlog holds new clients.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, client) = match accepted {
            Ok(accepted) => {
                backoff = Duration::ZERO;
                accepted
            }
            // The client gave up before we accepted it: nothing is wrong here.
            Err(err) if is_client_error(&err) => continue,
            // EMFILE, ENFILE, ENOBUFS, ENOMEM: pause so the loop never spins, then
            // retry; connections closing (the timeouts see to it) free descriptors.
            Err(err) => {
                metrics::counter!(metric::HTTP_ACCEPT_ERRORS_TOTAL).increment(1);
                backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
                tracing::warn!(error = %err, backoff_ms = backoff.as_millis(), "accept failed; backing off");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let make_service = make_service.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            let open = metrics::gauge!(metric::HTTP_CONNECTIONS);
            open.increment(1.0);
            let Ok(service) = make_service.oneshot(client).await;
            serve_connection(stream, service, limits, stop).await;
            open.decrement(1.0);
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let _ = slots.acquire_many(permits).await;
}

/// Accept errors that concern one client only.
fn is_client_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection until it closes, its deadline passes, or (after `stop`) its
/// in-flight request is answered.
async fn serve_connection<S>(
    stream: TcpStream,
    service: S,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let timeline = Arc::new(Timeline::new(limits));
    let io = TokioIo::new(WatchedStream {
        stream,
        timeline: timeline.clone(),
    });
    let hyper_service = hyper::service::service_fn({
        let timeline = timeline.clone();
        move |request: Request<Incoming>| {
            let busy = timeline.request_started();
            let response = service.clone().oneshot(request);
            async move {
                let Ok(response) = response.await;
                Ok::<_, Infallible>(
                    response.map(|body| Body::new(TrackedBody { body, _busy: busy })),
                )
            }
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // See the module docs: the deadlines are kept by `Timeline`.
    builder.header_read_timeout(None);
    let mut connection = pin!(builder.serve_connection(io, hyper_service));
    let mut stopping = false;
    loop {
        let deadline = timeline.deadline();
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                return;
            }
            () = timeline.changed.notified() => {}
            () = sleep_until(deadline) => {
                if let Some(reason) = timeline.expired_reason() {
                    metrics::counter!(metric::HTTP_CONNECTIONS_TIMED_OUT_TOTAL, "reason" => reason)
                        .increment(1);
                    tracing::debug!(reason, "closing a connection past its deadline");
                    return;
                }
            }
            _ = stop.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// One connection's phase and deadline, moved by reads (`WatchedStream`) and by
/// requests starting and finishing (`Busy`).
struct Timeline {
    limits: ConnectionLimits,
    state: Mutex<Phase>,
    /// Wakes the connection's task when the deadline moves earlier or appears.
    changed: Notify,
}

#[derive(Debug, Clone, Copy)]
struct Phase {
    /// Requests whose responses are not finished.
    busy: usize,
    /// Between a response and the next request's first byte.
    idle: bool,
    deadline: Option<Instant>,
}

impl Timeline {
    fn new(limits: ConnectionLimits) -> Self {
        Timeline {
            limits,
            state: Mutex::new(Phase {
                busy: 0,
                idle: false,
                deadline: Some(Instant::now() + limits.header_read_timeout),
            }),
            changed: Notify::new(),
        }
    }

    fn update<T>(&self, f: impl FnOnce(&mut Phase) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn deadline(&self) -> Option<Instant> {
        self.update(|phase| phase.deadline)
    }

    /// Why the connection must close now, if its deadline has passed: waiting for a
    /// request head (`header_timeout`) or idle between requests (`idle_timeout`).
    fn expired_reason(&self) -> Option<&'static str> {
        self.update(|phase| {
            let expired = phase.busy == 0 && phase.deadline.is_some_and(|d| d <= Instant::now());
            match (expired, phase.idle) {
                (false, _) => None,
                (true, true) => Some("idle_timeout"),
                (true, false) => Some("header_timeout"),
            }
        })
    }

    /// Bytes arrived: if the connection was idle, a request head has begun.
    fn bytes_read(&self) {
        let started = self.update(|phase| {
            let started = phase.idle && phase.busy == 0;
            if started {
                phase.idle = false;
                phase.deadline = Some(Instant::now() + self.limits.header_read_timeout);
            }
            started
        });
        if started {
            self.changed.notify_one();
        }
    }

    /// A request head was read; the connection is busy until the guard drops.
    fn request_started(self: &Arc<Self>) -> Busy {
        self.update(|phase| {
            phase.busy += 1;
            phase.idle = false;
            phase.deadline = None;
        });
        Busy(self.clone())
    }
}

/// A request in flight; dropping it (the response body written or abandoned) may
/// start the idle phase.
struct Busy(Arc<Timeline>);

impl Drop for Busy {
    fn drop(&mut self) {
        let timeline = &self.0;
        let idle = timeline.update(|phase| {
            phase.busy = phase.busy.saturating_sub(1);
            let idle = phase.busy == 0;
            if idle {
                phase.idle = true;
                phase.deadline = Some(Instant::now() + timeline.limits.idle_timeout);
            }
            idle
        });
        if idle {
            timeline.changed.notify_one();
        }
    }
}

/// A response body that keeps its connection busy until hyper drops it.
struct TrackedBody {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The client's stream, telling its `Timeline` when bytes arrive.
struct WatchedStream {
    stream: TcpStream,
    timeline: Arc<Timeline>,
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.timeline.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_cap_wins_over_the_derived_one() {
        assert_eq!(connection_cap(Some(7)), 7);
        let derived = connection_cap(None);
        assert!(
            (1..=DEFAULT_MAX_CONNECTIONS).contains(&derived),
            "{derived}"
        );
    }
}
