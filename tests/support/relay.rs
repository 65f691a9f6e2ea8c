//! A stand-in for a Service in front of webhook replicas, for the chaos
//! test: the API server calls one address, and the relay passes each new
//! TCP connection to a replica whose `/readyz` says 200, as kube-proxy
//! sends new connections only to ready endpoints. A connection already
//! passed on stays with its replica until one side closes it, as conntrack
//! keeps an established flow. TLS goes through untouched.
//!
//! A Service on loopback is not possible here: the test control plane runs
//! with `--endpoint-reconciler-type=none` and no kube-proxy, and an
//! EndpointSlice cannot point at 127.0.0.1.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// How often readiness is polled: the endpoints controller and kube-proxy
/// take about a second in a cluster; faster here makes the test stricter
/// about the webhook's own shutdown delay, not looser.
const POLL: Duration = Duration::from_millis(200);
/// As kubelet's probe: a probe slower than this fails, and a replica is
/// taken out after this many failures in a row, so that one slow answer
/// on a loaded machine does not empty the Service.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const FAILURE_THRESHOLD: u32 = 2;

pub struct Backend {
    pub webhook: SocketAddr,
    pub health: SocketAddr,
    ready: AtomicBool,
}

/// Why the relay could not pass a connection on.
#[derive(Debug, Clone)]
pub struct Dropped {
    pub at: std::time::Instant,
    pub why: String,
}

pub struct Relay {
    pub addr: SocketAddr,
    backends: Arc<Vec<Backend>>,
    /// Connections that found no ready replica, or whose replica refused
    /// the connection: each is a call the API server saw fail.
    pub dropped: Arc<std::sync::Mutex<Vec<Dropped>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Relay {
    pub async fn start(backends: &[(SocketAddr, SocketAddr)]) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let addr = listener.local_addr().expect("the relay's address");
        let backends = Arc::new(
            backends
                .iter()
                .map(|&(webhook, health)| Backend {
                    webhook,
                    health,
                    ready: AtomicBool::new(false),
                })
                .collect::<Vec<_>>(),
        );
        let dropped: Arc<std::sync::Mutex<Vec<Dropped>>> = Arc::default();
        let poller = tokio::spawn(poll_readiness(backends.clone()));
        let acceptor = tokio::spawn(accept(listener, backends.clone(), dropped.clone()));
        Relay {
            addr,
            backends,
            dropped,
            tasks: vec![poller, acceptor],
        }
    }

    /// Whether the relay currently counts replica `i` as an endpoint.
    pub fn is_ready(&self, i: usize) -> bool {
        self.backends[i].ready.load(Ordering::Acquire)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn poll_readiness(backends: Arc<Vec<Backend>>) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(PROBE_TIMEOUT)
        .build()
        .expect("an HTTP client");
    let mut failures = vec![0u32; backends.len()];
    loop {
        for (b, failed) in backends.iter().zip(failures.iter_mut()) {
            let ok = http
                .get(format!("http://{}/readyz", b.health))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            *failed = if ok { 0 } else { *failed + 1 };
            if ok {
                b.ready.store(true, Ordering::Release);
            } else if *failed >= FAILURE_THRESHOLD {
                b.ready.store(false, Ordering::Release);
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn accept(
    listener: TcpListener,
    backends: Arc<Vec<Backend>>,
    dropped: Arc<std::sync::Mutex<Vec<Dropped>>>,
) {
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let (backends, dropped, next) = (backends.clone(), dropped.clone(), next.clone());
        tokio::spawn(async move {
            let drop_it = |why: String| {
                let at = std::time::Instant::now();
                dropped.lock().unwrap().push(Dropped { at, why });
            };
            let Some(target) = pick(&backends, &next) else {
                drop_it("no ready replica".to_owned());
                return;
            };
            let mut server = match TcpStream::connect(target).await {
                Ok(s) => s,
                Err(e) => return drop_it(format!("{target} refused: {e}")),
            };
            let mut client = client;
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
    }
}

/// Round robin over the ready replicas.
fn pick(backends: &[Backend], next: &AtomicUsize) -> Option<SocketAddr> {
    let n = backends.len();
    let start = next.fetch_add(1, Ordering::Relaxed);
    (0..n)
        .map(|k| &backends[(start + k) % n])
        .find(|b| b.ready.load(Ordering::Acquire))
        .map(|b| b.webhook)
}
