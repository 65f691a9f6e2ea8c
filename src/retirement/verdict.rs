//! The verdict for each retiring issuer and key: safe to retire now, safe
//! after a time, or blocked by these owners and pods. Pure: the timeline,
//! the judged pods and the API server's clock come in ([`Evidence`]).
//!
//! A pod whose tokens all refresh (projected, no frozen copy) is safe once
//! the kubelet has refreshed them after the switch away *completed*: at
//! once if it was created after the completion, otherwise at completion +
//! min(0.8 × TTL, 24 h) + [`MARGIN`]. A pod with a frozen token (a legacy
//! Secret's, an environment variable), an audience of the retiring issuer
//! or a federated audience that does not trust the new one blocks until it
//! is recreated (or its Secret regenerated). A `subPath` copy is the token
//! of its container's start: it blocks unless every container started
//! after the pod's projected tokens were new. Legacy tokens are checked by
//! key only (their `iss` is never compared), and a legacy token Secret that
//! no pod mounts blocks a key while something still uses it (the API
//! server's `kubernetes.io/legacy-token-last-used` label).

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::{Evidence, pods::PodFacts};
use crate::rules::RuleId;

/// Added to the kubelet's refresh: the kubelet checks projected tokens
/// about once a minute, and a node's clock may be a little off the API
/// server's. Five minutes covers both with room.
pub(crate) const MARGIN: SignedDuration = SignedDuration::from_secs(300);
/// The kubelet refreshes a projected token at 80 % of its life, or after
/// 24 hours, whichever comes first.
const REFRESH_CAP: SignedDuration = SignedDuration::from_secs(24 * 3600);

/// What retires: an issuer or a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Retiring {
    Issuer,
    Key,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "verdict")]
