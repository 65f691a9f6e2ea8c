//! Pods whose ServiceAccount was deleted, and perhaps recreated under the
//! same name, after they were created (kubernetes#106049). Their tokens
//! name the old account's uid, which the API server refuses: projected
//! ones until the kubelet's next refresh (which asks for the new account's
//! token), copies for good. The ServiceAccount admission plugin makes an
//! account exist when a pod is created, so an account created after the
//! pod is another one than the pod started with.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use serde::Serialize;

use super::{
    Evidence,
    verdict::{MARGIN, refresh_of},
};
use crate::rules::RuleId;

/// Every ServiceAccount's creation, by (namespace, name).
pub(crate) type Accounts = HashMap<(String, String), Timestamp>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AccountReport {
    pub namespace: String,
    pub name: String,
    /// When the account of that name was created again; `None`: it is
    /// gone, and its pods' tokens are refused until it exists again.
    pub recreated: Option<Timestamp>,
    pub pods: Vec<AccountPod>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AccountPod {
    pub name: String,
    /// When its projected tokens are the new account's: the recreation +
    /// the kubelet's refresh + the margin. `None` when it never heals.
    pub heals: Option<Timestamp>,
    /// Holds a copy (an environment variable, a `subPath` file, a legacy
    /// Secret's token): broken until the pod is recreated.
    pub broken_until_recreated: bool,
}

/// Whether a finding is a token the kubelet never refreshes.
fn frozen(rule: RuleId) -> bool {
    matches!(
        rule,
        RuleId::LegacyTokenEnv | RuleId::LegacyTokenVolume | RuleId::TokenSubpath
    )
}

pub(super) fn report(evidence: &Evidence<'_>) -> Vec<AccountReport> {
    let mut by_account: BTreeMap<(String, String), AccountReport> = BTreeMap::new();
    for pod in evidence.pods.iter().filter(|p| p.facts.has_token) {
        let f = &pod.facts;
        let key = (f.namespace.clone(), f.account.clone());
        let recreated = match evidence.accounts.get(&key) {
            None => None,
            // Whole seconds: an account made in the pod's second existed
            // for it.
            Some(&made) if f.created.is_some_and(|c| made > c) => Some(made),
            Some(_) => continue,
        };
        let frozen = pod.findings.iter().any(|(r, _)| frozen(*r));
        let heals = match recreated {
            Some(made) if !frozen => made
                .checked_add(refresh_of(f))
                .and_then(|t| t.checked_add(MARGIN))
                .ok(),
            _ => None,
        };
        // Healed already: nothing is wrong with it any more.
        if heals.is_some_and(|h| h <= evidence.now) {
            continue;
        }
        by_account
            .entry(key)
            .or_insert_with(|| AccountReport {
                namespace: f.namespace.clone(),
                name: f.account.clone(),
                recreated,
                pods: Vec::new(),
            })
            .pods
            .push(AccountPod {
                name: f.name.clone(),
                heals,
                broken_until_recreated: frozen,
            });
    }
    by_account.into_values().collect()
}
