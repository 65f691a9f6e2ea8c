//! The inventory's watches. Each lists (a page at a time), then follows
//! with bookmarks, and retries on its own with a capped backoff. The
//! ledger, the legacy token Secrets, the ReplicaSets and the
//! ServiceAccounts are read by metadata or by name; pods are judged as they
//! arrive and kept as their facts and findings. What a pod is judged with
//! (the ledger's conclusion, the legacy token Secrets) changing makes the
//! pod watch list again, so that no pod keeps a finding of the old state.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::ReplicaSet,
    core::v1::{ConfigMap, Pod, Secret, ServiceAccount},
};
use kube::{
    Api, Client, Resource,
    api::{ApiResource, DynamicObject, PartialObjectMeta},
    runtime::{WatchStreamExt, watcher},
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Cache, Shared, Synced, metrics::ReasonLabels, table::PodTable};
use crate::{
    cluster::CappedBackoff,
    judge::Known,
    retirement::{LegacyToken, judge_pod},
    rules::{LegacySecrets, legacy_token_selector},
    state::{Discovered, ledger},
};

/// Pages of the first list: a relist of 50,000 pods holds one page at a
/// time, never the whole list.
const PAGE_SIZE: u32 = 500;

pub(super) fn spawn(client: &Client, ledger_ns: &str, ledger_name: &str, shared: &Arc<Shared>) {
    tokio::spawn(ledger_watch(
        Api::namespaced(client.clone(), ledger_ns),
        ledger_name.to_owned(),
        shared.clone(),
    ));
    tokio::spawn(secrets_watch(Api::all(client.clone()), shared.clone()));
    tokio::spawn(replica_sets_watch(Api::all(client.clone()), shared.clone()));
    tokio::spawn(accounts_watch(Api::all(client.clone()), shared.clone()));
    tokio::spawn(pods_watch(client.clone(), shared.clone()));
}

/// Follows one watch for the life of the process, handing every event to
/// `on`; a failure is logged once per streak and retried.
async fn follow<K>(
    api: Api<K>,
    config: watcher::Config,
    what: &'static str,
    mut on: impl FnMut(watcher::Event<K>),
) where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let events = watcher::watcher(api, config).backoff(CappedBackoff::default());
    let mut events = std::pin::pin!(events);
    let mut failing = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                if std::mem::take(&mut failing) {
                    tracing::info!(what, "watch recovered");
                }
                on(event);
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, what, "watch failed; retrying");
                }
                failing = true;
            }
        }
    }
}

async fn ledger_watch(api: Api<ConfigMap>, name: String, shared: Arc<Shared>) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    follow(api, config, "ledger", |event| {
        let map = match event {
            watcher::Event::Apply(map) | watcher::Event::InitApply(map) => map,
            watcher::Event::InitDone if !shared.synced.ledger.load(Ordering::Acquire) => {
                tracing::warn!(ledger = %name, "no ledger yet: is discovery on in the webhook, and is --ledger its NAMESPACE/NAME?");
                return;
            }
            // A deleted ledger is written again by the webhook; the last
            // one stays in force until then.
            _ => return,
        };
        let read = ledger::from_data(|key| map.data.as_ref()?.get(key).map(String::as_str));
        let found = match read.map(|l| l.conclude(shared.window)) {
            Ok(Some(found)) => found,
            Ok(None) => return,
            Err(error) => {
                shared
                    .metrics
                    .refused
                    .get_or_create(&ReasonLabels { reason: "invalid" })
                    .inc();
                tracing::error!(ledger = %name, %error, "the ledger is refused; the last valid one stays in force");
                return;
            }
        };
        let changed = {
            let mut cache = shared.cache();
            // When it was observed does not change a finding.
            let same = cache.found.as_ref().is_some_and(|held| Discovered {
                observed_at: held.observed_at,
                ..found.clone()
            } == *held);
            cache.found = Some(found);
            !same
        };
        let first = !shared.synced.ledger.swap(true, Ordering::AcqRel);
        if changed && !first {
            shared.rejudge("ledger");
        }
    })
    .await;
}

