//! The ledger's ConfigMap: read, and updated under optimistic concurrency so
//! that replicas seeing the same switch at once end up with one generation.
//! A write that loses the race reads the winner's ledger and applies its
//! round again, which then usually changes nothing. A stored ledger that
//! cannot be believed is never written over.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use crate::state::ledger::{self, DATA_KEY, Ledger, Relation, SCHEMA};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};

use super::{DiscoveryError, Stage};

/// Attempts at a read-modify-write before this probe gives up; the next
/// probe tries again.
const ATTEMPTS: usize = 5;

pub(super) struct Store {
    api: Api<ConfigMap>,
    pub name: String,
}

impl Store {
    pub(super) fn new(api: Api<ConfigMap>, name: String) -> Self {
        Self { api, name }
    }

    /// Applies `change` to the stored ledger and writes it back when it
    /// changed. Returns the ledger now stored and what `change` said of it.
    ///
    /// The stored ledger is first checked against `held` (the last valid one
    /// this replica knows) and `now` (the API server's clock): one that is
    /// invalid or tells another history is refused, and never overwritten;
    /// one behind `held` (a restored older copy) is brought forward from
    /// `held`. With no ledger stored it starts from `held`, so that a
    /// deleted ConfigMap comes back with its numbers rather than starting
    /// over.
    pub(super) async fn update<E>(
        &self,
        held: Option<&Ledger>,
        now: Option<jiff::Timestamp>,
        conflicts: &prometheus_client::metrics::counter::Counter,
        mut change: impl FnMut(&mut Ledger) -> (bool, E),
    ) -> Result<(Ledger, E), DiscoveryError> {
        for _ in 0..ATTEMPTS {
            let stored = self
                .api
                .get_opt(&self.name)
                .await
                .map_err(|e| store_error(&self.name, e))?;
            let (mut ledger, version) = match stored {
                None => (held.cloned().unwrap_or_default(), None),
                Some(map) => {
                    let read = parse(&self.name, &map)?;
                    let base = self.believe(read, held, now)?;
                    if base.schema > SCHEMA {
                        return Err(DiscoveryError::NewerSchema {
                            name: self.name.clone(),
                            schema: base.schema,
                        });
                    }
                    (base, Some(map.metadata.resource_version.clone()))
                }
            };
            let before = ledger.clone();
            let (changed, said) = change(&mut ledger);
            if version.is_some() && !changed && ledger == before {
                return Ok((ledger, said));
            }
            let written = match version {
                None => {
                    let map = self.config_map(&ledger, None)?;
                    self.api.create(&PostParams::default(), &map).await
                }
                Some(version) => {
                    let next = self.config_map(&ledger, version)?;
                    self.api
                        .replace(&self.name, &PostParams::default(), &next)
                        .await
                }
            };
            match written {
                Ok(_) => return Ok((ledger, said)),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    conflicts.inc();
                    continue;
                }
                Err(e) => return Err(store_error(&self.name, e)),
            }
        }
        Err(DiscoveryError::Contended {
            name: self.name.clone(),
            attempts: ATTEMPTS,
        })
    }

    /// The ledger to build on, from the one read and the one held.
    fn believe(
        &self,
        read: Ledger,
        held: Option<&Ledger>,
        now: Option<jiff::Timestamp>,
    ) -> Result<Ledger, DiscoveryError> {
        let refused = |reason: &'static str, message: String| DiscoveryError::Refused {
            name: self.name.clone(),
            reason,
            message,
        };
        read.check(now)
            .map_err(|e| refused("invalid", e.to_string()))?;
        let Some(held) = held else {
            return Ok(read);
        };
        match read.relation(held) {
            Relation::Same | Relation::Ahead => Ok(read),
            Relation::Behind => Ok(held.clone()),
            Relation::Diverged(why) => Err(refused("diverged", why)),
        }
    }

    fn config_map(
        &self,
        ledger: &Ledger,
        resource_version: Option<String>,
    ) -> Result<ConfigMap, DiscoveryError> {
        let text = serde_json::to_string_pretty(ledger).map_err(|e| DiscoveryError::Ledger {
            name: self.name.clone(),
            message: e.to_string(),
        })?;
        Ok(ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version,
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "issuer-guard".to_owned(),
                )])),
                annotations: Some(BTreeMap::from([(
                    "issuer-guard.io/about".to_owned(),
                    "The issuer generations issuer-guard has discovered. Written by issuer-guard only; an edit is refused by every replica and alerted on. Deleting it makes the replicas write back the last valid ledger they hold.".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(DATA_KEY.to_owned(), text)])),
            ..ConfigMap::default()
        })
    }
}

/// The ledger in a ConfigMap. A ledger that does not parse is never
/// overwritten: it is history that a careless write would lose.
pub(super) fn parse(name: &str, map: &ConfigMap) -> Result<Ledger, DiscoveryError> {
    ledger::from_data(|key| map.data.as_ref()?.get(key).map(String::as_str)).map_err(|message| {
        DiscoveryError::Ledger {
            name: name.to_owned(),
            message,
        }
    })
}

fn store_error(name: &str, error: kube::Error) -> DiscoveryError {
    DiscoveryError::from_client(Stage::Ledger, &error, &format!("ConfigMap {name}: "))
}
