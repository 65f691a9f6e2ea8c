//! Discovery: learns from the API server which issuer and key sign tokens
//! now, records each new (issuer, key id) pair in the generation ledger, and
//! follows a rotation from what the ledger has seen. It runs beside the
//! webhook and never in a review's path: reviews read the last combined
//! configuration, and when the API server cannot be reached the last known
//! generation stays in force.

mod canary;
mod probe;
mod round;
mod store;

use std::{
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwapOption;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use tokio::task::JoinHandle;

use crate::{
    cluster::{ApiServers, Caller, Reachability},
    live::Live,
    metrics::{Metrics, ReasonLabels, StageLabels},
    state::ledger::{Coverage, Declared, Ledger, Relation, SCHEMA, Window},
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
    Canary,
}

impl Stage {
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::OpenIdConfiguration => "openid-configuration",
            Stage::Jwks => "jwks",
            Stage::TokenRequest => "token-request",
            Stage::Verify => "verify",
            Stage::Ledger => "ledger",
            Stage::Canary => "canary",
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
    #[error("ledger ConfigMap {name} is refused ({reason}): {message}")]
    Refused {
        name: String,
        reason: &'static str,
        message: String,
    },
    #[error(
        "ledger ConfigMap {name} has schema {schema}, written by a later issuer-guard; this replica follows it and does not write it: finish the upgrade"
    )]
    NewerSchema { name: String, schema: u32 },
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
            | DiscoveryError::Refused { .. }
            | DiscoveryError::NewerSchema { .. }
            | DiscoveryError::Contended { .. }
            | DiscoveryError::ServiceAccount(_) => Stage::Ledger,
        }
    }
}

/// The ServiceAccount discovery mints its tokens for (the chart's
/// `issuer-guard-canary`, which may do nothing).
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
    /// The canary account tokens are minted for: one with no permissions,
    /// so that a probe's token authenticates as nobody who can do anything.
    pub account: ServiceAccountRef,
    /// The ledger ConfigMap, in the account's namespace.
    pub ledger: String,
    pub interval: Duration,
    pub window: Duration,
    pub audience: String,
}

/// The running discovery: whether a valid ledger is held (or there is
/// none yet), which is what readiness waits for.
pub(crate) struct Discovery {
    pub synced: Arc<AtomicBool>,
    _tasks: [JoinHandle<()>; 2],
}

/// Starts the ledger watch and the probe loop.
pub(crate) fn spawn(
    client: Client,
    servers: ApiServers,
    settings: Settings,
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    reach: Arc<Reachability>,
) -> Discovery {
    let window = Window(settings.window);
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &settings.account.namespace);
    let synced = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Shared {
        live,
        held: ArcSwapOption::empty(),
        reach,
        clock: ServerClock::default(),
        metrics,
        refused: Mutex::new(None),
        window,
    });
    let watch = tokio::spawn(watch_ledger(
        client.clone(),
        api.clone(),
        settings.ledger.clone(),
        synced.clone(),
        shared.clone(),
    ));
    let probe = tokio::spawn(probe_loop(client, servers, api, settings, shared));
    Discovery {
        synced,
        _tasks: [watch, probe],
    }
}

/// What the ledger watch and the probe loop share.
struct Shared {
    live: Arc<Live>,
    /// The last valid ledger this replica has read or written.
    held: ArcSwapOption<Ledger>,
    reach: Arc<Reachability>,
    clock: ServerClock,
    metrics: Arc<Metrics>,
    /// Why the stored ledger is refused, while it is: said once.
    refused: Mutex<Option<String>>,
    window: Window,
}

/// The API server's clock as this replica knows it: the last time a server
/// told (a token's `iat`, a `Date` header), moved on by the monotonic clock
/// since. A replica's wall clock is never read for anything discovery
/// records or checks.
#[derive(Default)]
struct ServerClock(Mutex<Option<(jiff::Timestamp, Instant)>>);

impl ServerClock {
    fn now(&self) -> Option<jiff::Timestamp> {
        let told = *self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (at, when) = told?;
        let since = jiff::SignedDuration::try_from(when.elapsed()).unwrap_or_default();
        Some(at.saturating_add(since).unwrap_or(at))
    }

