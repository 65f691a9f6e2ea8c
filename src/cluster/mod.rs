//! The one room that talks to the API server: it builds the client, and
//! holds every request and watch issuer-guard makes (the legacy token
//! Secret cache; with `--tls-secret` the Secret holding issuer-guard's own
//! certificates and the webhook configurations whose caBundle it keeps,
//! `tls_secret` and `webhook_configurations`), with the watch backoff and
//! the reachability they share. Discovery's probe and ledger store still
//! make their own requests through the client they are handed; `status`
//! and `restart` will put theirs here. Reviews never call the API server.

mod apiservers;
mod backoff;
mod pages;
mod reach;
mod secrets;
mod tls_secret;
mod webhook_configurations;
mod workloads;

use std::{
    ffi::{OsStr, OsString},
    sync::Arc,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::PartialObjectMeta,
    config::{InClusterError, KubeConfigOptions, Kubeconfig, KubeconfigError},
    runtime::{WatchStreamExt, watcher},
};
use tokio::task::JoinHandle;

pub(crate) use apiservers::{Addresses, ApiServers, Targets};
pub(crate) use backoff::CappedBackoff;
#[cfg(feature = "test-support")]
pub(crate) use pages::page_items;
pub(crate) use pages::{list_page_texts, list_pages, percent};
pub(crate) use reach::{Caller, Reachability, no_answer, watch_no_answer};
pub(crate) use secrets::LegacyTokenCache;
pub(crate) use tls_secret::{Stored, TlsSecret, Written};
pub(crate) use webhook_configurations::{Registered, WebhookConfigurations};
pub(crate) use workloads::{Workloads, path as workload_path};

use crate::metrics::Metrics;

/// A watch that has failed for longer than this is logged at WARN: reviews
/// are then judged against a cache that may miss new legacy token Secrets.
pub(crate) const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("--kubeconfig/KUBECONFIG names no file")]
    EmptyKubeconfig,
    #[error("cannot load the kubeconfig: {0}")]
    Kubeconfig(#[from] KubeconfigError),
    #[error("cannot load the in-cluster configuration: {0}")]
    InCluster(#[from] InClusterError),
    #[error("cannot create the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error("--apiserver-endpoints: not a URL: {0}")]
    Endpoint(String),
}

/// Where the client configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A `$PATH`-like list of kubeconfig files.
    Kubeconfig(OsString),
    InCluster,
}

impl Credentials {
    /// `None` when no API server is configured. A developer's
    /// ~/.kube/config is never picked up on its own: a webhook that silently
    /// watched whatever cluster the shell points at would be a surprise.
    pub fn pick(kubeconfig: Option<&OsStr>, in_cluster: bool) -> Option<Self> {
        match kubeconfig {
            Some(k) if !k.is_empty() => Some(Credentials::Kubeconfig(k.to_owned())),
            _ if in_cluster => Some(Credentials::InCluster),
            _ => None,
        }
    }
}

/// The client, and its configuration, which discovery copies to reach each
/// API server by its own address.
pub(crate) async fn connect(source: &Credentials) -> Result<(Client, kube::Config), ClusterError> {
    let config = config(source).await?;
    Ok((Client::try_from(config.clone())?, config))
}

async fn config(source: &Credentials) -> Result<kube::Config, ClusterError> {
    config_with(source, &KubeConfigOptions::default()).await
}

/// The client a person's command uses, found as kubectl finds it: the
/// kubeconfig named, else `$KUBECONFIG` or `~/.kube/config`, else the
/// in-cluster account; with `context` instead of the current one.
pub(crate) async fn connect_as_kubectl(
    kubeconfig: Option<&OsStr>,
    context: Option<&str>,
) -> Result<Client, ClusterError> {
    Ok(Client::try_from(
        config_as_kubectl(kubeconfig, context).await?,
    )?)
}

/// [`connect_as_kubectl`] without kube's own retries: a 429 or 503 comes
/// back at once. An eviction a PodDisruptionBudget refuses is a 429, which
/// the default client would retry with backoff for many minutes; `restart`
/// decides itself how long to wait.
pub(crate) async fn connect_as_kubectl_once(
    kubeconfig: Option<&OsStr>,
    context: Option<&str>,
) -> Result<Client, ClusterError> {
    let mut config = config_as_kubectl(kubeconfig, context).await?;
    config.default_retry = false;
    Ok(Client::try_from(config)?)
}

async fn config_as_kubectl(
    kubeconfig: Option<&OsStr>,
    context: Option<&str>,
) -> Result<kube::Config, ClusterError> {
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..KubeConfigOptions::default()
    };
    let config = match kubeconfig.filter(|k| !k.is_empty()) {
        Some(list) => config_with(&Credentials::Kubeconfig(list.to_owned()), &options).await?,
        None => match Kubeconfig::read() {
            Ok(found) => kube::Config::from_custom_kubeconfig(found, &options).await?,
            Err(_) => kube::Config::incluster()?,
        },
    };
    Ok(config)
}

async fn config_with(
    source: &Credentials,
    options: &KubeConfigOptions,
) -> Result<kube::Config, ClusterError> {
    Ok(match source {
        Credentials::Kubeconfig(list) => {
            let mut merged: Option<Kubeconfig> = None;
            for path in std::env::split_paths(list).filter(|p| !p.as_os_str().is_empty()) {
                let next = Kubeconfig::read_from(&path)?;
                merged = Some(match merged {
                    Some(m) => m.merge(next)?,
                    None => next,
                });
            }
            let merged = merged.ok_or(ClusterError::EmptyKubeconfig)?;
            kube::Config::from_custom_kubeconfig(merged, options).await?
        }
        Credentials::InCluster => kube::Config::incluster()?,
    })
}

