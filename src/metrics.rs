//! Prometheus metrics, served as text on the health listener's /metrics.
//! Label values are `&'static str` so recording a request allocates nothing.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub webhook: &'static str,
    pub kind: &'static str,
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub webhook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FindingLabels {
    pub rule: &'static str,
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GenerationLabels {
    pub issuer: String,
    pub key_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuerLabels {
    pub state: &'static str,
    pub issuer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    pub state: &'static str,
    pub key_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NumberLabels {
    pub generation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetirementLabels {
    pub kind: &'static str,
    pub name: String,
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// The rotation timeline discovery keeps: servers per generation, switch
/// and retirement times, and whether the ledger can be believed.
pub struct Timeline {
    pub apiservers: Family<NumberLabels, Gauge>,
    pub switch_started: Family<NumberLabels, Gauge>,
    pub switch_completed: Family<NumberLabels, Gauge>,
    pub retirement: Family<RetirementLabels, Gauge>,
    pub ledger_refused: Family<ReasonLabels, Counter>,
    pub ledger_refused_now: Gauge,
    pub ledger_write_conflicts: Counter,
    pub order_unknown: Gauge,
    pub declared_contradicted: Counter,
}

impl Timeline {
    fn register(registry: &mut Registry) -> Self {
        let t = Self {
            apiservers: Family::default(),
            switch_started: Family::default(),
            switch_completed: Family::default(),
            retirement: Family::default(),
            ledger_refused: Family::default(),
            ledger_refused_now: Gauge::default(),
            ledger_write_conflicts: Counter::default(),
            order_unknown: Gauge::default(),
            declared_contradicted: Counter::default(),
        };
        registry.register(
            "apiservers",
            "API servers that signed with each generation at the last probe round (\"unknown\": a pair the ledger has not numbered)",
            t.apiservers.clone(),
        );
        registry.register(
            "switch_started_timestamp_seconds",
            "When the first API server signed with each generation, on the API server's clock",
            t.switch_started.clone(),
        );
        registry.register(
            "switch_completed_timestamp_seconds",
            "When every API server signed with each generation, on the API server's clock; absent while under way",
            t.switch_completed.clone(),
        );
        registry.register(
            "retirement_timestamp_seconds",
            "When an issuer or key was retired, by kind, name and source (observed from the API servers, or declared)",
            t.retirement.clone(),
        );
        registry.register(
            "ledger_refused",
            "Ledgers read and not adopted, by reason: invalid (fails its own checks or the API server's clock), diverged (another history than the one held), newer_schema (written by a later release; read, not written)",
            t.ledger_refused.clone(),
        );
        registry.register(
            "ledger_refused_now",
            "1 while the stored ledger is refused and the last valid one held stays in force",
            t.ledger_refused_now.clone(),
        );
        registry.register(
            "ledger_write_conflicts",
            "Ledger writes that lost a race with another replica (409) and were applied again",
            t.ledger_write_conflicts.clone(),
        );
        registry.register(
            "generation_order_unknown",
            "1 while a new ledger has seen several signing pairs and nothing says which is newer",
            t.order_unknown.clone(),
        );
        registry.register(
            "declared_retirement_contradicted",
            "Issuers declared retired (rotation.retiredIssuers) that the API servers still accept",
            t.declared_contradicted.clone(),
        );
        t
    }
}

pub struct Metrics {
    registry: Registry,
    pub timeline: Timeline,
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<WebhookLabels, Histogram>,
    pub findings: Family<FindingLabels, Counter>,
    pub tls_reloads: Family<ResultLabels, Counter>,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub client_ca_reloads: Family<ResultLabels, Counter>,
    pub legacy_token_secrets: Gauge,
    pub secret_watch_failing_seconds: Gauge,
    pub tls_cert_not_after: Gauge,
    pub tls_cert_expiring: Gauge,
    pub body_budget_waits: Counter,
    pub generation: Gauge,
    pub generation_info: Family<GenerationLabels, Gauge>,
    pub rotation_issuers: Family<IssuerLabels, Gauge>,
    pub rotation_keys: Family<KeyLabels, Gauge>,
    pub discovery_errors: Family<StageLabels, Counter>,
    pub discovery_last_success: Gauge,
    pub discovery_age_seconds: Gauge,
    pub tls_ca_not_after: Gauge,
    pub tls_ca_bundle_updates: Counter,
    pub tls_rotation_steps: Family<StepLabels, Counter>,
    pub tls_self_errors: Family<StageLabels, Counter>,
}

fn duration_histogram() -> Histogram {
    // 50µs .. ~3.3s: a review is sub-millisecond; the top buckets catch stalls.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 17))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("issuer_guard");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<WebhookLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let findings = Family::<FindingLabels, Counter>::default();
        let tls_reloads = Family::<ResultLabels, Counter>::default();
        let config_reloads = Family::<ResultLabels, Counter>::default();
        let client_ca_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "client_ca_reloads",
            "Client CA bundle (--client-ca) reloads from disk, by result",
            client_ca_reloads.clone(),
        );
        let legacy_token_secrets = Gauge::default();
        let tls_cert_not_after = Gauge::default();
        let secret_watch_failing_seconds = Gauge::default();
        registry.register(
            "secret_watch_failing_seconds",
            "How long the Secret watch has been failing; 0 while it is in sync",
            secret_watch_failing_seconds.clone(),
        );
        let tls_cert_expiring = Gauge::default();
        let body_budget_waits = Counter::default();
        registry.register(
            "body_budget_waits",
            "Reviews that waited for room in --max-inflight-bytes before their body was read",
            body_budget_waits.clone(),
        );
        registry.register(
            "tls_cert_not_after_timestamp_seconds",
            "When the served certificate expires, in Unix seconds",
            tls_cert_not_after.clone(),
        );
        registry.register(
            "tls_cert_expiring",
            "1 while the served certificate expires within --cert-expiry-warning",
            tls_cert_expiring.clone(),
        );
        registry.register(
            "admission_requests",
            "Admission reviews answered, by webhook, object kind and decision",
            requests.clone(),
        );
        registry.register(
            "admission_duration_seconds",
            "Time to answer an admission review, from body received to response encoded",
            duration.clone(),
        );
        registry.register(
            "findings",
            "Rule findings reported, by rule and the action taken",
            findings.clone(),
        );
        registry.register(
            "tls_reloads",
            "Serving certificate reloads (from disk, or from the --tls-secret Secret), by result",
            tls_reloads.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration file reloads, by result",
            config_reloads.clone(),
        );
        registry.register(
            "legacy_token_secrets",
            "Legacy service-account token Secrets known from the cluster watch",
            legacy_token_secrets.clone(),
        );
        let generation = Gauge::default();
        registry.register(
            "generation",
            "The issuer generation new pods are stamped with",
            generation.clone(),
        );
        let generation_info = Family::<GenerationLabels, Gauge>::default();
        registry.register(
            "generation_info",
            "1 for the issuer and signing key id behind the current generation",
            generation_info.clone(),
        );
        let rotation_issuers = Family::<IssuerLabels, Gauge>::default();
        registry.register(
            "rotation_issuers",
            "1 for each issuer in a rotation, by state: planned, retiring or retired",
            rotation_issuers.clone(),
        );
        let rotation_keys = Family::<KeyLabels, Gauge>::default();
        registry.register(
            "rotation_keys",
            "1 for each signing key known, by state: signing, staged, retiring or retired",
            rotation_keys.clone(),
        );
        let discovery_errors = Family::<StageLabels, Counter>::default();
        registry.register(
            "discovery_errors",
            "Failed discoveries, by the stage that failed",
            discovery_errors.clone(),
        );
        let discovery_last_success = Gauge::default();
        registry.register(
            "discovery_last_success_timestamp_seconds",
            "When discovery last succeeded, in Unix seconds; 0 before the first success",
            discovery_last_success.clone(),
        );
        let discovery_age_seconds = Gauge::default();
        registry.register(
            "discovery_age_seconds",
            "Seconds since discovery last succeeded (since start before the first success)",
            discovery_age_seconds.clone(),
        );
        let tls_ca_not_after = Gauge::default();
        registry.register(
            "tls_ca_not_after_timestamp_seconds",
            "With --tls-secret: when the CA that signed the served certificate expires, in Unix seconds",
            tls_ca_not_after.clone(),
        );
        let tls_ca_bundle_updates = Counter::default();
        registry.register(
            "tls_ca_bundle_updates",
            "With --tls-secret: webhook configurations whose caBundle this replica set",
            tls_ca_bundle_updates.clone(),
        );
        let tls_rotation_steps = Family::<StepLabels, Counter>::default();
        registry.register(
            "tls_rotation_steps",
            "With --tls-secret: steps this replica wrote to the TLS Secret, by step: create, replace-expired, reissue, renew, stage, published, unpublished, switch, drop, restore",
            tls_rotation_steps.clone(),
        );
        let tls_self_errors = Family::<StageLabels, Counter>::default();
        registry.register(
            "tls_self_errors",
            "With --tls-secret: failed passes of the certificate loop, by stage: secret, webhooks, issue, serve",
            tls_self_errors.clone(),
        );
        let timeline = Timeline::register(&mut registry);
        Self {
            registry,
            timeline,
            requests,
            duration,
            findings,
            tls_reloads,
            config_reloads,
            client_ca_reloads,
            legacy_token_secrets,
            secret_watch_failing_seconds,
            tls_cert_not_after,
            tls_cert_expiring,
            body_budget_waits,
            generation,
            generation_info,
            rotation_issuers,
            rotation_keys,
            discovery_errors,
            discovery_last_success,
            discovery_age_seconds,
            tls_ca_not_after,
            tls_ca_bundle_updates,
            tls_rotation_steps,
            tls_self_errors,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
