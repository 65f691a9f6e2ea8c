//! The connection to the API server, used only to keep the legacy token
//! Secret cache current. Reviews never call the API server.

mod secrets;

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

pub use secrets::LegacyTokenCache;

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
}

/// Where the client configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A `$PATH`-like list of kubeconfig files.
    Kubeconfig(OsString),
    InCluster,
}

impl Source {
    /// `None` when no API server is configured. A developer's
    /// ~/.kube/config is never picked up on its own: a webhook that silently
    /// watched whatever cluster the shell points at would be a surprise.
    pub fn pick(kubeconfig: Option<&OsStr>, in_cluster: bool) -> Option<Self> {
        match kubeconfig {
            Some(k) if !k.is_empty() => Some(Source::Kubeconfig(k.to_owned())),
            _ if in_cluster => Some(Source::InCluster),
            _ => None,
        }
    }
}

pub async fn client(source: &Source) -> Result<Client, ClusterError> {
    let config = match source {
        Source::Kubeconfig(list) => {
            let mut merged: Option<Kubeconfig> = None;
            for path in std::env::split_paths(list).filter(|p| !p.as_os_str().is_empty()) {
                let next = Kubeconfig::read_from(&path)?;
                merged = Some(match merged {
                    Some(m) => m.merge(next)?,
                    None => next,
                });
            }
            let merged = merged.ok_or(ClusterError::EmptyKubeconfig)?;
            kube::Config::from_custom_kubeconfig(merged, &KubeConfigOptions::default()).await?
        }
        Source::InCluster => kube::Config::incluster()?,
    };
    Ok(Client::try_from(config)?)
}

/// Keeps `cache` current from a metadata-only watch of every Secret:
/// metadata carries the annotation that marks a legacy token, and never the
/// token itself. Errors are retried with backoff for the life of the process.
pub fn watch_secrets(client: Client, cache: Arc<LegacyTokenCache>) -> JoinHandle<()> {
    tokio::spawn(async move {
        // An Api over PartialObjectMeta makes metadata-only requests (what
        // the deprecated `metadata_watcher` did).
        let api = Api::<PartialObjectMeta<Secret>>::all(client);
        let events = watcher::watcher(api, watcher::Config::default()).default_backoff();
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => cache.apply(event),
                Err(error) => {
                    tracing::warn!(%error, "Secret watch failed; retrying");
                }
            }
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
            Source::pick(Some(k), true),
            Some(Source::Kubeconfig(k.to_owned()))
        );
        assert_eq!(Source::pick(None, true), Some(Source::InCluster));
        assert_eq!(Source::pick(Some(OsStr::new("")), false), None);
        assert_eq!(Source::pick(None, false), None);
    }

    #[tokio::test]
    async fn unreadable_kubeconfig_is_an_error() {
        let result = client(&Source::Kubeconfig("/nonexistent/kubeconfig".into())).await;
        assert!(
            matches!(result, Err(ClusterError::Kubeconfig(_))),
            "{:?}",
            result.err()
        );
    }
}