    fn told(&self, at: jiff::Timestamp) {
        if self.now().is_some_and(|now| now >= at) {
            return;
        }
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((at, Instant::now()));
    }
}

impl Shared {
    /// Takes `read` as the ledger in force if it can be believed and is
    /// ahead of the one held. Returns whether it was taken.
    fn take(&self, read: Ledger) -> bool {
        if let Err(e) = read.check(self.clock.now()) {
            self.refuse("invalid", &e.to_string());
            return false;
        }
        let held = self.held.load_full();
        if let Some(held) = held.as_deref() {
            match read.relation(held) {
                Relation::Ahead => {}
                // A late watch event, or an older copy put back: the next
                // probe writes the held one over it.
                Relation::Same | Relation::Behind => {
                    self.believed();
                    return false;
                }
                Relation::Diverged(why) => {
                    self.refuse("diverged", &why);
                    return false;
                }
            }
        }
        if read.schema > SCHEMA {
            self.count("newer_schema");
        }
        self.believed();
        let found = read.conclude(self.window);
        self.held.store(Some(Arc::new(read)));
        if let Some(found) = found {
            self.live.set_discovered(found);
        }
        true
    }

    fn refuse(&self, reason: &'static str, why: &str) {
        self.count(reason);
        self.metrics.timeline.ledger_refused_now.set(1);
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        if refused.as_deref() != Some(why) {
            let generation = self.live.effective().load().generation.number;
            tracing::error!(
                reason,
                why,
                generation,
                "the stored generation ledger is refused: it is neither written over nor followed, and the last valid ledger stays in force; restore it or delete the ConfigMap (the replicas write back the one they hold)"
            );
            *refused = Some(why.to_owned());
        }
    }

