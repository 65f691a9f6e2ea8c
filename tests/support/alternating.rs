//! One address in front of two API servers that are configured
//! differently, as during a rolling control-plane upgrade, when a load
//! balancer sends each new connection to whichever server it picks and
//! consecutive requests from one client can see either configuration.
//!
//! Each accepted connection goes to the next backend in turn, and is cut
//! after a fixed time even if it is in use: clients pool connections
//! (HTTP/1 keep-alive, HTTP/2), and without the cut a client would stay on
//! the first server it reached. TLS passes through untouched, so clients
//! verify the API servers' own certificate; it must name the relay's
//! address (127.0.0.1 does). Point an admin kubeconfig at the relay with
//! [`AlternatingRelay::write_kubeconfig`].
//!
//! The chaos test's relay (relay.rs) is the other kind: it follows
//! readiness and keeps a connection for as long as both sides do.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpStream},
    task::{JoinHandle, JoinSet},
};

use super::pki::Pki;

pub struct AlternatingRelay {
    pub addr: SocketAddr,
    /// Connections passed on to each backend, in the order of `backends`.
    counts: Arc<Vec<AtomicUsize>>,
    /// Owns the connection tasks, so aborting it ends them too.
    acceptor: JoinHandle<()>,
}

impl AlternatingRelay {
    /// Listens on a free loopback port and passes connections to
    /// `backends` in round-robin order, cutting each after `hold`.
    pub async fn start(backends: Vec<SocketAddr>, hold: Duration) -> AlternatingRelay {
        assert!(!backends.is_empty(), "a relay needs a backend");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the alternating relay");
        let addr = listener.local_addr().expect("the relay's address");
        let counts: Arc<Vec<AtomicUsize>> =
            Arc::new(backends.iter().map(|_| AtomicUsize::new(0)).collect());
        let acceptor = tokio::spawn(accept(listener, backends, hold, counts.clone()));
        AlternatingRelay {
            addr,
            counts,
            acceptor,
        }
    }

    /// How many connections each backend has been given, in the order the
    /// backends were passed to [`AlternatingRelay::start`]. A connection
    /// counts once the backend has accepted it.
    pub fn connections(&self) -> Vec<usize> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// Writes an admin kubeconfig for the API servers behind the relay.
    pub fn write_kubeconfig(&self, pki: &Pki, path: &Path) {
        pki.write_kubeconfig(path, &format!("https://{}", self.addr));
    }
}

impl Drop for AlternatingRelay {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

async fn accept(
    listener: TcpListener,
    backends: Vec<SocketAddr>,
    hold: Duration,
    counts: Arc<Vec<AtomicUsize>>,
) {
    // Dropped when this task is aborted, which aborts every connection.
    let mut connections = JoinSet::new();
    let mut next = 0;
    loop {
        // Finished connections would otherwise pile up for the relay's life.
        while connections.try_join_next().is_some() {}
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        let i = next % backends.len();
        next += 1;
        let (target, counts) = (backends[i], counts.clone());
        connections.spawn(async move {
            // A refused connection is closed at once, which the client sees
            // as a connection error, as it would from a balancer.
            let Ok(mut server) = TcpStream::connect(target).await else {
                return;
            };
            counts[i].fetch_add(1, Ordering::Relaxed);
            let _ = tokio::time::timeout(
                hold,
                tokio::io::copy_bidirectional(&mut client, &mut server),
            )
            .await;
        });
    }
}
