//! The TLS accept loop and its drain.
//!
//! Each connection is handshaken in its own task under a deadline, then
//! served by hyper with HTTP/1.1 keep-alive. Every connection is tracked from
//! the moment it is accepted, so that shutdown can wait for in-flight
//! requests, close idle keep-alive connections (kube-apiserver would go on
//! reusing them), and say how many it had to cut when the grace ran out.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

/// How long a connection may sit between requests, or take to send a
/// request's headers. Longer than the API server's typical request gap so
/// that its keep-alive connections are reused, short enough that abandoned
/// connections do not pile up.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause after a failed accept (usually out of file descriptors), so that
/// the loop does not spin while connections close.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

pub(super) struct Limits {
    pub handshake_timeout: Duration,
    pub grace: Duration,
}

/// How the drain ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Drained {
    /// Every connection finished within the grace.
    Clean,
    /// The grace ran out with this many connections still open.
    Cut(usize),
}

/// Serves `app` over TLS until `stop` completes, then drains.
pub(super) async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
) -> Drained {
    let graceful = GracefulShutdown::new();
    let live = Arc::new(AtomicUsize::new(0));
    let (stopping_tx, stopping) = watch::channel(false);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    let builder = builder.http1_only();

    let mut stop = std::pin::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Without it, Nagle's algorithm holds the first response of a TLS 1.3
        // connection until the client acknowledges the session tickets sent
        // after the handshake, and the client delays that acknowledgement:
        // about 40 ms more on every new connection. Responses are written
        // whole, so there is nothing for Nagle to coalesce.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        // Taken before the handshake so that the drain waits for it too.
        let watcher = graceful.watcher();
        let counted = Counted::new(&live);
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let service = TowerToHyperService::new(app.clone());
        let mut stopping = stopping.clone();
        let handshake_timeout = limits.handshake_timeout;
        tokio::spawn(async move {
            let _counted = counted;
            let Some(tls) = handshake(&acceptor, tcp, peer, handshake_timeout, &mut stopping).await
            else {
                return;
            };
            let connection = builder
                .serve_connection(TokioIo::new(tls), service)
                .into_owned();
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }

    drop(listener);
    let _ = stopping_tx.send(true);
    let open = live.load(Ordering::Acquire);
    tracing::info!(connections = open, grace = ?limits.grace, "draining connections");
    match tokio::time::timeout(limits.grace, graceful.shutdown()).await {
        Ok(()) => Drained::Clean,
        Err(_) => Drained::Cut(live.load(Ordering::Acquire)),
    }
}

/// The TLS handshake of one connection, under its deadline. `None` when it
/// failed, timed out, or the drain began first: a connection that has sent
/// no request yet has nothing to finish, and the client retries elsewhere.
async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
    stopping: &mut watch::Receiver<bool>,
) -> Option<TlsStream<TcpStream>> {
    tokio::select! {
        done = tokio::time::timeout(timeout, acceptor.accept(tcp)) => match done {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                None
            }
        },
        _ = stopping.wait_for(|s| *s) => None,
    }
}

/// Counts a connection as live for as long as its task holds this.
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(live: &Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(live))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
