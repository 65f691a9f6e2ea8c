//! The `serve` runtime: loads the certificate, the config and the cluster
//! view, serves the webhooks over TLS and health on plain HTTP, reloads
//! files as they change, and drains on SIGTERM.

mod accept;
mod allocator;
mod budget;
mod client_auth;
#[cfg(not(feature = "test-support"))]
mod devcert;
#[cfg(feature = "test-support")]
pub mod devcert;
mod health;
mod issue;
mod readiness;
mod routes;
mod self_tls;
mod settings;
mod signals;
mod tls;

use std::{net::SocketAddr, sync::Arc};

use axum::Router;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use allocator::tune as tune_allocator;
pub use self_tls::SelfTlsError;
pub use settings::{DiscoveryArgs, SelfTlsArgs, Settings};

use crate::{
    admission::Webhook,
    cluster::{self, ClusterError, LegacyTokenCache},
    config::{self, Config, ConfigError, Live},
    discovery::{self, DiscoveryError},
    metrics::Metrics,
    reload,
};
use accept::{Drained, Limits};
use readiness::Readiness;
use signals::Signals;
use tls::{PairFiles, ReloadingCert, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error(transparent)]
    SelfTls(#[from] SelfTlsError),
    #[error(
        "--service-account turns discovery on, which needs an API server: give --kubeconfig, run in a cluster, or drop --service-account (and --no-cluster)"
    )]
    DiscoveryWithoutCluster,
    #[error(
        "--discovery-window ({window:?}) must be at least twice --discovery-interval ({interval:?}), or every probe falls outside it"
    )]
    DiscoveryWindow {
        window: std::time::Duration,
        interval: std::time::Duration,
    },
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "--max-inflight-bytes ({budget}) is below --max-body-bytes ({max_body}): the largest review could never be read; raise it"
    )]
    Budget { budget: usize, max_body: usize },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Runs until SIGTERM or SIGINT and a drain. Errors are start-up errors;
/// once serving, failures are logged and the process keeps serving.
pub async fn run(args: Settings) -> Result<(), ServerError> {
    run_with_routes(args, routes::reviews).await
}

/// What the review handlers need: the webhook and the metrics they record.
#[derive(Clone)]
pub struct Reviews {
    pub webhook: Arc<Webhook>,
    pub metrics: Arc<Metrics>,
}

