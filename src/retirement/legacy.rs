//! Legacy token Secrets as the verdict sees them: signed by the key of
//! their day and never refreshed, so every one still in use blocks that
//! key's retirement, whether a pod mounts it or something outside the
//! cluster sends it. The API server labels a Secret with the day its token
//! last authenticated (`kubernetes.io/legacy-token-last-used`, tracked
//! since 1.28); a Secret without the label has not been used since.

use serde::Serialize;
use serde_json::Value;

use super::{JudgedPod, verdict::Blocker};
use crate::rules::RuleId;

pub(crate) const LAST_USED_LABEL: &str = "kubernetes.io/legacy-token-last-used";
const INVALID_SINCE_LABEL: &str = "kubernetes.io/legacy-token-invalid-since";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LegacyToken {
    pub namespace: String,
    pub name: String,
    /// The ServiceAccount the token is for.
    pub service_account: String,
    /// The day (`YYYY-MM-DD`) its token last authenticated, as the API
    /// server records it; `None`: not used since tracking began.
    pub last_used: Option<String>,
    /// Set by the cleaner of unused auto-created tokens: the day it was
    /// marked invalid.
    pub invalid_since: Option<String>,
}

impl LegacyToken {
    /// From a Secret's metadata (a metadata-only list or watch).
    pub(crate) fn of(metadata: &Value) -> Option<LegacyToken> {
        let text = |v: &Value| v.as_str().map(str::to_owned);
        Some(LegacyToken {
            namespace: text(&metadata["namespace"])?,
            name: text(&metadata["name"])?,
            service_account: text(&metadata["annotations"]["kubernetes.io/service-account.name"])
                .unwrap_or_default(),
            last_used: text(&metadata["labels"][LAST_USED_LABEL]),
            invalid_since: text(&metadata["labels"][INVALID_SINCE_LABEL]),
        })
    }

    fn is_mounted_by(&self, pod: &JudgedPod) -> bool {
        pod.facts.namespace == self.namespace
            && pod.findings.iter().any(|(rule, detail)| {
                matches!(rule, RuleId::LegacyTokenEnv | RuleId::LegacyTokenVolume)
                    && *detail == self.name
            })
    }

    pub(crate) fn mounting_pods(&self, pods: &[JudgedPod]) -> usize {
        pods.iter().filter(|p| self.is_mounted_by(p)).count()
    }

    pub(crate) fn mounted_by(&self, pods: &[JudgedPod]) -> bool {
        pods.iter().any(|p| self.is_mounted_by(p))
    }

    /// A Secret no pod mounts but something uses: the key's retirement
    /// breaks whoever sends it.
    pub(crate) fn blocker(&self) -> Blocker {
        let (namespace, name) = (&self.namespace, &self.name);
        Blocker {
            kind: "Secret".into(),
            namespace: namespace.clone(),
            name: name.clone(),
            pods: Vec::new(),
            rules: vec!["legacy-token-in-use"],
            details: vec![format!(
                "last used {}, by no pod",
                self.last_used.as_deref().unwrap_or("?")
            )],
            remedy: format!(
                "find who sends it (the API server's audit log, user system:serviceaccount:{namespace}:{}), move them to a TokenRequest token, then delete it (kubectl delete secret -n {namespace} {name})",
                self.service_account
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn read_from_metadata() {
        let t = LegacyToken::of(&json!({"namespace": "ns", "name": "bot-token",
            "annotations": {"kubernetes.io/service-account.name": "bot"},
            "labels": {LAST_USED_LABEL: "2026-12-01"}}))
        .unwrap();
        assert_eq!(t.last_used.as_deref(), Some("2026-12-01"));
        assert_eq!(t.service_account, "bot");
        assert_eq!(t.invalid_since, None);
        assert!(LegacyToken::of(&json!({"name": "x"})).is_none());
    }
}
