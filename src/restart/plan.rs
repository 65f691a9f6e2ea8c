//! Which owners `restart` recreates and how: the blockers of the `status`
//! verdicts (the same judgement, the same code), one step per owner. Pure.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::retirement::{Assessment, JudgedPod, Verdict};

/// How a ReplicationController's pods are recreated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// One extra pod up before each old one goes: no downtime.
    Rolling,
    /// Scale to 0 and back (the seed runbook's way): downtime.
    Recreate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Method {
    /// A new pod-template annotation, as `kubectl rollout restart` does.
    RolloutRestart,
    /// A ReplicationController scaled to N+1, the old pod chosen for
    /// removal by its deletion cost, scaled back to N; pod by pod.
    RollingReplace,
    /// A ReplicationController scaled to 0 and back.
    ScaleToZero,
    /// A bare pod, evicted and created again from its live spec.
    Recreate,
    /// Evicted pod by pod; its controller makes the replacements.
    Evict,
    /// Left alone, and why.
    Skip(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Step {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub pods: Vec<String>,
    pub rules: Vec<&'static str>,
    pub method: Method,
    /// What a person should expect while it runs.
    pub disruption: &'static str,
}

/// What narrows the selection beyond `status`' scope.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filters {
    /// Only this owner, as (kind, name).
    pub owner: Option<(String, String)>,
    /// Only pods stamped with this generation.
    pub generation: Option<u64>,
}

const JOB: &str = "a Job's pod is left alone: evicting it runs its work again and counts against the Job's backoffLimit; it is replaced when the Job makes its next pod, or delete it yourself once its work is done";
const SECRET: &str = "a legacy token Secret no pod mounts: find who sends it and move them to a TokenRequest token (issuer-guard status says how)";

/// One step per owner that blocks any retiring issuer or key, its pods
/// narrowed by `filters`; StatefulSets in `on_delete` are evicted pod by
/// pod, since a template change does not roll them.
pub(crate) fn plan(
    assessment: &Assessment,
    pods: &[JudgedPod],
    filters: &Filters,
    strategy: Strategy,
    on_delete: &HashSet<(String, String)>,
) -> Vec<Step> {
    let generation_of: BTreeMap<(&str, &str), Option<u64>> = pods
        .iter()
        .map(|p| {
            (
                (p.facts.namespace.as_str(), p.facts.name.as_str()),
                p.facts.generation,
            )
        })
        .collect();
    let mut steps: BTreeMap<(String, String, String), Step> = BTreeMap::new();
    for verdict in &assessment.verdicts {
        let Verdict::BlockedBy { blockers } = &verdict.verdict else {
            continue;
        };
        for b in blockers {
            if filters
                .owner
                .as_ref()
                .is_some_and(|(k, n)| !k.eq_ignore_ascii_case(&b.kind) || *n != b.name)
            {
                continue;
            }
            let chosen: Vec<String> = b
                .pods
                .iter()
                .filter(|p| {
                    filters.generation.is_none_or(|g| {
                        generation_of.get(&(b.namespace.as_str(), p.as_str())) == Some(&Some(g))
                    })
                })
                .cloned()
                .collect();
            if chosen.is_empty() && b.kind != "Secret" {
                continue;
            }
            if chosen.is_empty() && filters.generation.is_some() {
                continue;
            }
            let key = (b.namespace.clone(), b.kind.clone(), b.name.clone());
            let step = steps.entry(key).or_insert_with(|| {
                let on_delete = on_delete.contains(&(b.namespace.clone(), b.name.clone()));
                let (method, disruption) = method(&b.kind, strategy, on_delete);
                Step {
                    kind: b.kind.clone(),
                    namespace: b.namespace.clone(),
                    name: b.name.clone(),
                    pods: Vec::new(),
                    rules: Vec::new(),
                    method,
                    disruption,
                }
            });
            for p in chosen {
                if !step.pods.contains(&p) {
                    step.pods.push(p);
                }
            }
            for r in &b.rules {
                if !step.rules.contains(r) {
                    step.rules.push(r);
                }
            }
        }
    }
    steps.into_values().collect()
}

fn method(kind: &str, strategy: Strategy, on_delete: bool) -> (Method, &'static str) {
    match kind {
        "StatefulSet" if on_delete => (
            Method::Evict,
            "its pods are evicted one at a time (updateStrategy OnDelete); PodDisruptionBudgets are honoured",
        ),
        "Deployment" | "StatefulSet" | "DaemonSet" => (
            Method::RolloutRestart,
            "a rolling restart within its own maxUnavailable and maxSurge",
        ),
        "ReplicationController" => match strategy {
            Strategy::Rolling => (
                Method::RollingReplace,
                "none: one extra pod comes up and is ready before each old one goes",
            ),
            Strategy::Recreate => (
                Method::ScaleToZero,
                "downtime: every pod is gone until the new ones are ready",
            ),
        },
        "Pod" => (
            Method::Recreate,
            "the pod is down between its eviction and its replacement's start",
        ),
        "Job" | "CronJob" => (Method::Skip(JOB.into()), "none"),
        "Secret" => (Method::Skip(SECRET.into()), "none"),
        _ => (
            Method::Evict,
            "its pods are evicted one at a time and its controller replaces them; PodDisruptionBudgets are honoured",
        ),
    }
}

#[cfg(test)]
mod tests;