/// Splits `FIRST/SECOND` (a ledger's NAMESPACE/NAME, an owner's KIND/NAME)
/// into its two non-empty parts.
pub(crate) fn split_pair(text: &str) -> Option<(String, String)> {
    text.split_once('/')
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
}

/// The API server's clock: the `Date` of its answer to `GET /version`.
/// Discovery checks the ledger's times against it before any probe has
/// brought a token's `iat`, never against this replica's clock.
pub(crate) async fn server_date(client: &Client) -> Result<jiff::Timestamp, String> {
    let request = http::Request::get("/version")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let response = client
        .send(request.map(kube::client::Body::from))
        .await
        .map_err(|e| e.to_string())?;
    let date = response
        .headers()
        .get(http::header::DATE)
        .and_then(|d| d.to_str().ok())
        .ok_or("the answer has no Date header")?;
    jiff::fmt::rfc2822::parse(date)
        .map(|z| z.timestamp())
        .map_err(|e| format!("Date {date:?}: {e}"))
}

/// A small page keeps a relist's peak low: every replica relists at once
/// after an API server restart, and each object's metadata can carry a
/// large `last-applied-configuration`.
const PAGE_SIZE: u32 = 100;

/// Keeps `cache` current from a metadata-only watch of the legacy token
/// Secrets: metadata carries the annotation that marks a legacy token, and
/// never the token itself. Every error is retried, 410 Gone (a resumed watch after an
/// API server restart; the watcher relists) and the 403s of an API server
/// whose RBAC caches are still loading included, with a short capped
/// backoff. How long the watch has been failing is a metric, and past
/// [`STALE_AFTER`] a warning.
pub(crate) fn watch_secrets(
    client: Client,
    cache: Arc<LegacyTokenCache>,
    metrics: Arc<Metrics>,
    reach: Arc<Reachability>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // An Api over PartialObjectMeta makes metadata-only requests (what
        // the deprecated `metadata_watcher` did).
        let api = Api::<PartialObjectMeta<Secret>>::all(client);
        // The API server filters on the type (a field selector Secrets
        // support), so a cluster's other Secrets, however many and however
        // large their annotations, never reach issuer-guard.
        let config = watcher::Config::default()
            .fields(&crate::rules::legacy_token_selector())
            .page_size(PAGE_SIZE);
        let events = watcher::watcher(api, config).backoff(backoff::CappedBackoff::default());
        let mut events = std::pin::pin!(events);
        let mut failing_since: Option<std::time::Instant> = None;
        let mut warned = false;
        // The streak is an outage, which the reachability line covers.
        let mut outage = false;
        loop {
            let next = tokio::time::timeout(std::time::Duration::from_secs(5), events.next()).await;
            match next {
                // Quiet: nothing changed, nothing failed.
                Err(_) => {}
                Ok(None) => break,
                Ok(Some(Ok(event))) => {
                    // `Init` starts a relist before any request is answered.
                    if !matches!(event, watcher::Event::Init) {
                        reach.answered(Caller::SecretWatch);
                    }
                    // Init starts every relist attempt, even one that then
                    // fails; only a finished list or a watched change shows
                    // the cache is in sync again.
                    let in_sync = matches!(
                        event,
                        watcher::Event::InitDone
                            | watcher::Event::Apply(_)
                            | watcher::Event::Delete(_)
                    );
                    if in_sync && failing_since.take().is_some() {
                        if !std::mem::take(&mut outage) {
                            tracing::info!("Secret watch recovered");
                        }
                        warned = false;
                    }
                    cache.apply(event);
                }
                Ok(Some(Err(error))) => {
                    let first = failing_since.is_none();
                    let since = *failing_since.get_or_insert_with(std::time::Instant::now);
                    if watch_no_answer(&error) {
                        // An outage is logged once for all of issuer-guard,
                        // and that line says the cache is what reviews use.
                        reach.no_answer(Caller::SecretWatch, &error);
                        outage = true;
                    } else if first {
                        // The first failure of a streak is worth a line;
                        // every retry after it is not, until it is long.
                        tracing::info!(%error, "Secret watch failed; retrying");
                    } else {
                        tracing::debug!(%error, "Secret watch failed again; retrying");
                    }
                    if !warned && !outage && since.elapsed() >= STALE_AFTER {
                        tracing::warn!(%error, failing_for = ?since.elapsed(), "Secret watch failing; new legacy token Secrets may be missed until it recovers");
                        warned = true;
                    }
                }
            }
            let stale = failing_since.map_or(0, |s| s.elapsed().as_secs());
            metrics
                .secret_watch_failing_seconds
                .set(i64::try_from(stale).unwrap_or(i64::MAX));
        }
        tracing::error!("Secret watch ended; legacy token Secrets are no longer updated");
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_kubeconfig_then_in_cluster_then_nothing() {
        let k = OsStr::new("/tmp/kc");
        assert_eq!(
            Credentials::pick(Some(k), true),
            Some(Credentials::Kubeconfig(k.to_owned()))
        );
        assert_eq!(Credentials::pick(None, true), Some(Credentials::InCluster));
        assert_eq!(Credentials::pick(Some(OsStr::new("")), false), None);
        assert_eq!(Credentials::pick(None, false), None);
    }

    #[tokio::test]
    async fn unreadable_kubeconfig_is_an_error() {
        let result = connect(&Credentials::Kubeconfig("/nonexistent/kubeconfig".into())).await;
        assert!(
            matches!(result, Err(ClusterError::Kubeconfig(_))),
            "{:?}",
            result.err()
        );
    }
}
