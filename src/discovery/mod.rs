//! Discovery: learns from the API server which issuer and key sign tokens
//! now, records each new (issuer, key id) pair in the generation ledger, and
//! follows a rotation from what the ledger has seen. It runs beside the
//! webhook and never in a review's path: reviews read the last combined
//! configuration, and when the API server cannot be reached the last known
//! generation stays in force.

mod probe;
mod store;

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use tokio::task::JoinHandle;

use crate::cluster::{Caller, Reachability};
use crate::state::ledger::{Ledger, Observation, Window};
use crate::{
    live::Live,
    metrics::{Metrics, StageLabels},
};

/// The default name of the ledger ConfigMap.
pub(crate) const DEFAULT_LEDGER: &str = "issuer-guard-ledger";
/// The audience of the tokens issuer-guard mints for itself: one no relying
/// party accepts, so such a token is useless to anyone who steals it.
pub(crate) const DEFAULT_AUDIENCE: &str = "issuer-guard.io/discovery";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    OpenIdConfiguration,
    Jwks,
    TokenRequest,
    Verify,
    Ledger,
}

impl Stage {
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::OpenIdConfiguration => "openid-configuration",
            Stage::Jwks => "jwks",
            Stage::TokenRequest => "token-request",
            Stage::Verify => "verify",
            Stage::Ledger => "ledger",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("{stage}: {message}")]
    Request { stage: Stage, message: String },
    #[error("{stage}: no answer within {timeout:?}")]
    Timeout { stage: Stage, timeout: Duration },
    #[error("{stage}: no answer from the API server: {message}")]
    NoAnswer { stage: Stage, message: String },
    #[error("the minted token cannot be believed: {0}")]
    Verify(String),
    #[error(
        "ledger ConfigMap {name} is unreadable ({message}); fix or delete it (deleting loses the generation history, and a new ledger starts at generation.static.number)"
    )]
    Ledger { name: String, message: String },
    #[error(
        "ledger ConfigMap {name}: still conflicting after {attempts} attempts; trying again at the next probe"
    )]
    Contended { name: String, attempts: usize },
    #[error("--service-account must be NAMESPACE/NAME, got {0:?}")]
    ServiceAccount(String),
}

impl DiscoveryError {
    /// The API server did not answer: an outage, logged once for all of
    /// issuer-guard rather than by discovery.
    pub fn no_answer(&self) -> bool {
        matches!(
            self,
            DiscoveryError::Timeout { .. } | DiscoveryError::NoAnswer { .. }
        )
    }

    /// A kube client's error at `stage`.
    pub(crate) fn from_client(stage: Stage, error: &kube::Error, context: &str) -> Self {
        let message = format!("{context}{error}");
        if crate::cluster::no_answer(error) {
            DiscoveryError::NoAnswer { stage, message }
        } else {
            DiscoveryError::Request { stage, message }
        }
    }

    pub fn stage(&self) -> Stage {
        match self {
            DiscoveryError::Request { stage, .. }
            | DiscoveryError::Timeout { stage, .. }
            | DiscoveryError::NoAnswer { stage, .. } => *stage,
            DiscoveryError::Verify(_) => Stage::Verify,
            DiscoveryError::Ledger { .. }
            | DiscoveryError::Contended { .. }
            | DiscoveryError::ServiceAccount(_) => Stage::Ledger,
        }
    }
}

/// issuer-guard's own ServiceAccount, which it mints tokens for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
}

impl std::str::FromStr for ServiceAccountRef {
    type Err = DiscoveryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self {
                    namespace: ns.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(DiscoveryError::ServiceAccount(s.to_owned())),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub account: ServiceAccountRef,
    /// The ledger ConfigMap, in the account's namespace.
    pub ledger: String,
    pub interval: Duration,
    pub window: Duration,
    pub audience: String,
}

/// The running discovery: whether the ledger has been read once, which is
/// what readiness waits for.
pub(crate) struct Discovery {
    pub synced: Arc<AtomicBool>,
    _tasks: [JoinHandle<()>; 2],
}

/// Starts the ledger watch and the probe loop.
pub(crate) fn spawn(
    client: Client,
    settings: Settings,
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    reach: Arc<Reachability>,
) -> Discovery {
    let window = Window(settings.window);
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &settings.account.namespace);
    let synced = Arc::new(AtomicBool::new(false));
    let shared = Shared {
        live,
        known: Arc::new(arc_swap::ArcSwapOption::<Ledger>::empty()),
        reach,
    };
    let watch = tokio::spawn(watch_ledger(
        api.clone(),
        settings.ledger.clone(),
        window,
        synced.clone(),
        shared.clone(),
    ));
    let probe = tokio::spawn(probe_loop(client, api, settings, window, metrics, shared));
    Discovery {
        synced,
        _tasks: [watch, probe],
    }
}

/// What the ledger watch and the probe loop both hold: where conclusions
/// go, the newest ledger either has seen, and the API server's reachability.
#[derive(Clone)]
struct Shared {
    live: Arc<Live>,
    known: Arc<arc_swap::ArcSwapOption<Ledger>>,
    reach: Arc<Reachability>,
}

