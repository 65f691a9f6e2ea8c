//! The start-up steps of `serve`, in the order `run_with_routes` takes them:
//! the TLS stack, the configuration, then what needs the cluster (the
//! certificate from a Secret, the Secret cache, discovery). Each returns what
//! the later steps and the listeners need, so that the order is visible in
//! one short function.

use std::{
    path::PathBuf,
    sync::{Arc, atomic::AtomicBool},
};

use rustls::{crypto::CryptoProvider, server::danger::ClientCertVerifier, sign::CertifiedKey};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::{
    DiscoveryArgs, ServerError, Settings, client_auth, devcert, health,
    self_tls::{self, SelfTlsError},
    signals::Signals,
    tls::{self, PairFiles, ReloadingCert, TlsError},
};
use crate::{
    cluster::{self, Addresses, ApiServers, ClusterError, LegacyTokenCache, Reachability},
    config::Config,
    discovery::{self, Discovery},
    live::Live,
    metrics::Metrics,
    reload,
};

/// What must hold, or be in place, before anything is loaded: a body budget
/// that fits the largest review, the signal handlers (so that a signal sent
/// during start-up is not lost) and the open-files limit.
pub(super) fn preflight(args: &Settings) -> Result<Signals, ServerError> {
    if args.max_inflight_bytes < args.max_body_bytes {
        return Err(ServerError::Budget {
            budget: args.max_inflight_bytes,
            max_body: args.max_body_bytes,
        });
    }
    let signals = Signals::install().map_err(ServerError::Signals)?;
    match health::raise_open_files_limit() {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open files limit"),
    }
    Ok(signals)
}

/// What serves TLS from the first handshake.
pub(super) struct Tls {
    pub serving: Serving,
    pub cert: Arc<ReloadingCert>,
    pub acceptor: TlsAcceptor,
    pub client_ca_watch: Option<JoinHandle<()>>,
}

/// The certificate to serve (or a placeholder until the Secret's pair is
/// loaded), the client CA with `--client-ca`, and the acceptor built on them.
pub(super) fn tls(
    args: &Settings,
    provider: &Arc<CryptoProvider>,
    metrics: &Arc<Metrics>,
) -> Result<Tls, ServerError> {
    let (serving, initial) = serving(args, provider)?;
    if let Serving::Files { loaded, .. } = &serving {
        metrics.tls_cert_not_after.set(loaded.facts.not_after);
    }
    let cert = Arc::new(ReloadingCert::new(initial));
    let mut client_ca_watch = None;
    let mut verifier: Option<Arc<dyn ClientCertVerifier>> = None;
    if let Some(path) = &args.client_ca {
        let pem = reload::read_all(std::slice::from_ref(path))
            .map_err(TlsError::from)?
            .pop()
            .unwrap_or_default();
        let initial = client_auth::verifier(path, &pem, provider)?;
        let reloading = Arc::new(client_auth::ReloadingClientVerifier::new(initial));
        tracing::info!(client_ca = %path.display(), "clients must present a certificate signed by the client CA");
        verifier = Some(reloading.clone());
        client_ca_watch = Some(client_auth::watch(
            path.clone(),
            pem,
            args.reload_interval,
            provider.clone(),
            reloading,
            metrics.clone(),
        ));
    }
    let config = tls::server_config(provider.clone(), cert.clone(), verifier)?;
    Ok(Tls {
        serving,
        cert,
        acceptor: TlsAcceptor::from(Arc::new(config)),
        client_ca_watch,
    })
}

/// The `--config` file and the bytes already read from it, for its watch.
pub(super) type ConfigFile = (PathBuf, Vec<u8>);

/// The configuration in force at start, and the file to watch.
pub(super) fn config(
    args: &Settings,
    metrics: &Arc<Metrics>,
) -> Result<(Arc<Live>, Option<ConfigFile>), ServerError> {
    let (config, seen) = match &args.config {
        Some(path) => {
            let loaded = Config::load(path)?;
            (loaded.config, Some((path.clone(), loaded.bytes)))
        }
        None => (Config::embedded_default(), None),
    };
    tracing::info!(
        config = args.config.as_ref().map_or_else(|| "(embedded default)".to_owned(), |p| p.display().to_string()),
        generation = config.generation.number,
        mode = ?config.policy.mode,
        rotation_declared = config.rotation.declared(),
        "config loaded"
    );
    Ok((Live::new(config, metrics.clone()), seen))
}

/// What the cluster side started, for readiness, the review and the
/// watches.
pub(super) struct Cluster {
    pub secrets: Arc<LegacyTokenCache>,
    pub ledger_read: Option<Arc<AtomicBool>>,
    pub self_tls: Option<Arc<self_tls::Status>>,
    /// The serving pair's files, to be watched; `None` with `--tls-secret`.
    pub files: Option<(PairFiles, tls::LoadedPair)>,
    _self_tls_task: Option<JoinHandle<()>>,
    _discovery: Option<Discovery>,
}

