//! The ledger's ConfigMap: read, and updated under optimistic concurrency so
//! that replicas seeing the same switch at once end up with one generation.
//! A write that loses the race reads the winner's ledger and applies its
//! observation again, which then usually changes nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use crate::state::ledger::{self, DATA_KEY, Ledger};
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
    /// changed. Returns the ledger now stored. With no ledger stored, it
    /// starts from `seed`, the last one this replica read, so that a deleted
    /// ConfigMap comes back with its numbers rather than starting over.
    pub(super) async fn update(
        &self,
        seed: Option<&Ledger>,
        mut change: impl FnMut(&mut Ledger) -> bool,
    ) -> Result<Ledger, DiscoveryError> {
        for _ in 0..ATTEMPTS {
            let stored = self
                .api
                .get_opt(&self.name)
                .await
                .map_err(|e| store_error(&self.name, e))?;
            match stored {
                None => {
                    let mut ledger = seed.cloned().unwrap_or_default();
                    change(&mut ledger);
                    let map = self.config_map(&ledger, None)?;
                    match self.api.create(&PostParams::default(), &map).await {
                        Ok(_) => return Ok(ledger),
                        Err(kube::Error::Api(s)) if s.code == 409 => continue,
                        Err(e) => return Err(store_error(&self.name, e)),
                    }
                }
                Some(map) => {
                    let mut ledger = parse(&self.name, &map)?;
                    if !change(&mut ledger) {
                        return Ok(ledger);
                    }
                    let version = map.metadata.resource_version.clone();
                    let next = self.config_map(&ledger, version)?;
                    match self
                        .api
                        .replace(&self.name, &PostParams::default(), &next)
                        .await
                    {
                        Ok(_) => return Ok(ledger),
                        Err(kube::Error::Api(s)) if s.code == 409 => continue,
                        Err(e) => return Err(store_error(&self.name, e)),
                    }
                }
            }
        }
        Err(DiscoveryError::Contended {
            name: self.name.clone(),
            attempts: ATTEMPTS,
        })
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
                    "The issuer generations issuer-guard has discovered. Written by issuer-guard; do not edit. Deleting it starts a new ledger and loses the history.".to_owned(),
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