    fn count(&self, reason: &'static str) {
        self.metrics
            .timeline
            .ledger_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    fn believed(&self) {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        if refused.take().is_some() {
            tracing::info!("the stored generation ledger is believed again");
        }
        self.metrics.timeline.ledger_refused_now.set(0);
    }
}

/// Every replica follows the ledger, so all of them stamp what any one of
/// them discovered within a watch event's delay. A replica that holds no
/// valid ledger stays unready rather than stamp something else than the
/// replicas that do.
async fn watch_ledger(
    client: Client,
    api: Api<ConfigMap>,
    name: String,
    synced: Arc<AtomicBool>,
    shared: Arc<Shared>,
) {
    match crate::cluster::server_date(&client).await {
        Ok(at) => shared.clock.told(at),
        Err(error) => {
            tracing::debug!(%error, "the API server's clock is unknown until the first probe")
        }
    }
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let events = watcher::watcher(api, config).backoff(crate::cluster::CappedBackoff::default());
    let mut events = std::pin::pin!(events);
    let mut failing = false;
    let mut refused_in_list = false;
    while let Some(event) = events.next().await {
        // `Init` starts a relist before any request is answered.
        if event
            .as_ref()
            .is_ok_and(|e| !matches!(e, watcher::Event::Init))
        {
            shared.reach.answered(Caller::LedgerWatch);
        }
        match event {
            Ok(watcher::Event::Apply(map) | watcher::Event::InitApply(map)) => {
                failing = false;
                let taken = match store::parse(&name, &map) {
                    Ok(read) => shared.take(read) || shared.held.load().is_some(),
                    Err(error) => {
                        shared.refuse("invalid", &error.to_string());
                        false
                    }
                };
                refused_in_list = !taken && shared.held.load().is_none();
                if taken && !synced.swap(true, Ordering::AcqRel) {
                    tracing::info!(ledger = %name, "ledger read; ready to stamp what it says");
                }
            }
            Ok(watcher::Event::InitDone) => {
                failing = false;
                if refused_in_list {
                    tracing::error!(ledger = %name, "no valid generation ledger is held: unready, so that this replica never stamps something else than the others");
                } else if !synced.swap(true, Ordering::AcqRel) {
                    tracing::info!(ledger = %name, "ledger read; ready to stamp what it says");
                }
            }
            Ok(watcher::Event::Init) => refused_in_list = false,
            // A deleted ledger is written again from memory by the next
            // probe; until then the last one stays in force.
            Ok(watcher::Event::Delete(_)) => {}
            Err(error) if crate::cluster::watch_no_answer(&error) => {
                shared.reach.no_answer(Caller::LedgerWatch, &error);
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

async fn probe_loop(
    client: Client,
    servers: ApiServers,
    api: Api<ConfigMap>,
    settings: Settings,
    shared: Arc<Shared>,
) {
    let store = store::Store::new(api, settings.ledger.clone());
    let canaries = canary::Canaries::new(
        &client,
        settings.account.clone(),
        format!("{}-canary", settings.ledger),
    );
    let started = Instant::now();
    let mut last_success: Option<Instant> = None;
    let mut failing = false;
    let metrics = shared.metrics.clone();
    // Each request gets an interval, and at least 5 s; a stuck API server
    // must not stop the loop from reporting its age.
    let timeout = settings.interval.max(Duration::from_secs(5));
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let outcome = discover(
            &client, &servers, &canaries, &store, &settings, &shared, timeout,
        )
        .await;
        match outcome {
            Ok(ledger) => {
                shared.reach.answered(Caller::Discovery);
                last_success = Some(Instant::now());
                if let Some(now) = shared.clock.now() {
                    metrics.discovery_last_success.set(now.as_second());
                }
                if std::mem::take(&mut failing) {
                    tracing::info!("discovery recovered");
                }
                shared.take(ledger);
            }
            Err(error) => {
                metrics
                    .discovery_errors
                    .get_or_create(&StageLabels {
                        stage: error.stage().as_str(),
                    })
                    .inc();
                let generation = shared.live.effective().load().generation.number;
                if let DiscoveryError::Refused {
                    reason, message, ..
                } = &error
                {
                    shared.refuse(reason, message);
                } else if error.no_answer() {
                    shared.reach.no_answer(Caller::Discovery, &error);
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

/// One round: every API server probed, the round recorded in the ledger.
async fn discover(
    client: &Client,
    servers: &ApiServers,
    canaries: &canary::Canaries,
    store: &store::Store,
    settings: &Settings,
    shared: &Shared,
    timeout: Duration,
) -> Result<Ledger, DiscoveryError> {
    let round::Probed {
        mut round,
        answered,
    } = round::probe_all(client, servers, settings, timeout).await?;
    shared.clock.told(round.at);
    let held = shared.held.load_full();
    // Canaries speak only for a round of every server.
    if round.coverage == Coverage::Every {
        match canaries.review(&answered, held.as_deref(), round.at).await {
            Ok(reviews) => round.canaries = reviews,
            Err(error) => tracing::debug!(%error, "the canaries were not reviewed this round"),
        }
    }
    let file = shared.live.file();
    let declared = Declared {
        first_number: file.declared.generation.number,
        next_issuer: file.declared.next_issuer.clone(),
        retiring_key_ids: file.declared.retiring_key_ids.clone(),
        retired_issuers: file.declared.retired_issuers.clone(),
    };
    let conflicts = &shared.metrics.timeline.ledger_write_conflicts;
    let (ledger, events) = tokio::time::timeout(
        timeout,
        store.update(held.as_deref(), shared.clock.now(), conflicts, |l| {
            l.observe_round(&round, &declared, shared.window)
        }),
    )
    .await
    .map_err(|_| DiscoveryError::Timeout {
        stage: Stage::Ledger,
        timeout,
    })??;
    round::tell(&events, &shared.metrics);
    round::count_servers(&round, &ledger, &shared.metrics);
    if let Some(server) = answered.first()
        && let Err(error) = canaries.keep(server, &ledger, round.at).await
    {
        shared
            .metrics
            .discovery_errors
            .get_or_create(&StageLabels {
                stage: Stage::Canary.as_str(),
            })
            .inc();
        tracing::debug!(%error, "the canary of the generation in force was not kept this round");
    }
    Ok(ledger)
}