/// [`run`] with other handlers on the webhook listener: `handlers` gets what
/// `run` would serve with and returns the router for the TLS listener.
/// Everything else is `run`'s own: certificate, TLS configuration, accept
/// loop, HTTP server, body limit and deadline layers, health listener,
/// reloads and drain. The benchmark's null webhook (examples/null-webhook.rs)
/// uses it to measure the stack without the review.
pub async fn run_with_routes(
    args: Settings,
    handlers: impl FnOnce(Reviews) -> Router,
) -> Result<(), ServerError> {
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
    let metrics = Arc::new(Metrics::new());
    let provider = tls::provider();

    let (serving, initial) = serving(&args, &provider)?;
    if let Serving::Files { loaded, .. } = &serving {
        metrics.tls_cert_not_after.set(loaded.facts.not_after);
    }
    let cert = Arc::new(ReloadingCert::new(initial));
    let client_auth = match &args.client_ca {
        Some(path) => {
            let pem = reload::read_all(std::slice::from_ref(path))
                .map_err(TlsError::from)?
                .pop()
                .unwrap_or_default();
            let initial = client_auth::verifier(path, &pem, &provider)?;
            let verifier = Arc::new(client_auth::ReloadingClientVerifier::new(initial));
            tracing::info!(client_ca = %path.display(), "clients must present a certificate signed by the client CA");
            Some((path.clone(), pem, verifier))
        }
        None => None,
    };
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(
        provider.clone(),
        cert.clone(),
        client_auth
            .as_ref()
            .map(|(_, _, v)| Arc::clone(v) as Arc<dyn rustls::server::danger::ClientCertVerifier>),
    )?));
    let _client_ca_watch = client_auth.map(|(path, pem, verifier)| {
        client_auth::watch(
            path,
            pem,
            args.reload_interval,
            provider.clone(),
            verifier,
            metrics.clone(),
        )
    });

    let (config, config_seen) = match &args.config {
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
    let live = Live::new(config, metrics.clone());

    let client = match &args.cluster {
        Some(source) => Some(cluster::client(source).await?),
        None => None,
    };
    let reach = Arc::new(cluster::Reachability::default());
    // With --tls-secret the certificate comes from the cluster, so its loop
    // starts as soon as there is a client, while the rest starts up.
    let (serving, self_tls) = match (serving, &client) {
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
            (None, Some((status, task)))
        }
        (Serving::Secret(_), None) => return Err(SelfTlsError::WithoutCluster.into()),
        (Serving::Files { pair, loaded }, _) => (Some((pair, loaded)), None),
    };
    let secrets = secret_cache(
        client.clone().filter(|_| args.watch_secrets),
        args.cluster.is_some(),
        &metrics,
        &reach,
    );
    let discovery = match (&args.discovery, client) {
        (None, _) => {
            tracing::info!(
                "discovery off (no --service-account): stamping generation.static from the config"
            );
            None
        }
        (Some(_), None) => return Err(ServerError::DiscoveryWithoutCluster),
        (Some(d), Some(client)) => {
            let settings = discovery_settings(d)?;
            tracing::info!(account = %d.account, ledger = %settings.ledger, interval = ?settings.interval, window = ?settings.window, "discovering the issuer generation from the API server");
            Some(discovery::spawn(
                client,
                settings,
                live.clone(),
                metrics.clone(),
                reach,
            ))
        }
    };
    let readiness = Arc::new(Readiness::new(
        secrets.clone(),
        discovery.as_ref().map(|d| d.synced.clone()),
        self_tls.as_ref().map(|(status, _)| status.clone()),
    ));
    let webhook = Arc::new(Webhook::new(live.effective(), secrets));

    let listener = bind("webhook", args.listen).await?;
    let health_listener = bind("health", args.health_listen).await?;
    let webhook_addr = local_addr(&listener, args.listen);
    let health_addr = local_addr(&health_listener, args.health_listen);

    let _expiry_watch = tls::watch_expiry(metrics.clone(), args.cert_expiry_warning);
    let _cert_watch = serving.map(|(pair, loaded)| {
        pair.watch(
            &loaded,
            args.reload_interval,
            provider,
            cert,
            metrics.clone(),
            args.cert_expiry_warning,
        )
    });
    let _config_watch = config_seen.map(|(path, seen)| {
        config::watch(
            path,
            seen,
            args.reload_interval,
            live.clone(),
            metrics.clone(),
        )
    });

    let health_app = routes::health(readiness.clone(), metrics.clone());
    let health = tokio::spawn(health::serve(health_listener, health_app));

    tracing::info!(webhook = %webhook_addr, health = %health_addr, "listening");
    let reviews = Reviews {
        webhook,
        metrics: metrics.clone(),
    };
    let budget = budget::Budget::new(
        args.max_inflight_bytes,
        args.max_body_bytes,
        metrics.body_budget_waits.clone(),
    );
    let trim = budget.trim_after_bursts();
    let app = routes::webhooks(
        handlers(reviews),
        args.max_body_bytes,
        args.request_timeout,
        budget,
        readiness.clone(),
    );
    let limits = Limits {
        handshake_timeout: args.request_timeout,
        grace: args.shutdown_grace,
    };
    let delay = args.shutdown_delay;
    let stop = async {
        let mut signals = signals;
        let signal = signals.recv().await;
        // Unready first, so that the Service stops sending new reviews here
        // while the ones already sent are answered. The API server keeps
        // sending to this pod until its endpoint is gone, so the listener
        // stays open for the delay.
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
    };
    match accept::serve(listener, acceptor, app, limits, stop).await {
        Drained::Clean => tracing::info!("all connections drained; exiting"),
        Drained::Cut(n) => tracing::warn!(
            connections = n,
            "shutdown grace ran out; cutting the remaining connections"
        ),
    }
    health.abort();
    trim.abort();
    Ok(())
}

/// Where the served certificate comes from.
enum Serving {
    /// --tls-cert/--tls-key, or the development pair: files, reloaded when
    /// they change.
    Files {
        pair: PairFiles,
        loaded: tls::Loaded,
    },
    /// --tls-secret: issued, rotated and published by `self_tls`.
    Secret(self_tls::Settings),
}

/// The source of the served certificate, and what to serve from the first
/// handshake: the files' pair, or with --tls-secret a placeholder until the
/// Secret's pair is loaded (the replica is unready meanwhile).
fn serving(
    args: &Settings,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<(Serving, rustls::sign::CertifiedKey), ServerError> {
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
    reach: &Arc<cluster::Reachability>,
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
    Ok(discovery::Settings {
        account: d.account.parse()?,
        ledger: d.ledger.clone(),
        interval: d.interval,
        window: d.window,
        audience: d.audience.clone(),
    })
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { what, addr, source })
}

/// The bound address, which differs from the requested one for port 0.
fn local_addr(listener: &TcpListener, requested: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(requested)
}
