//! Whether a retiring issuer or signing key can be retired: the one
//! assessment `issuer-guard status` prints and the in-cluster inventory
//! exports as metrics, so that the two cannot disagree. Pure: what the
//! cluster holds comes in as [`Evidence`] (read by a list or kept by
//! watches), and the API server's clock with it.

mod accounts;
mod legacy;
mod pod_text;
mod pods;
mod verdict;

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;

pub(crate) use accounts::{AccountReport, Accounts};
pub(crate) use legacy::LegacyToken;
pub(crate) use pod_text::judge_pod_text;
pub(crate) use pods::{JudgedPod, Owner, judge_pod};
#[cfg(test)]
pub(crate) use verdict::Blocker;
pub(crate) use verdict::{RetirementVerdict, Retiring, Verdict};

use crate::state::Discovered;

/// A legacy token Secret's (namespace, name).
pub(crate) type SecretKey = (String, String);

/// What the assessment is made from.
pub(crate) struct Evidence<'a> {
    pub found: &'a Discovered,
    pub pods: &'a [JudgedPod],
    /// (namespace, ReplicaSet) to its Deployment: a ReplicaSet's pods are
    /// acted on through the Deployment.
    pub deployments: &'a HashMap<(String, String), String>,
    /// Every ServiceAccount's creation, by (namespace, name).
    pub accounts: &'a Accounts,
    pub legacy: &'a BTreeMap<SecretKey, LegacyToken>,
    /// The API server's clock.
    pub now: Timestamp,
}

/// Everything `status` prints and the inventory counts.
#[derive(Debug, Clone)]
pub(crate) struct Assessment {
    /// Pods per stamped generation; `unstamped` for pods older than the
    /// install or never reviewed.
    pub per_generation: BTreeMap<String, usize>,
    /// At-risk pods by rule, then by owner (`Kind namespace/name`).
    pub at_risk: BTreeMap<&'static str, BTreeMap<String, usize>>,
    pub verdicts: Vec<RetirementVerdict>,
    /// Pods whose ServiceAccount was deleted (and perhaps recreated) since
    /// they were created.
    pub accounts: Vec<AccountReport>,
    /// Every legacy token Secret, with how many pods mount it.
    pub legacy: Vec<(LegacyToken, usize)>,
}

impl Evidence<'_> {
    /// The owner a person acts on: the Deployment rather than its
    /// ReplicaSet, or the pod itself when nothing owns it.
    pub(crate) fn owner_of(&self, pod: &JudgedPod) -> Owner {
        let namespace = &pod.facts.namespace;
        match &pod.facts.owner {
            Some((kind, name)) if kind == "ReplicaSet" => {
                match self.deployments.get(&(namespace.clone(), name.clone())) {
                    Some(deployment) => Owner {
                        kind: "Deployment".into(),
                        namespace: namespace.clone(),
                        name: deployment.clone(),
                    },
                    None => Owner {
                        kind: kind.clone(),
                        namespace: namespace.clone(),
                        name: name.clone(),
                    },
                }
            }
            Some((kind, name)) => Owner {
                kind: kind.clone(),
                namespace: namespace.clone(),
                name: name.clone(),
            },
            None => Owner {
                kind: "Pod".into(),
                namespace: namespace.clone(),
                name: pod.facts.name.clone(),
            },
        }
    }

    pub(crate) fn assess(&self) -> Assessment {
        let mut per_generation = BTreeMap::new();
        let mut at_risk: BTreeMap<&'static str, BTreeMap<String, usize>> = BTreeMap::new();
        for p in self.pods {
            let key = p
                .facts
                .generation
                .map_or_else(|| "unstamped".to_owned(), |g| g.to_string());
            *per_generation.entry(key).or_insert(0) += 1;
            if p.findings.is_empty() {
                continue;
            }
            let o = self.owner_of(p);
            let owner = format!("{} {}/{}", o.kind, o.namespace, o.name);
            let mut rules: Vec<&'static str> = p.findings.iter().map(|(r, _)| r.as_str()).collect();
            rules.sort_unstable();
            rules.dedup();
            for rule in rules {
                *at_risk
                    .entry(rule)
                    .or_default()
                    .entry(owner.clone())
                    .or_insert(0) += 1;
            }
        }
        let legacy = self
            .legacy
            .values()
            .map(|t| (t.clone(), t.mounting_pods(self.pods)))
            .collect();
        Assessment {
            per_generation,
            at_risk,
            verdicts: verdict::decide(self),
            accounts: accounts::report(self),
            legacy,
        }
    }
}
