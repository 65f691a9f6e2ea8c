//! The legacy token Secrets of the cluster, kept from a metadata-only watch.
//! Reviews read the current set without locking and never wait for the API
//! server; the watch replaces or edits the set behind them.
//!
//! Every Secret this cache is given came through the watch's field selector
//! (`rules::legacy_token_selector`), so each is a legacy token by the one
//! meaning `rules::is_legacy_token_secret` gives; metadata carries no type
//! to test again.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::Secret;
use kube::{core::PartialObjectMeta, runtime::watcher::Event};
use prometheus_client::metrics::gauge::Gauge;

use crate::rules::{LegacySecrets, SecretIndex};

pub(crate) struct LegacyTokenCache {
    current: ArcSwap<LegacySecrets>,
    /// The relist in progress: published whole at `InitDone`, so that a
    /// review never sees a set that is only partly listed.
    relist: Mutex<Option<LegacySecrets>>,
    synced: AtomicBool,
    gauge: Gauge,
}

impl LegacyTokenCache {
    /// An empty cache that is not ready until the watch has listed once.
    pub(crate) fn new(gauge: Gauge) -> Self {
        Self {
            current: ArcSwap::from_pointee(LegacySecrets::default()),
            relist: Mutex::new(None),
            synced: AtomicBool::new(false),
            gauge,
        }
    }

    /// An empty cache that is ready at once, for running without a cluster.
    pub(crate) fn without_cluster(gauge: Gauge) -> Self {
        let cache = Self::new(gauge);
        cache.synced.store(true, Ordering::Release);
        cache
    }

    /// True once a complete list of the cluster's Secrets has been seen.
    /// Stays true while the watch reconnects: the last known set is a better
    /// answer than refusing reviews.
    pub(crate) fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.load().len()
    }

    pub(crate) fn apply(&self, event: Event<PartialObjectMeta<Secret>>) {
        match event {
            Event::Init => {
                *self.relist_slot() = Some(LegacySecrets::default());
            }
            Event::InitApply(secret) => {
                if let Some((ns, name)) = key(&secret)
                    && let Some(set) = self.relist_slot().as_mut()
                {
                    set.insert(ns, name);
                }
            }
            Event::InitDone => {
                let listed = self.relist_slot().take().unwrap_or_default();
                let first = !self.synced.swap(true, Ordering::AcqRel);
                tracing::info!(
                    legacy_token_secrets = listed.len(),
                    first,
                    "Secret cache synced"
                );
                self.publish(listed);
            }
            Event::Apply(secret) => {
                // A Secret's type cannot change: an Apply only ever adds.
                if let Some((ns, name)) = key(&secret)
                    && !self.current.load().is_legacy_token(ns, name)
                {
                    self.edit(|set| set.insert(ns, name));
                }
            }
            Event::Delete(secret) => {
                if let Some((ns, name)) = key(&secret)
                    && self.current.load().is_legacy_token(ns, name)
                {
                    self.edit(|set| set.remove(ns, name));
                }
            }
        }
    }

    fn relist_slot(&self) -> std::sync::MutexGuard<'_, Option<LegacySecrets>> {
        // Only the watch task writes here; a poisoned lock still holds a
        // usable buffer, and the next InitDone replaces it anyway.
        self.relist.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn edit(&self, change: impl FnOnce(&mut LegacySecrets)) {
        let mut next = LegacySecrets::clone(&self.current.load());
        change(&mut next);
        self.publish(next);
    }

    fn publish(&self, set: LegacySecrets) {
        self.gauge.set(i64::try_from(set.len()).unwrap_or(i64::MAX));
        self.current.store(Arc::new(set));
    }
}

impl SecretIndex for LegacyTokenCache {
    fn is_legacy_token(&self, namespace: &str, name: &str) -> bool {
        self.current.load().is_legacy_token(namespace, name)
    }
}

