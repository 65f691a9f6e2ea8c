//! The signals that start a shutdown: SIGTERM from the kubelet, SIGINT from
//! a terminal. Handlers are installed at start-up, before the listeners are
//! announced, so that a signal sent right after start is never lost.

use std::io;

#[cfg(unix)]
pub(super) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    pub(super) fn install() -> io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next signal and names it.
    pub(super) async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

#[cfg(not(unix))]
pub struct Signals;

#[cfg(not(unix))]
impl Signals {
    pub fn install() -> io::Result<Self> {
        Ok(Self)
    }

    pub async fn recv(&mut self) -> &'static str {
        // Without a handler there is nothing to wait for; never resolve.
        match tokio::signal::ctrl_c().await {
            Ok(()) => "ctrl-c",
            Err(_) => std::future::pending().await,
        }
    }
}

/// Resolves when the listener should stop accepting: after the first
/// signal and the shutdown delay, or at a second signal.
pub(super) async fn unready_then_stop(
    mut signals: Signals,
    readiness: std::sync::Arc<super::readiness::Readiness>,
    delay: std::time::Duration,
) {
    let signal = signals.recv().await;
    // Unready first, so that the Service stops sending new reviews here
    // while the ones already sent are answered. The API server keeps
    // sending to this pod until its endpoint is gone, so the listener stays
    // open for the delay.
    readiness.shutting_down();
    if !delay.is_zero() {
        tracing::info!(
            signal,
            ?delay,
            "unready; serving through the shutdown delay"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            again = signals.recv() => {
                tracing::info!(signal = again, "second signal; cutting the shutdown delay short");
            }
        }
    }
    tracing::info!(signal, "shutting down");
}
