//! The inventory's metrics: counts and verdicts only. Which pods block is
//! for `issuer-guard status` to say, with the caller's own credentials; an
//! unauthenticated scrape never lists pod names.

use std::sync::atomic::AtomicU64;

use jiff::Timestamp;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::retirement::{Assessment, Retiring, Verdict};

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct GenerationLabels {
    generation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RuleLabels {
    rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ItemLabels {
    kind: &'static str,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct VerdictLabels {
    kind: &'static str,
    name: String,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RetiredLabels {
    kind: &'static str,
    name: String,
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReasonLabels {
    pub(super) reason: &'static str,
}

pub(super) struct Metrics {
    registry: Registry,
    pods: Family<GenerationLabels, Gauge>,
    at_risk: Family<RuleLabels, Gauge>,
    verdict: Family<VerdictLabels, Gauge>,
    safe_after: Family<ItemLabels, FloatGauge>,
    blocking_pods: Family<ItemLabels, Gauge>,
    blocking_owners: Family<ItemLabels, Gauge>,
    blocked_for: Family<ItemLabels, FloatGauge>,
    broken_pods: Family<ItemLabels, Gauge>,
    retired: Family<RetiredLabels, Gauge>,
    accounts: Family<StateLabels, Gauge>,
    legacy: Family<StateLabels, Gauge>,
    api_server_time: FloatGauge,
    pub(super) synced: Gauge,
    pub(super) relists: Family<ReasonLabels, Counter>,
    pub(super) refused: Family<ReasonLabels, Counter>,
}

fn kind(k: Retiring) -> &'static str {
    match k {
        Retiring::Issuer => "issuer",
        Retiring::Key => "key",
    }
}

fn seconds(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

impl Metrics {
    pub(super) fn new() -> Self {
        let mut registry = Registry::with_prefix("issuer_guard_inventory");
        let m = Metrics {
            pods: Family::default(),
            at_risk: Family::default(),
            verdict: Family::default(),
            safe_after: Family::default(),
            blocking_pods: Family::default(),
            blocking_owners: Family::default(),
            blocked_for: Family::default(),
            broken_pods: Family::default(),
            retired: Family::default(),
            accounts: Family::default(),
            legacy: Family::default(),
            api_server_time: FloatGauge::default(),
            synced: Gauge::default(),
            relists: Family::default(),
            refused: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "pods",
            "Pods per stamped generation (unstamped: older than the install)",
            m.pods.clone(),
        );
        registry.register(
            "at_risk_pods",
            "Pods with a finding of this rule",
            m.at_risk.clone(),
        );
        registry.register(
            "verdict",
            "1 for the verdict in force on retiring this issuer or key: safe_now, safe_after, blocked or still_signing",
            m.verdict.clone(),
        );
        registry.register(
            "safe_after_timestamp_seconds",
            "When retiring it becomes safe, on the API server's clock",
            m.safe_after.clone(),
        );
        registry.register(
            "blocking_pods",
            "Pods that block retiring it",
            m.blocking_pods.clone(),
        );
        registry.register(
            "blocking_owners",
            "What blocks retiring it, by owner (a Deployment counts once; an unmounted legacy token Secret in use counts too)",
            m.blocking_owners.clone(),
        );
        registry.register(
            "blocked_for_seconds",
            "While blocked: seconds since the switch away from it completed, on the API server's clock",
            m.blocked_for.clone(),
        );
        registry.register(
            "broken_pods",
            "Blocking pods of a retirement that happened: broken now",
            m.broken_pods.clone(),
        );
        registry.register(
            "retired",
            "1 once its retirement happened, by source (observed or declared)",
            m.retired.clone(),
        );
        registry.register(
            "recreated_account_pods",
            "Pods older than their ServiceAccount: heals (at the next refresh) or broken (a copy, or the account is gone)",
            m.accounts.clone(),
        );
        registry.register(
            "legacy_tokens",
            "Legacy token Secrets: in_use (the API server's last-used label) or idle",
            m.legacy.clone(),
        );
        registry.register(
            "api_server_time_seconds",
            "The API server's clock at the last assessment",
            m.api_server_time.clone(),
        );
        registry.register(
            "synced",
            "1 once every watch has listed and an assessment was made",
            m.synced.clone(),
        );
        registry.register(
            "relists",
            "Pod relists, by reason (a new ledger or set of legacy token Secrets changes the findings)",
            m.relists.clone(),
        );
        registry.register(
            "ledger_refused",
            "Ledger versions refused, by reason; the last valid one stays in force",
            m.refused.clone(),
        );
        Metrics { registry, ..m }
    }

    pub(super) fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Sets every gauge from `a`, made at `now`. Families are cleared first:
    /// an issuer or key that no longer retires leaves no series behind.
    pub(super) fn record(&self, a: &Assessment, now: Timestamp) {
        self.api_server_time.set(seconds(now));
        self.pods.clear();
        for (generation, n) in &a.per_generation {
            self.pods
                .get_or_create(&GenerationLabels {
                    generation: generation.clone(),
                })
                .set(n.cast_signed_i64());
        }
        self.at_risk.clear();
        for (rule, owners) in &a.at_risk {
            let n: usize = owners.values().sum();
            self.at_risk
                .get_or_create(&RuleLabels { rule })
                .set(n.cast_signed_i64());
        }
        for family in [
            &self.blocking_pods,
            &self.blocking_owners,
            &self.broken_pods,
        ] {
            family.clear();
        }
        self.safe_after.clear();
        self.blocked_for.clear();
        self.verdict.clear();
        self.retired.clear();
        for v in &a.verdicts {
            let item = ItemLabels {
                kind: kind(v.kind),
                name: v.name.clone(),
            };
            let (verdict, pods, owners) = match &v.verdict {
                Verdict::SafeNow => ("safe_now", 0, 0),
                Verdict::StillSigning => ("still_signing", 0, 0),
                Verdict::SafeAfter { at } => {
                    self.safe_after.get_or_create(&item).set(seconds(*at));
                    ("safe_after", 0, 0)
                }
                Verdict::BlockedBy { blockers } => {
                    let pods: usize = blockers.iter().map(|b| b.pods.len()).sum();
                    ("blocked", pods, blockers.len())
                }
            };
            for one in ["safe_now", "safe_after", "blocked", "still_signing"] {
                self.verdict
                    .get_or_create(&VerdictLabels {
                        kind: item.kind,
                        name: item.name.clone(),
                        verdict: one,
                    })
                    .set(i64::from(one == verdict));
            }
            self.blocking_pods
                .get_or_create(&item)
                .set(pods.cast_signed_i64());
            self.blocking_owners
                .get_or_create(&item)
                .set(owners.cast_signed_i64());
            let blocked_for = match (verdict, v.switch_completed) {
                ("blocked", Some(c)) => now.duration_since(c).as_secs_f64().max(0.0),
                _ => 0.0,
            };
            self.blocked_for.get_or_create(&item).set(blocked_for);
            let broken = if v.retired.is_some() { pods } else { 0 };
            self.broken_pods
                .get_or_create(&item)
                .set(broken.cast_signed_i64());
            if let Some((_, source)) = v.retired {
                self.retired
                    .get_or_create(&RetiredLabels {
                        kind: item.kind,
                        name: item.name.clone(),
                        source,
                    })
                    .set(1);
            }
        }
        let (mut heals, mut broken) = (0_usize, 0_usize);
        for p in a.accounts.iter().flat_map(|r| &r.pods) {
            if p.heals.is_some() {
                heals += 1;
            } else {
                broken += 1;
            }
        }
        self.accounts
            .get_or_create(&StateLabels { state: "heals" })
            .set(heals.cast_signed_i64());
        self.accounts
            .get_or_create(&StateLabels { state: "broken" })
            .set(broken.cast_signed_i64());
        let in_use = a
            .legacy
            .iter()
            .filter(|(t, _)| t.last_used.is_some())
            .count();
        self.legacy
            .get_or_create(&StateLabels { state: "in_use" })
            .set(in_use.cast_signed_i64());
        self.legacy
            .get_or_create(&StateLabels { state: "idle" })
            .set((a.legacy.len() - in_use).cast_signed_i64());
    }
}

/// Counts fit an i64 by far; saturate rather than wrap if one did not.
trait CastSigned {
    fn cast_signed_i64(self) -> i64;
}

impl CastSigned for usize {
    fn cast_signed_i64(self) -> i64 {
        i64::try_from(self).unwrap_or(i64::MAX)
    }
}
