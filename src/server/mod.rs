//! The `serve` runtime: loads the certificate, the config and the cluster
//! view, serves the webhooks over TLS and health on plain HTTP, reloads
//! files as they change, and drains on SIGTERM.

mod accept;
mod allocator;
mod budget;
mod client_auth;
// Public to the tests and benches through test-support; its items stay
// `pub` so that one source serves both builds.
#[cfg(not(feature = "test-support"))]
#[allow(unreachable_pub)]
mod devcert;
#[cfg(feature = "test-support")]
pub mod devcert;
pub(crate) mod health;
mod issue;
mod readiness;
mod routes;
mod self_tls;
mod settings;
mod signals;
mod startup;
mod tls;

use std::{net::SocketAddr, sync::Arc};

use axum::Router;
use tokio::net::TcpListener;

pub(crate) use allocator::trim as trim_allocator;
pub use allocator::{tune as tune_allocator, tune_lean as tune_allocator_lean};
pub use self_tls::SelfTlsError;
pub use settings::{DiscoveryArgs, SelfTlsArgs, Settings};

use crate::{
    admission::Webhook, cluster::ClusterError, config::ConfigError, discovery::DiscoveryError,
    live, metrics::Metrics,
};
use accept::{Drained, Limits};
use readiness::Readiness;
use tls::TlsError;

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
    run_with_routes(args, routes::review_router).await
}

/// What the review handlers need: the webhook and the metrics they record.
#[derive(Clone)]
pub struct ReviewState {
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
    handlers: impl FnOnce(ReviewState) -> Router,
) -> Result<(), ServerError> {
    let signals = startup::preflight(&args)?;
    let metrics = Arc::new(Metrics::new());
    let provider = tls::provider();

    let tls = startup::tls(&args, &provider, &metrics)?;
    let (live, config_file) = startup::config(&args, &metrics)?;
    let cluster =
        startup::cluster(&args, tls.serving, &tls.cert, &provider, &live, &metrics).await?;
    let readiness = Arc::new(Readiness::new(
        cluster.secrets.clone(),
        cluster.ledger_read,
        cluster.self_tls,
    ));
    let webhook = Arc::new(Webhook::new(live.effective(), cluster.secrets));

    let listener = bind("webhook", args.listen).await?;
    let health_listener = bind("health", args.health_listen).await?;
    let webhook_addr = local_addr(&listener, args.listen);
    let health_addr = local_addr(&health_listener, args.health_listen);

    // Each runs for the life of the process; the handles are kept so that
    // the tasks are not mistaken for detached ones.
    let _watches = [
        Some(tls::watch_expiry(metrics.clone(), args.cert_expiry_warning)),
        cluster.files.map(|(pair, loaded)| {
            pair.watch(
                &loaded,
                args.reload_interval,
                provider,
                tls.cert,
                metrics.clone(),
                args.cert_expiry_warning,
            )
        }),
        tls.client_ca_watch,
        config_file.map(|(path, seen)| {
            live::watch_config_file(
                path,
                seen,
                args.reload_interval,
                live.clone(),
                metrics.clone(),
            )
        }),
    ];

    let health_app = routes::health(readiness.clone(), metrics.clone());
    let health = tokio::spawn(health::serve(health_listener, health_app));
    tracing::info!(webhook = %webhook_addr, health = %health_addr, "listening");

    let waits = metrics.body_budget_waits.clone();
    let state = ReviewState { webhook, metrics };
    let (app, trim) = review_app(&args, handlers(state), readiness.clone(), waits);
    let limits = Limits {
        handshake_timeout: args.request_timeout,
        grace: args.shutdown_grace,
    };
    let stop = signals::unready_then_stop(signals, readiness, args.shutdown_delay);
    match accept::serve(listener, tls.acceptor, app, limits, stop).await {
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

/// The webhook listener's router around `handlers`: the body limit and
/// budget, the deadline and readiness layers; and the task that trims the
/// budget's memory after bursts.
fn review_app(
    args: &Settings,
    handlers: Router,
    readiness: Arc<Readiness>,
    waits: prometheus_client::metrics::counter::Counter,
) -> (Router, tokio::task::JoinHandle<()>) {
    let budget = budget::Budget::new(args.max_inflight_bytes, args.max_body_bytes, waits);
    let trim = budget.trim_after_bursts();
    let app = routes::webhooks(
        handlers,
        args.max_body_bytes,
        args.request_timeout,
        budget,
        readiness,
    );
    (app, trim)
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