async fn secrets_watch(api: Api<PartialObjectMeta<Secret>>, shared: Arc<Shared>) {
    let config = watcher::Config::default()
        .fields(&legacy_token_selector())
        .page_size(PAGE_SIZE);
    let mut fresh: Option<BTreeMap<(String, String), LegacyToken>> = None;
    follow(api, config, "legacy token Secrets", |event| {
        let token = |meta: &PartialObjectMeta<Secret>| {
            serde_json::to_value(&meta.metadata)
                .ok()
                .and_then(|v| LegacyToken::of(&v))
        };
        match event {
            watcher::Event::Init => fresh = Some(BTreeMap::new()),
            watcher::Event::InitApply(s) => {
                if let (Some(map), Some(t)) = (fresh.as_mut(), token(&s)) {
                    map.insert((t.namespace.clone(), t.name.clone()), t);
                }
            }
            watcher::Event::InitDone => {
                let Some(map) = fresh.take() else { return };
                let mut index = LegacySecrets::default();
                for (ns, name) in map.keys() {
                    index.insert(ns, name);
                }
                let changed = {
                    let mut cache = shared.cache();
                    let changed = cache.secrets != index;
                    cache.secrets = index;
                    cache.legacy = map;
                    changed
                };
                let first = !shared.synced.secrets.swap(true, Ordering::AcqRel);
                if changed && !first {
                    shared.rejudge("legacy token Secrets");
                }
            }
            watcher::Event::Apply(s) => {
                let Some(t) = token(&s) else { return };
                let added = {
                    let mut cache = shared.cache();
                    let added = !crate::rules::SecretIndex::is_legacy_token(
                        &cache.secrets,
                        &t.namespace,
                        &t.name,
                    );
                    cache.secrets.insert(&t.namespace, &t.name);
                    cache
                        .legacy
                        .insert((t.namespace.clone(), t.name.clone()), t);
                    added
                };
                if added {
                    shared.rejudge("legacy token Secrets");
                }
            }
            watcher::Event::Delete(s) => {
                let Some(t) = token(&s) else { return };
                {
                    let mut cache = shared.cache();
                    cache.secrets.remove(&t.namespace, &t.name);
                    cache.legacy.remove(&(t.namespace.clone(), t.name.clone()));
                }
                shared.rejudge("legacy token Secrets");
            }
        }
    })
    .await;
}

/// (namespace, name) of an object's metadata.
fn key_of(meta: &kube::api::ObjectMeta) -> Option<(String, String)> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

/// Keeps one map of the cache, by (namespace, name), from a metadata watch:
/// `value` is what is kept of an object, `None` for nothing.
async fn map_watch<K, V>(
    api: Api<PartialObjectMeta<K>>,
    shared: Arc<Shared>,
    what: &'static str,
    value: impl Fn(&PartialObjectMeta<K>) -> Option<V>,
    map: fn(&mut Cache) -> &mut HashMap<(String, String), V>,
    synced: fn(&Synced) -> &AtomicBool,
) where
    PartialObjectMeta<K>:
        Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let config = watcher::Config::default().page_size(PAGE_SIZE);
    let mut fresh: Option<HashMap<(String, String), V>> = None;
    follow(api, config, what, |event| match event {
        watcher::Event::Init => fresh = Some(HashMap::new()),
        watcher::Event::InitApply(o) => {
            if let (Some(fresh), Some(key), Some(v)) =
                (fresh.as_mut(), key_of(&o.metadata), value(&o))
            {
                fresh.insert(key, v);
            }
        }
        watcher::Event::InitDone => {
            if let Some(fresh) = fresh.take() {
                *map(&mut shared.cache()) = fresh;
                synced(&shared.synced).store(true, Ordering::Release);
            }
        }
        watcher::Event::Apply(o) => {
            if let (Some(key), Some(v)) = (key_of(&o.metadata), value(&o)) {
                map(&mut shared.cache()).insert(key, v);
            }
        }
        watcher::Event::Delete(o) => {
            if let Some(key) = key_of(&o.metadata) {
                map(&mut shared.cache()).remove(&key);
            }
        }
    })
    .await;
}