/// Connects to the API server when one is configured and starts, in this
/// order, the certificate from `--tls-secret` (so that its loop runs while
/// the rest starts up), the Secret cache and discovery.
pub(super) async fn cluster(
    args: &Settings,
    serving: Serving,
    cert: &Arc<ReloadingCert>,
    provider: &Arc<CryptoProvider>,
    live: &Arc<Live>,
    metrics: &Arc<Metrics>,
) -> Result<Cluster, ServerError> {
    let (client, config) = match &args.cluster {
        Some(source) => {
            let (client, config) = cluster::connect(source).await?;
            (Some(client), Some(config))
        }
        None => (None, None),
    };
    let reach = Arc::new(Reachability::default());
    let (files, self_tls, self_tls_task) = match (serving, &client) {
        (Serving::Secret(settings), Some(client)) => {
            let wiring = self_tls::Wiring {
                client: client.clone(),
                cert: cert.clone(),
                provider: provider.clone(),
                metrics: metrics.clone(),
                reach: reach.clone(),
                expiry_warning: args.cert_expiry_warning,
            };
            let (status, task) = self_tls::spawn(settings, wiring);
            (None, Some(status), Some(task))
        }
        (Serving::Secret(_), None) => return Err(SelfTlsError::WithoutCluster.into()),
        (Serving::Files { pair, loaded }, _) => (Some((pair, loaded)), None, None),
    };
    let secrets = secret_cache(
        client.clone().filter(|_| args.watch_secrets),
        args.cluster.is_some(),
        metrics,
        &reach,
    );
    let discovery = match (&args.discovery, client.zip(config)) {
        (None, _) => {
            tracing::info!(
                "discovery off (no --service-account): stamping generation.static from the config"
            );
            None
        }
        (Some(_), None) => return Err(ServerError::DiscoveryWithoutCluster),
        (Some(d), Some((client, config))) => {
            let settings = discovery_settings(d)?;
            tracing::info!(account = %d.account, ledger = %settings.ledger, interval = ?settings.interval, window = ?settings.window, "discovering the issuer generation from the API server");
            let addresses = if d.apiserver_endpoints.is_empty() {
                Addresses::EndpointSlices
            } else {
                Addresses::Pinned(d.apiserver_endpoints.clone())
            };
            tracing::info!(servers = ?addresses, "probing every API server");
            let servers = ApiServers::new(config, addresses);
            Some(discovery::spawn(
                client,
                servers,
                settings,
                live.clone(),
                metrics.clone(),
                reach,
            ))
        }
    };
    Ok(Cluster {
        secrets,
        ledger_read: discovery.as_ref().map(|d| d.synced.clone()),
        self_tls,
        files,
        _self_tls_task: self_tls_task,
        _discovery: discovery,
    })
}

/// Where the served certificate comes from.
pub(super) enum Serving {
    /// --tls-cert/--tls-key, or the development pair: files, reloaded when
    /// they change.
    Files {
        pair: PairFiles,
        loaded: tls::LoadedPair,
    },
    /// --tls-secret: issued, rotated and published by `self_tls`.
    Secret(self_tls::Settings),
}

/// The source of the served certificate, and what to serve from the first
/// handshake: the files' pair, or with --tls-secret a placeholder until the
/// Secret's pair is loaded (the replica is unready meanwhile).
fn serving(
    args: &Settings,
    provider: &CryptoProvider,
) -> Result<(Serving, CertifiedKey), ServerError> {
    let files = args.tls_cert.is_some() || args.tls_key.is_some();
    if let Some(settings) = self_tls::Settings::new(&args.self_tls, files, args.cluster.is_some())?
    {
        let placeholder = self_tls::placeholder(&settings, provider)?;
        return Ok((Serving::Secret(settings), placeholder));
    }
    let pair = pair_files(args)?;
    let loaded = pair.load(provider)?;
    let key = loaded.key.clone();
    Ok((Serving::Files { pair, loaded }, key))
}

fn pair_files(args: &Settings) -> Result<PairFiles, TlsError> {
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Ok(PairFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None) => {
            let dev = devcert::ensure(&args.dev_cert_dir)?;
            tracing::info!(
                ca = %dev.ca.display(),
                created = dev.created,
                "serving a development certificate for localhost and 127.0.0.1; clients must trust the CA"
            );
            Ok(PairFiles {
                cert: dev.cert,
                key: dev.key,
            })
        }
        _ => Err(TlsError::PartialFlags),
    }
}

fn secret_cache(
    client: Option<kube::Client>,
    cluster: bool,
    metrics: &Arc<Metrics>,
    reach: &Arc<Reachability>,
) -> Arc<LegacyTokenCache> {
    let gauge = metrics.legacy_token_secrets.clone();
    match client {
        Some(client) => {
            tracing::info!(
                selector = %crate::rules::legacy_token_selector(),
                "watching the metadata of legacy service-account token Secrets"
            );
            let cache = Arc::new(LegacyTokenCache::new(gauge));
            // Runs for the life of the process; nothing waits for it.
            let _watch = cluster::watch_secrets(
                client,
                cache.clone(),
                Arc::clone(metrics),
                Arc::clone(reach),
            );
            cache
        }
        None if cluster => {
            tracing::info!(
                "Secret watch off (--watch-secrets=false): the legacy-token rules know no Secrets, so only projected tokens are judged"
            );
            Arc::new(LegacyTokenCache::without_cluster(gauge))
        }
        None => {
            tracing::info!(
                "no cluster configured: the legacy-token rules know no Secrets, so only projected tokens are judged"
            );
            Arc::new(LegacyTokenCache::without_cluster(gauge))
        }
    }
}

fn discovery_settings(d: &DiscoveryArgs) -> Result<discovery::Settings, ServerError> {
    if d.window < d.interval * 2 {
        return Err(ServerError::DiscoveryWindow {
            window: d.window,
            interval: d.interval,
        });
    }
    for url in &d.apiserver_endpoints {
        match url.parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("https") && u.host().is_some() => {}
            _ => {
                return Err(
                    ClusterError::Endpoint(format!("{url:?} (give https://HOST:PORT)")).into(),
                );
            }
        }
    }
    Ok(discovery::Settings {
        account: d.account.parse()?,
        ledger: d.ledger.clone(),
        interval: d.interval,
        window: d.window,
        audience: d.audience.clone(),
    })
}