pub(crate) enum Verdict {
    /// Nothing that holds a token of it is left.
    SafeNow,
    /// Once every refreshing token has been refreshed.
    SafeAfter { at: Timestamp },
    /// These owners and pods must be recreated first.
    BlockedBy { blockers: Vec<Blocker> },
    /// No switch away from it has completed: some API server still signs
    /// with it.
    StillSigning,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Blocker {
    /// The owner, or the pod itself when nothing owns it.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub pods: Vec<String>,
    pub rules: Vec<&'static str>,
    /// What each finding names (a Secret, an audience), for the remedy.
    pub details: Vec<String>,
    /// The command that fixes it.
    pub remedy: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RetirementVerdict {
    pub kind: Retiring,
    pub name: String,
    /// When the switch away from it completed, on the API server's clock.
    pub switch_completed: Option<Timestamp>,
    /// Its retirement, once it happened: when, and who says so.
    pub retired: Option<(Timestamp, &'static str)>,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// The rules whose findings block the retirement of `kind`, before the
/// evidence of when a copy was taken is weighed.
fn blocks(kind: Retiring, rule: RuleId) -> bool {
    match rule {
        // The legacy authenticator compares no issuer.
        RuleId::LegacyTokenEnv | RuleId::LegacyTokenVolume => kind == Retiring::Key,
        RuleId::TokenSubpath => true,
        RuleId::AudienceRetiringIssuer | RuleId::FederatedAudienceUntrusted => {
            kind == Retiring::Issuer
        }
        // A long projection only moves the time its refresh comes.
        RuleId::RefreshExceedsGrace => false,
    }
}

/// The verdicts for every issuer and key that retires or retired in
/// `found`, judged at `now`.
pub(crate) fn decide(evidence: &Evidence<'_>) -> Vec<RetirementVerdict> {
    let found = evidence.found;
    let mut items: Vec<(Retiring, String)> = Vec::new();
    for issuer in found.retiring_issuers.iter().chain(&found.retired_issuers) {
        items.push((Retiring::Issuer, issuer.clone()));
    }
    for (key, state) in &found.keys {
        if matches!(
            state,
            crate::state::KeyState::Retiring | crate::state::KeyState::Retired
        ) {
            items.push((Retiring::Key, key.clone()));
        }
    }
    items.dedup();
    items
        .into_iter()
        .map(|(kind, name)| {
            let completed = completion_away(found, kind, &name);
            let retired = found
                .retirements
                .iter()
                .find(|r| r.kind == kind_str(kind) && r.name == name)
                .and_then(|r| Timestamp::from_second(r.at).ok().map(|at| (at, r.source)));
            let verdict = match completed {
                None => Verdict::StillSigning,
                Some(c) => judge(kind, evidence, c),
            };
            RetirementVerdict {
                kind,
                name,
                switch_completed: completed,
                retired,
                verdict,
            }
        })
        .collect()
}

fn kind_str(kind: Retiring) -> &'static str {
    match kind {
        Retiring::Issuer => "issuer",
        Retiring::Key => "key",
    }
}

/// When the switch away from `name` completed: the completion of the
/// first generation after the last one that signed with it.
fn completion_away(
    found: &crate::state::Discovered,
    kind: Retiring,
    name: &str,
) -> Option<Timestamp> {
    let last = found
        .switches
        .iter()
        .filter(|s| match kind {
            Retiring::Issuer => s.issuer == name,
            Retiring::Key => s.key_id == name,
        })
        .map(|s| s.number)
        .max()?;
    found
        .switches
        .iter()
        .filter(|s| s.number > last)
        .filter_map(|s| s.completed)
        .min()
        .and_then(|c| Timestamp::from_second(c).ok())
}

fn judge(kind: Retiring, evidence: &Evidence<'_>, completed: Timestamp) -> Verdict {
    let mut blockers: BTreeMap<(String, String, String), Blocker> = BTreeMap::new();
    let mut safe_at = None::<Timestamp>;
    for pod in evidence.pods.iter().filter(|p| p.facts.has_token) {
        let blocking: Vec<&(RuleId, String)> = pod
            .findings
            .iter()
            .filter(|(r, _)| blocks(kind, *r))
            .filter(|(r, _)| *r != RuleId::TokenSubpath || !copied_after(&pod.facts, completed))
            .collect();
        if !blocking.is_empty() {
            let owner = evidence.owner_of(pod);
            let entry = blockers
                .entry((
                    owner.namespace.clone(),
                    owner.kind.clone(),
                    owner.name.clone(),
                ))
                .or_insert_with(|| Blocker {
                    remedy: remedy(&owner.kind, &owner.namespace, &owner.name, &blocking),
                    kind: owner.kind,
                    namespace: owner.namespace,
                    name: owner.name,
                    pods: Vec::new(),
                    rules: Vec::new(),
                    details: Vec::new(),
                });
            entry.pods.push(pod.facts.name.clone());
            for (rule, detail) in blocking {
                if !entry.rules.contains(&rule.as_str()) {
                    entry.rules.push(rule.as_str());
                }
                if !detail.is_empty() && !entry.details.contains(detail) {
                    entry.details.push(detail.clone());
                }
            }
            continue;
        }
        if let Some(at) = refreshed_at(&pod.facts, completed) {
            safe_at = Some(safe_at.map_or(at, |s| s.max(at)));
        }
    }
    if kind == Retiring::Key {
        for token in evidence.legacy.values() {
            if token.last_used.is_some() && !token.mounted_by(evidence.pods) {
                let blocker = token.blocker();
                blockers.insert(
                    (
                        blocker.namespace.clone(),
                        blocker.kind.clone(),
                        blocker.name.clone(),
                    ),
                    blocker,
                );
            }
        }
    }
    if !blockers.is_empty() {
        return Verdict::BlockedBy {
            blockers: blockers.into_values().collect(),
        };
    }
    match safe_at {
        Some(at) if at > evidence.now => Verdict::SafeAfter { at },
        _ => Verdict::SafeNow,
    }
}

/// Whether a `subPath` copy of the pod's projected token, taken when its
/// containers started, holds a token minted after `completed`: always for
/// a pod created after it (whenever it starts, its volume is new), and for
/// an older one when every container started after the volume was
/// refreshed (a later second only, as for creation).
fn copied_after(facts: &PodFacts, completed: Timestamp) -> bool {
    match refreshed_at(facts, completed) {
        None => true,
        Some(fresh_from) => facts.started.is_some_and(|s| s > fresh_from),
    }
}

/// When every refreshing token of a pod holds one minted after the switch
/// completed; `None` when it was created after (its first tokens are).
/// Both times are whole seconds, and a token's `iat` is cut down to one, so
/// a pod created in the second the switch completed may predate it: only a
/// later second is after.
pub(crate) fn refreshed_at(facts: &PodFacts, completed: Timestamp) -> Option<Timestamp> {
    if facts.created.is_some_and(|c| c > completed) {
        return None;
    }
    completed
        .checked_add(refresh_of(facts))
        .and_then(|t| t.checked_add(MARGIN))
        .ok()
}

/// How long after a moment every projected token of the pod has been
/// refreshed: min(0.8 × its longest TTL, 24 h).
pub(crate) fn refresh_of(facts: &PodFacts) -> SignedDuration {
    let ttl = facts.ttls.iter().copied().max().unwrap_or(3600);
    SignedDuration::from_secs(ttl * 8 / 10).min(REFRESH_CAP)
}

/// The command that fixes a blocker: `issuer-guard restart` for the owner,
/// and what it does by hand.
fn remedy(kind: &str, namespace: &str, name: &str, findings: &[&(RuleId, String)]) -> String {
    let only_volume = findings
        .iter()
        .all(|(r, _)| *r == RuleId::LegacyTokenVolume);
    if only_volume {
        let secrets: Vec<&str> = findings.iter().map(|(_, d)| d.as_str()).collect();
        return format!(
            "regenerate the legacy token Secret (kubectl delete secret -n {namespace} {}; the token controller makes it again with the new key)",
            secrets.join(" ")
        );
    }
    let by_hand = match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" => {
            format!(
                "kubectl rollout restart -n {namespace} {}/{name}",
                kind.to_lowercase()
            )
        }
        "ReplicationController" => format!(
            "kubectl scale -n {namespace} rc/{name} --replicas=0, then back to its count (the seed runbook; it has downtime)"
        ),
        "Pod" => format!(
            "kubectl get pod -n {namespace} {name} -o yaml | kubectl replace --force -f - (after fixing its spec)"
        ),
        "Job" | "CronJob" => {
            return format!(
                "let the Job's pods finish, or delete them yourself once their work is done (kubectl delete pod -n {namespace} <pod>)"
            );
        }
        other => format!("kubectl delete pod -n {namespace} <pod>; its {other} makes them again"),
    };
    format!(
        "issuer-guard restart -n {namespace} --owner {}/{name} (by hand: {by_hand})",
        kind.to_lowercase()
    )
}

#[cfg(test)]
mod tests;
