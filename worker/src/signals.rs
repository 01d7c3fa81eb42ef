//! Signals the runtime hands tests (as River's `TestSignals`): the completer says what
//! each commit recorded, the scheduler which ticks it enqueued, so a test awaits the
//! event itself instead of sleeping or polling the database. Off unless asked for
//! ([`Signals::enabled`]): production sends nothing.

use tokio::sync::broadcast;
use uuid::Uuid;

use crate::scheduler::Ticked;

/// Signals a receiver can fall behind by before it is told it lagged.
const CAPACITY: usize = 4096;

#[derive(Debug, Clone)]
pub enum Signal {
    /// The completer committed these outcomes: each job and how it ended
    /// (`succeeded`, `retried`, `dead`, `suppressed`, `deferred`).
    Committed(Vec<(Uuid, &'static str)>),
    /// The scheduler enqueued these ticks.
    Ticked(Vec<Ticked>),
}

/// Where the runtime's roles send their signals, if anyone listens.
#[derive(Debug, Clone, Default)]
pub struct Signals(Option<broadcast::Sender<Signal>>);

impl Signals {
    /// Signals that are sent (a test's runtime).
    pub fn enabled() -> Self {
        Signals(Some(broadcast::channel(CAPACITY).0))
    }

    /// A receiver of every signal sent from now on; `None` when signals are off.
    pub fn subscribe(&self) -> Option<broadcast::Receiver<Signal>> {
        self.0.as_ref().map(broadcast::Sender::subscribe)
    }

    pub(crate) fn send(&self, signal: impl FnOnce() -> Signal) {
        if let Some(sender) = &self.0 {
            let _ = sender.send(signal());
        }
    }
}