/// Every replica follows the ledger, so all of them stamp what any one of
/// them discovered within a watch event's delay.
async fn watch_ledger(
    api: Api<ConfigMap>,
    name: String,
    window: Window,
    synced: Arc<AtomicBool>,
    shared: Shared,
) {
    let Shared { live, known, reach } = shared;
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let events = watcher::watcher(api, config).backoff(crate::cluster::CappedBackoff::default());
    let mut events = std::pin::pin!(events);
    let mut failing = false;
    while let Some(event) = events.next().await {
        // `Init` starts a relist before any request is answered.
        if event
            .as_ref()
            .is_ok_and(|e| !matches!(e, watcher::Event::Init))
        {
            reach.answered(Caller::LedgerWatch);
        }
        match event {
            Ok(watcher::Event::Apply(map) | watcher::Event::InitApply(map)) => {
                failing = false;
                match store::parse(&name, &map) {
                    Ok(ledger) => adopt(&ledger, window, &live, &known),
                    Err(error) => tracing::error!(%error, "ledger not followed"),
                }
            }
            Ok(watcher::Event::InitDone) => {
                failing = false;
                if !synced.swap(true, Ordering::AcqRel) {
                    tracing::info!(ledger = %name, "ledger read; ready to stamp what it says");
                }
            }
            // A deleted ledger is written again from memory by the next
            // probe; until then the last one stays in force.
            Ok(watcher::Event::Delete(_) | watcher::Event::Init) => {}
            Err(error) if crate::cluster::watch_no_answer(&error) => {
                reach.no_answer(Caller::LedgerWatch, &error);
            }
            Err(error) => {
                if !failing {
                    tracing::info!(%error, "ledger watch failed; retrying");
                }
                failing = true;
            }
        }
    }
}

/// Takes `ledger` as the one in force unless it is behind the one already
/// known: the probe adopts its own write at once, and the watch may deliver
/// an older version after it.
fn adopt(ledger: &Ledger, window: Window, live: &Live, known: &arc_swap::ArcSwapOption<Ledger>) {
    if known
        .load()
        .as_deref()
        .is_some_and(|k| !ledger.is_at_least(k))
    {
        return;
    }
    known.store(Some(Arc::new(ledger.clone())));
    if let Some(found) = ledger.conclude(window) {
        live.set_discovered(found);
    }
}

async fn probe_loop(
    client: Client,
    api: Api<ConfigMap>,
    settings: Settings,
    window: Window,
    metrics: Arc<Metrics>,
    shared: Shared,
) {
    let Shared { live, known, reach } = shared;
    let store = store::Store::new(api, settings.ledger.clone());
    let started = Instant::now();
    let mut last_success: Option<Instant> = None;
    let mut failing = false;
    // Each request gets an interval, and at least 5 s; a stuck API server
    // must not stop the loop from reporting its age.
    let timeout = settings.interval.max(Duration::from_secs(5));
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let outcome = discover(&client, &store, &settings, window, &live, &known, timeout).await;
        match outcome {
            Ok(ledger) => {
                reach.answered(Caller::Discovery);
                last_success = Some(Instant::now());
                metrics
                    .discovery_last_success
                    .set(jiff::Timestamp::now().as_second());
                if std::mem::take(&mut failing) {
                    tracing::info!("discovery recovered");
                }
                adopt(&ledger, window, &live, &known);
            }
            Err(error) => {
                metrics
                    .discovery_errors
                    .get_or_create(&StageLabels {
                        stage: error.stage().as_str(),
                    })
                    .inc();
                let generation = live.effective().load().generation.number;
                if error.no_answer() {
                    reach.no_answer(Caller::Discovery, &error);
                } else if failing {
                    tracing::debug!(%error, "discovery failed again");
                } else {
                    tracing::warn!(%error, generation, "discovery failed; stamping the last known generation until it recovers");
                }
                failing = true;
            }
        }
        let since = last_success.unwrap_or(started).elapsed().as_secs();
        metrics
            .discovery_age_seconds
            .set(i64::try_from(since).unwrap_or(i64::MAX));
    }
}

async fn discover(
    client: &Client,
    store: &store::Store,
    settings: &Settings,
    window: Window,
    live: &Live,
    known: &arc_swap::ArcSwapOption<Ledger>,
    timeout: Duration,
) -> Result<Ledger, DiscoveryError> {
    let seen = probe::probe(client, &settings.account, &settings.audience, timeout).await?;
    if seen.advertised_issuer != seen.issuer {
        tracing::debug!(token = %seen.issuer, advertised = %seen.advertised_issuer, "the discovery document and the token name different issuers (a control-plane roll?)");
    }
    let observation = Observation {
        issuer: seen.issuer,
        key_id: seen.key_id,
        verifying: seen.verifying,
        at: jiff::Timestamp::now(),
    };
    let file = live.file();
    let first = file.declared.generation.number;
    let retired = &file.declared.retired_issuers;
    let seed = known.load_full();
    let ledger = tokio::time::timeout(
        timeout,
        store.update(seed.as_deref(), |l| {
            l.observe(&observation, first, retired, window)
        }),
    )
    .await
    .map_err(|_| DiscoveryError::Timeout {
        stage: Stage::Ledger,
        timeout,
    })??;
    Ok(ledger)
}
