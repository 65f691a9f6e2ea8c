//! What the verdict needs to know of one live Pod: who owns it, which
//! ServiceAccount it runs as, when its tokens were minted, how long its
//! projected tokens live, which generation it was stamped with, and the
//! findings the admission rules give it (`judge::value`, the one judgement
//! the webhook and `check` make too).

use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;

use crate::{
    config::Config,
    judge::{self, Known},
    object::GENERATION_LABEL,
    rules::RuleId,
};

/// The kubelet's default for a projected token that names no
/// `expirationSeconds`; the API server's injected volume asks 3607.
pub(super) const DEFAULT_TTL_SECONDS: i64 = 3600;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodFacts {
    pub namespace: String,
    pub name: String,
    /// The controlling owner, `Kind/name`, as the Pod names it.
    pub owner: Option<(String, String)>,
    /// `spec.serviceAccountName`; the API server sets `default` when a
    /// Pod names none.
    pub account: String,
    /// When its projected tokens were first minted.
    pub created: Option<Timestamp>,
    /// The earliest time a container started: when a token read once at
    /// start (an environment variable, a copy) was taken.
    pub started: Option<Timestamp>,
    /// The `issuer-guard.io/generation` stamp, when it has one.
    pub generation: Option<u64>,
    /// `expirationSeconds` of every projected service-account token.
    pub ttls: Vec<i64>,
    /// Whether it holds a service-account token at all.
    pub has_token: bool,
}

impl PodFacts {
    pub(crate) fn of(pod: &Value) -> PodFacts {
        let meta = &pod["metadata"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let time = |v: &Value| v.as_str().and_then(|s| s.parse::<Timestamp>().ok());
        let owner = meta["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["controller"] == true)
            .map(|o| (text(&o["kind"]), text(&o["name"])));
        let started = pod["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| time(&c["state"]["running"]["startedAt"]))
            .min();
        let ttls: Vec<i64> = pod["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|v| v["projected"]["sources"].as_array().into_iter().flatten())
            .filter(|s| s.get("serviceAccountToken").is_some())
            .map(|s| {
                s["serviceAccountToken"]["expirationSeconds"]
                    .as_i64()
                    .unwrap_or(DEFAULT_TTL_SECONDS)
            })
            .collect();
        let legacy_volume = pod["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v.get("secret").is_some());
        let env_from_secret = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["env"].as_array().into_iter().flatten())
            .any(|e| e["valueFrom"].get("secretKeyRef").is_some());
        PodFacts {
            namespace: text(&meta["namespace"]),
            name: text(&meta["name"]),
            owner,
            account: pod["spec"]["serviceAccountName"]
                .as_str()
                .unwrap_or("default")
                .to_owned(),
            created: time(&meta["creationTimestamp"]),
            started,
            generation: meta["labels"][GENERATION_LABEL]
                .as_str()
                .and_then(|g| g.parse().ok()),
            has_token: !ttls.is_empty() || legacy_volume || env_from_secret,
            ttls,
        }
    }
}

/// Who a person acts on to recreate a pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub(crate) struct Owner {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// A pod, its facts and the findings the admission rules give it now.
#[derive(Debug, Clone)]
pub(crate) struct JudgedPod {
    /// Its owner is `facts.owner`; a ReplicaSet is lifted to its
    /// Deployment when the verdict is made, from what is known then.
    pub facts: PodFacts,
    /// (rule, what it names) for each finding.
    pub findings: Vec<(RuleId, String)>,
}

/// Judges one live Pod (a list's item, or a watch's) with the configuration
/// in force. `None` when the API server gave something that is not a
/// readable Pod: the caller says which and counts it.
pub(crate) fn judge_pod(config: &Config, known: Known<'_>, pod: &Value) -> Option<JudgedPod> {
    let facts = PodFacts::of(pod);
    match judge::value(config, known, pod, &facts.namespace) {
        Ok(Some(j)) => Some(JudgedPod::new(facts, &j)),
        Ok(None) | Err(_) => None,
    }
}

impl JudgedPod {
    pub(super) fn new(facts: PodFacts, judgement: &judge::Judgement) -> JudgedPod {
        let findings = judgement
            .verdict
            .decided
            .iter()
            .map(|d| (d.finding.rule, d.finding.detail.clone()))
            .collect();
        JudgedPod { facts, findings }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn facts_of_a_pod_made_by_a_replica_set() {
        let pod = json!({
            "metadata": {"namespace": "ns", "name": "web-1", "creationTimestamp": "2026-12-01T10:00:00Z",
                "labels": {GENERATION_LABEL: "3"},
                "ownerReferences": [{"kind": "ReplicaSet", "name": "web-5d", "controller": true}]},
            "spec": {"volumes": [{"name": "kube-api-access-x", "projected": {"sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt"}}]}},
                {"name": "vault", "projected": {"sources": [{"serviceAccountToken": {"audience": "vault", "path": "t"}}]}}],
                "containers": [{"name": "app"}]},
            "status": {"containerStatuses": [
                {"state": {"running": {"startedAt": "2026-12-01T10:00:05Z"}}},
                {"state": {"running": {"startedAt": "2026-12-01T10:00:03Z"}}}]}
        });
        let f = PodFacts::of(&pod);
        assert_eq!(f.owner, Some(("ReplicaSet".into(), "web-5d".into())));
        assert_eq!(f.generation, Some(3));
        assert_eq!(f.ttls, [3607, 3600]);
        assert_eq!(f.started, Some("2026-12-01T10:00:03Z".parse().unwrap()));
        assert!(f.has_token);
    }

    #[test]
    fn a_pod_without_a_token_has_none() {
        let pod = json!({"metadata": {"namespace": "ns", "name": "p"},
            "spec": {"automountServiceAccountToken": false, "containers": [{"name": "c"}]}});
        let f = PodFacts::of(&pod);
        assert!(!f.has_token);
        assert_eq!((f.created, f.generation, f.owner), (None, None, None));
    }
}
