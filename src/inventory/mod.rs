//! `issuer-guard inventory`: the pod inventory in the cluster, a process of
//! its own (one replica in the chart) so that the admission replicas'
//! memory does not grow with the number of pods. Watches keep what the
//! verdict needs (each pod judged once as it changes, kept as its facts and
//! findings, never its whole object), and every `interval` the same
//! assessment `status` prints is made and exported as metrics, on the API
//! server's clock.

mod metrics;
mod table;
mod watches;

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::{
    cluster::{self, ClusterError},
    config::{Config, ConfigError},
    retirement::{Accounts, Evidence, LegacyToken, SecretKey},
    rules::LegacySecrets,
    state::{Discovered, ledger::Window},
};
use metrics::Metrics;
use table::PodTable;

#[derive(Debug, Clone)]
pub struct Options {
    /// Kubeconfig files; else $KUBECONFIG, ~/.kube/config or the in-cluster
    /// account, as kubectl picks.
    pub kubeconfig: Option<std::ffi::OsString>,
    /// The ledger, as NAMESPACE/NAME.
    pub ledger: String,
    pub config: Option<PathBuf>,
    pub window: Duration,
    pub listen: SocketAddr,
    pub interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("--ledger must be NAMESPACE/NAME, got {0:?}")]
    LedgerName(String),
    #[error("cannot listen on {addr}: {source}; is another process on that port? (--listen)")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the watches keep, behind one lock: an assessment reads all of it
/// at once.
#[derive(Default)]
struct Cache {
    found: Option<Discovered>,
    /// The rules' index of legacy token Secrets, and each one's last use.
    secrets: LegacySecrets,
    legacy: BTreeMap<SecretKey, LegacyToken>,
    deployments: HashMap<(String, String), String>,
    accounts: Accounts,
    pods: PodTable,
}

/// Which watches have listed once.
#[derive(Default)]
struct Synced {
    ledger: AtomicBool,
    secrets: AtomicBool,
    replica_sets: AtomicBool,
    accounts: AtomicBool,
    pods: AtomicBool,
    assessed: AtomicBool,
}

impl Synced {
    fn missing(&self) -> Vec<&'static str> {
        [
            (&self.ledger, "the ledger"),
            (&self.secrets, "legacy token Secrets"),
            (&self.replica_sets, "ReplicaSets"),
            (&self.accounts, "ServiceAccounts"),
            (&self.pods, "Pods"),
            (&self.assessed, "a first assessment"),
        ]
        .into_iter()
        .filter(|(flag, _)| !flag.load(Ordering::Acquire))
        .map(|(_, what)| what)
        .collect()
    }
}

struct Shared {
    cache: Mutex<Cache>,
    synced: Synced,
    metrics: Metrics,
    /// Bumped when what the rules judge with changes (the ledger's
    /// conclusion, the set of legacy token Secrets): the pods are judged
    /// again from a relist.
    judging: tokio::sync::watch::Sender<u64>,
    base: Config,
    window: Window,
}

impl Shared {
    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn rejudge(&self, reason: &'static str) {
        self.metrics
            .relists
            .get_or_create(&metrics::ReasonLabels { reason })
            .inc();
        self.judging.send_modify(|n| *n += 1);
    }
}

/// Runs the inventory until the process is stopped.
pub async fn run(options: Options) -> Result<(), InventoryError> {
    let (ledger_ns, ledger_name) = cluster::split_pair(&options.ledger)
        .ok_or_else(|| InventoryError::LedgerName(options.ledger.clone()))?;
    let base = match &options.config {
        Some(path) => Config::load(path)?.config,
        None => Config::embedded_default(),
    };
    let client = cluster::connect_as_kubectl(options.kubeconfig.as_deref(), None).await?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| InventoryError::Listen {
            addr: options.listen,
            source,
        })?;
    let (judging, _) = tokio::sync::watch::channel(0);
    let shared = Arc::new(Shared {
        cache: Mutex::new(Cache::default()),
        synced: Synced::default(),
        metrics: Metrics::new(),
        judging,
        base,
        window: Window(options.window),
    });
    tokio::spawn(crate::server::health::serve(
        listener,
        router(shared.clone()),
    ));
    tracing::info!(listen = %options.listen, ledger = %options.ledger, "inventory starting");
    watches::spawn(&client, &ledger_ns, &ledger_name, &shared);
    assess_loop(client, shared, options.interval).await;
    Ok(())
}

/// Every `interval`, once everything is listed: the assessment, on the API
/// server's clock, into the metrics.
async fn assess_loop(client: kube::Client, shared: Arc<Shared>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut waiting_logged = false;
    loop {
        tick.tick().await;
        let missing = shared.synced.missing();
        if missing.iter().any(|m| *m != "a first assessment") {
            if !waiting_logged {
                tracing::info!(waiting_for = ?missing, "inventory not listed yet");
                waiting_logged = true;
            }
            continue;
        }
        let now = match cluster::server_date(&client).await {
            Ok(now) => now,
            Err(error) => {
                tracing::warn!(%error, "cannot read the API server's clock; the metrics keep the last assessment");
                continue;
            }
        };
        let assessment = {
            let cache = shared.cache();
            let Some(found) = &cache.found else { continue };
            Evidence {
                found,
                pods: cache.pods.pods(),
                deployments: &cache.deployments,
                accounts: &cache.accounts,
                legacy: &cache.legacy,
                now,
            }
            .assess()
        };
        shared.metrics.record(&assessment, now);
        // An assessment's report is built and dropped whole every interval.
        drop(assessment);
        crate::server::trim_allocator();
        if !shared.synced.assessed.swap(true, Ordering::AcqRel) {
            shared.metrics.synced.set(1);
            tracing::info!(
                pods = shared.cache().pods.len(),
                "inventory listed and assessed; ready"
            );
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(shared)
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let missing = shared.synced.missing();
    if missing.is_empty() {
        "ok\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: waiting for {}\n", missing.join(", ")),
        )
            .into_response()
    }
}

async fn metrics_text(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
        .into_response()
}