fn key(secret: &PartialObjectMeta<Secret>) -> Option<(&str, &str)> {
    let meta = &secret.metadata;
    Some((meta.namespace.as_deref()?, meta.name.as_deref()?))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::core::PartialObjectMetaExt;

    use super::*;

    fn secret(ns: &str, name: &str, annotations: &[(&str, &str)]) -> PartialObjectMeta<Secret> {
        ObjectMeta {
            namespace: Some(ns.to_owned()),
            name: Some(name.to_owned()),
            annotations: (!annotations.is_empty()).then(|| {
                annotations
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>()
            }),
            ..Default::default()
        }
        .into_response_partial()
    }

    fn token(ns: &str, name: &str) -> PartialObjectMeta<Secret> {
        secret(
            ns,
            name,
            &[
                ("kubernetes.io/service-account.name", "builder"),
                ("kubernetes.io/service-account.uid", "1234"),
            ],
        )
    }

    fn synced(cache: &LegacyTokenCache, objects: Vec<PartialObjectMeta<Secret>>) {
        cache.apply(Event::Init);
        for o in objects {
            cache.apply(Event::InitApply(o));
        }
        cache.apply(Event::InitDone);
    }

    #[test]
    fn initial_list_is_published_only_when_done() {
        let gauge = Gauge::default();
        let cache = LegacyTokenCache::new(gauge.clone());
        assert!(!cache.is_synced());
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(token("ci", "builder-token-x7k2p")));
        assert!(
            !cache.is_legacy_token("ci", "builder-token-x7k2p"),
            "a partial list is not visible"
        );
        assert!(!cache.is_synced());
        cache.apply(Event::InitDone);
        assert!(cache.is_synced());
        assert!(cache.is_legacy_token("ci", "builder-token-x7k2p"));
        assert!(!cache.is_legacy_token("other", "builder-token-x7k2p"));
        assert_eq!(gauge.get(), 1);
    }

    #[test]
    fn apply_adds_once() {
        let gauge = Gauge::default();
        let cache = LegacyTokenCache::new(gauge.clone());
        synced(&cache, Vec::new());
        cache.apply(Event::Apply(token("ci", "bot")));
        assert!(cache.is_legacy_token("ci", "bot"));
        assert!(!cache.is_legacy_token("other", "bot"));
        // An update of the same Secret (its annotations edited) keeps it.
        cache.apply(Event::Apply(secret("ci", "bot", &[("other", "x")])));
        assert!(cache.is_legacy_token("ci", "bot"));
        assert_eq!(gauge.get(), 1);
    }

    #[test]
    fn delete_drops() {
        let cache = LegacyTokenCache::new(Gauge::default());
        synced(&cache, vec![token("ci", "bot"), token("ci", "other")]);
        cache.apply(Event::Delete(token("ci", "bot")));
        assert!(!cache.is_legacy_token("ci", "bot"));
        assert!(cache.is_legacy_token("ci", "other"));
        // Deleting what is unknown changes nothing.
        cache.apply(Event::Delete(token("ci", "never-seen")));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn relist_replaces_the_set() {
        let gauge = Gauge::default();
        let cache = LegacyTokenCache::new(gauge.clone());
        synced(&cache, vec![token("a", "gone"), token("a", "kept")]);
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(token("a", "kept")));
        cache.apply(Event::InitApply(token("b", "new")));
        // Until the relist completes, reviews see the previous set.
        assert!(cache.is_legacy_token("a", "gone"));
        assert!(!cache.is_legacy_token("b", "new"));
        cache.apply(Event::InitDone);
        assert!(
            !cache.is_legacy_token("a", "gone"),
            "missing from the relist"
        );
        assert!(cache.is_legacy_token("a", "kept"));
        assert!(cache.is_legacy_token("b", "new"));
        assert_eq!(gauge.get(), 2);
        assert!(cache.is_synced());
    }

    #[test]
    fn without_cluster_is_ready_and_empty() {
        let cache = LegacyTokenCache::without_cluster(Gauge::default());
        assert!(cache.is_synced());
        assert!(!cache.is_legacy_token("default", "default-token-abcde"));
    }
}