/// ReplicaSets to the Deployment that controls them.
async fn replica_sets_watch(api: Api<PartialObjectMeta<ReplicaSet>>, shared: Arc<Shared>) {
    let deployment = |rs: &PartialObjectMeta<ReplicaSet>| {
        rs.metadata
            .owner_references
            .as_ref()?
            .iter()
            .find(|o| o.controller == Some(true) && o.kind == "Deployment")
            .map(|o| o.name.clone())
    };
    map_watch(
        api,
        shared,
        "ReplicaSets",
        deployment,
        |c| &mut c.deployments,
        |s| &s.replica_sets,
    )
    .await;
}

/// ServiceAccounts to their creation.
async fn accounts_watch(api: Api<PartialObjectMeta<ServiceAccount>>, shared: Arc<Shared>) {
    let created =
        |a: &PartialObjectMeta<ServiceAccount>| a.metadata.creation_timestamp.as_ref().map(|t| t.0);
    map_watch(
        api,
        shared,
        "ServiceAccounts",
        created,
        |c| &mut c.accounts,
        |s| &s.accounts,
    )
    .await;
}

/// Pods, judged as they arrive with what is known when the watch starts.
/// Waits for the ledger and the legacy token Secrets first: a pod judged
/// without them would be judged with something else than `status` uses.
async fn pods_watch(client: Client, shared: Arc<Shared>) {
    let mut judging = shared.judging.subscribe();
    let resource = ApiResource::erase::<Pod>(&());
    loop {
        while !(shared.synced.ledger.load(Ordering::Acquire)
            && shared.synced.secrets.load(Ordering::Acquire))
        {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        judging.mark_unchanged();
        let (config, secrets) = {
            let cache = shared.cache();
            let Some(found) = &cache.found else { continue };
            (shared.base.with_discovered(found), cache.secrets.clone())
        };
        let known = Known::secrets(&secrets);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let watch_config = watcher::Config::default().page_size(PAGE_SIZE);
        let mut fresh: Option<PodTable> = None;
        let judge = |object: DynamicObject| {
            let mut value = serde_json::to_value(object).ok()?;
            // A list's or watch's items carry no kind of their own.
            if let Some(map) = value.as_object_mut() {
                map.insert("apiVersion".into(), Value::from("v1"));
                map.insert("kind".into(), Value::from("Pod"));
            }
            let judged = judge_pod(&config, known, &value);
            if judged.is_none() {
                tracing::warn!(
                    pod = %format!("{}/{}", value["metadata"]["namespace"].as_str().unwrap_or_default(),
                        value["metadata"]["name"].as_str().unwrap_or_default()),
                    "a pod could not be read and is left out"
                );
            }
            judged
        };
        let stream = follow(api, watch_config, "Pods", |event| match event {
            watcher::Event::Init => fresh = Some(PodTable::default()),
            watcher::Event::InitApply(object) => {
                if let (Some(table), Some(pod)) = (fresh.as_mut(), judge(object)) {
                    table.put(pod);
                }
            }
            watcher::Event::InitDone => {
                if let Some(table) = fresh.take() {
                    let old = std::mem::replace(&mut shared.cache().pods, table);
                    drop(old);
                    shared.synced.pods.store(true, Ordering::Release);
                    // The list's pages are freed; give their pages back.
                    crate::server::trim_allocator();
                }
            }
            watcher::Event::Apply(object) => {
                if let Some(pod) = judge(object) {
                    shared.cache().pods.put(pod);
                }
            }
            watcher::Event::Delete(object) => {
                if let (Some(ns), Some(name)) = (&object.metadata.namespace, &object.metadata.name)
                {
                    shared.cache().pods.remove(ns, name);
                }
            }
        });
        tokio::select! {
            () = stream => {}
            _ = judging.changed() => {
                tracing::info!("what pods are judged with changed; listing them again");
            }
        }
    }
}
