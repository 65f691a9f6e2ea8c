//! The Secret in which issuer-guard keeps its own CA and serving
//! certificate (`--tls-secret`): read, written under optimistic concurrency
//! (the resourceVersion read is the one written against, so of replicas
//! writing at once one wins and the others get 409 and read again), and
//! watched by name. What the keys mean is the caller's business; this file
//! only moves them.

use std::collections::BTreeMap;

use futures::Stream;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
    runtime::{WatchStreamExt, watcher},
};

/// What a Secret held when it was read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Stored {
    pub data: BTreeMap<String, Vec<u8>>,
    pub annotations: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// None for contents not read from the API server.
    pub resource_version: Option<String>,
    pub type_: Option<String>,
}

impl Stored {
    pub(crate) fn of(secret: Secret) -> Self {
        let meta = secret.metadata;
        Stored {
            data: secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect(),
            annotations: meta.annotations.unwrap_or_default(),
            labels: meta.labels.unwrap_or_default(),
            resource_version: meta.resource_version,
            type_: secret.type_,
        }
    }
}

/// How a write ended.
#[derive(Debug)]
pub(crate) enum Written {
    /// The Secret as now stored.
    Stored(Stored),
    /// Someone else wrote first (409): read again and decide again.
    Conflict,
}

pub(crate) struct TlsSecret {
    api: Api<Secret>,
    pub namespace: String,
    pub name: String,
}

/// The label on what issuer-guard creates itself.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "issuer-guard");
const ABOUT: (&str, &str) = (
    "issuer-guard.io/about",
    "issuer-guard's own CA and serving certificate (--tls-secret). Written and rotated by issuer-guard; do not edit. Deleted while issuer-guard runs, it is written back from what the replicas serve; deleted while none runs, a new CA is made.",
);

impl TlsSecret {
    pub(crate) fn new(client: Client, namespace: &str, name: &str) -> Self {
        TlsSecret {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    pub(crate) async fn get(&self) -> Result<Option<Stored>, kube::Error> {
        Ok(self.api.get_opt(&self.name).await?.map(Stored::of))
    }

    /// Creates the Secret when `read` is None, else replaces the one read,
    /// carrying its resourceVersion. `data` sets the keys it names and
    /// `annotations` the annotations it names (None removes one); the keys,
    /// annotations and labels of anyone else are kept.
    pub(crate) async fn write(
        &self,
        read: Option<&Stored>,
        data: BTreeMap<String, Option<Vec<u8>>>,
        annotations: BTreeMap<String, Option<String>>,
    ) -> Result<Written, kube::Error> {
        let mut all_data = read.map(|r| r.data.clone()).unwrap_or_default();
        for (key, value) in data {
            match value {
                Some(v) => all_data.insert(key, v),
                None => all_data.remove(&key),
            };
        }
        let mut all_annotations = read.map(|r| r.annotations.clone()).unwrap_or_default();
        all_annotations.insert(ABOUT.0.to_owned(), ABOUT.1.to_owned());
        for (key, value) in annotations {
            match value {
                Some(v) => all_annotations.insert(key, v),
                None => all_annotations.remove(&key),
            };
        }
        let mut labels = read.map(|r| r.labels.clone()).unwrap_or_default();
        labels.insert(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned());
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                resource_version: read.and_then(|r| r.resource_version.clone()),
                labels: Some(labels),
                annotations: Some(all_annotations),
                ..ObjectMeta::default()
            },
            // kubectl shows it as a TLS Secret; the type of one made by
            // someone else is immutable and kept.
            type_: Some(
                read.and_then(|r| r.type_.clone())
                    .unwrap_or_else(|| "kubernetes.io/tls".to_owned()),
            ),
            data: Some(
                all_data
                    .into_iter()
                    .map(|(k, v)| (k, ByteString(v)))
                    .collect(),
            ),
            ..Secret::default()
        };
        let pp = PostParams {
            field_manager: Some("issuer-guard".to_owned()),
            ..PostParams::default()
        };
        let written = match read {
            None => self.api.create(&pp, &secret).await,
            Some(_) => self.api.replace(&self.name, &pp, &secret).await,
        };
        match written {
            Ok(s) => Ok(Written::Stored(Stored::of(s))),
            // A create that lost (AlreadyExists) and a replace that lost
            // (Conflict) are both 409.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Written::Conflict),
            Err(e) => Err(e),
        }
    }

    /// Every change of the Secret, by name only: the field selector is what
    /// lets RBAC grant list and watch on this one name.
    pub(crate) fn watch(
        &self,
    ) -> impl Stream<Item = Result<watcher::Event<Secret>, watcher::Error>> + use<> {
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.name));
        watcher::watcher(self.api.clone(), config).backoff(super::CappedBackoff::default())
    }
}
