//! One live Pod judged straight from a list page's text: `status` reads
//! tens of thousands of them, and building a `serde_json::Value` for each
//! cost two thirds of its time. The hot path's reader (`object::from_json`)
//! reads the view the rules judge and, in a second pass, only the facts the
//! verdict needs. Whatever it declines is read into a `Value` and judged by
//! [`judge_pod`], so both ways give one answer.

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, de::IgnoredAny};
use serde_json::Value;

use super::pods::{DEFAULT_TTL_SECONDS, JudgedPod, PodFacts, judge_pod};
use crate::{
    config::Config,
    judge::{self, Known},
    object::{self, GENERATION_LABEL, Kind, Marks, ObjectView, Text},
};

/// Judges one item of a Pod list, given as its JSON text. `Err` says which
/// pod (as far as it can be read) is not a readable Pod, or why the text is
/// not one.
pub(crate) fn judge_pod_text(
    config: &Config,
    known: Known<'_>,
    text: &str,
) -> Result<JudgedPod, String> {
    if let Some(judged) = read_fast(config, known, text) {
        return Ok(judged);
    }
    let mut pod: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    // A list's items carry no kind of their own.
    if let Some(map) = pod.as_object_mut() {
        map.insert("apiVersion".into(), Value::from("v1"));
        map.insert("kind".into(), Value::from("Pod"));
    }
    judge_pod(config, known, &pod).ok_or_else(|| {
        format!(
            "{}/{}",
            pod["metadata"]["namespace"].as_str().unwrap_or_default(),
            pod["metadata"]["name"].as_str().unwrap_or_default()
        )
    })
}

/// `None` when the fast reader declines the text.
fn read_fast(config: &Config, known: Known<'_>, text: &str) -> Option<JudgedPod> {
    let facts = object::from_json::<FactsView>(text).ok()?.into_facts();
    let obj = object::from_json::<ObjectView>(text).ok()?;
    let judgement = judge::view(config, known, Kind::Pod, &obj, &facts.namespace);
    Some(JudgedPod::new(facts, &judgement))
}

/// Whether a key is there, whatever its value: `PodFacts::of` asks
/// `get(key).is_some()`, which a `null` satisfies too.
#[derive(Debug, Default, Clone, Copy)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(d).map(|_| Present(true))
    }
}

/// Everything `PodFacts::of` reads, and nothing else. A field of the wrong
/// type (a `null` where a list is, say) fails the read, and the pod goes
/// the `Value` way.
#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct FactsView<'a> {
    #[serde(borrow)]
    metadata: MetaFacts<'a>,
    #[serde(borrow)]
    spec: SpecFacts<'a>,
    #[serde(borrow)]
    status: StatusFacts<'a>,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct MetaFacts<'a> {
    #[serde(borrow)]
    namespace: Option<Text<'a>>,
    #[serde(borrow)]
    name: Option<Text<'a>>,
    #[serde(borrow)]
    creation_timestamp: Option<Text<'a>>,
    #[serde(borrow)]
    labels: Marks<'a>,
    #[serde(borrow)]
    owner_references: Vec<OwnerFacts<'a>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct OwnerFacts<'a> {
    #[serde(borrow)]
    kind: Option<Text<'a>>,
    #[serde(borrow)]
    name: Option<Text<'a>>,
    controller: Option<bool>,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct SpecFacts<'a> {
    #[serde(borrow)]
    service_account_name: Option<Text<'a>>,
    volumes: Vec<VolumeFacts>,
    containers: Vec<ContainerFacts>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct VolumeFacts {
    secret: Present,
    projected: Option<ProjectedFacts>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ProjectedFacts {
    sources: Vec<SourceFacts>,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct SourceFacts {
    service_account_token: TokenKey,
}

/// `None` when the source names no token; otherwise its
/// `expirationSeconds`, if any. A `null` token is a token of the default
/// lifetime, as `PodFacts::of` counts it.
#[derive(Default)]
struct TokenKey(Option<Option<i64>>);

impl<'de> Deserialize<'de> for TokenKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let token = Option::<TokenFacts>::deserialize(d)?;
        Ok(TokenKey(Some(token.and_then(|t| t.expiration_seconds))))
    }
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct TokenFacts {
    expiration_seconds: Option<i64>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ContainerFacts {
    env: Vec<EnvFacts>,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct EnvFacts {
    value_from: Option<ValueFromFacts>,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ValueFromFacts {
    secret_key_ref: Present,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct StatusFacts<'a> {
    #[serde(borrow)]
    container_statuses: Vec<ContainerStatusFacts<'a>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ContainerStatusFacts<'a> {
    #[serde(borrow)]
    state: Option<StateFacts<'a>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct StateFacts<'a> {
    #[serde(borrow)]
    running: Option<RunningFacts<'a>>,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RunningFacts<'a> {
    #[serde(borrow)]
    started_at: Option<Text<'a>>,
}

impl FactsView<'_> {
    /// The same facts `PodFacts::of` reads from a `Value`.
    fn into_facts(self) -> PodFacts {
        let text = |t: Option<Text<'_>>| t.map(|t| t.0.into_owned()).unwrap_or_default();
        let time = |t: &Option<Text<'_>>| t.as_deref().and_then(|s| s.parse::<Timestamp>().ok());
        let FactsView {
            metadata: meta,
            spec,
            status,
        } = self;
        let owner = meta
            .owner_references
            .into_iter()
            .find(|o| o.controller == Some(true))
            .map(|o| (text(o.kind), text(o.name)));
        let started = status
            .container_statuses
            .iter()
            .filter_map(|c| time(&c.state.as_ref()?.running.as_ref()?.started_at))
            .min();
        let ttls: Vec<i64> = spec
            .volumes
            .iter()
            .flat_map(|v| v.projected.iter().flat_map(|p| &p.sources))
            .filter_map(|s| s.service_account_token.0)
            .map(|seconds| seconds.unwrap_or(DEFAULT_TTL_SECONDS))
            .collect();
        let legacy_volume = spec.volumes.iter().any(|v| v.secret.0);
        let env_from_secret = spec
            .containers
            .iter()
            .flat_map(|c| &c.env)
            .any(|e| e.value_from.as_ref().is_some_and(|f| f.secret_key_ref.0));
        PodFacts {
            created: time(&meta.creation_timestamp),
            generation: meta
                .labels
                .get(GENERATION_LABEL)
                .and_then(|g| g.parse().ok()),
            namespace: text(meta.namespace),
            name: text(meta.name),
            owner,
            account: spec
                .service_account_name
                .map_or_else(|| "default".to_owned(), |a| a.0.into_owned()),
            started,
            has_token: !ttls.is_empty() || legacy_volume || env_from_secret,
            ttls,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        rules::{LegacySecrets, NO_CREDENTIALS, RuleId},
        state::{Discovered, Generation, KeyState},
    };

    /// Issuer `old` retiring for `new`, key `a` for `b`.
    fn config() -> Config {
        let found = Discovered {
            generation: Generation::new(2, "https://new.example", "b"),
            retiring_issuers: vec!["https://old.example".into()],
            retired_issuers: Vec::new(),
            next_issuer: None,
            keys: vec![
                ("a".into(), KeyState::Retiring),
                ("b".into(), KeyState::Signing),
            ],
            switches: Vec::new(),
            retirements: Vec::new(),
            candidate_issuers: Vec::new(),
            observed_at: 0,
        };
        Config::embedded_default().with_discovered(&found)
    }

    /// Arrays nested `n` deep: deeper than the fast reader skips, not
    /// deeper than serde_json reads.
    fn deep(n: usize) -> Value {
        (0..n).fold(json!(1), |inner, _| json!([inner]))
    }

    fn pods() -> Vec<Value> {
        let access = json!({"name": "kube-api-access-x", "projected": {"sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}});
        vec![
            json!({"metadata": {"namespace": "ns", "name": "plain", "creationTimestamp": "2026-12-01T10:00:00Z",
                    "labels": {"app": "web", GENERATION_LABEL: "3"}, "annotations": {"x": "y"},
                    "ownerReferences": [{"kind": "ReplicaSet", "name": "web-5d", "controller": true, "uid": "u"}],
                    "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]},
                "spec": {"serviceAccountName": "web", "volumes": [access],
                    "containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 80}],
                        "volumeMounts": [{"name": "kube-api-access-x", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}]},
                "status": {"phase": "Running", "containerStatuses": [
                    {"name": "app", "state": {"running": {"startedAt": "2026-12-01T10:00:05Z"}}},
                    {"name": "side", "state": {"waiting": {"reason": "x"}}}]}}),
            json!({"metadata": {"namespace": "ns", "name": "copied"},
                "spec": {"volumes": [access],
                    "containers": [{"name": "app", "volumeMounts": [{"name": "kube-api-access-x",
                        "mountPath": "/token", "subPath": "token"}]}]}}),
            json!({"metadata": {"namespace": "ns", "name": "legacy"},
                "spec": {"volumes": [{"name": "t", "secret": {"secretName": "legacy-tok"}}],
                    "containers": [{"name": "app", "env": [
                        {"name": "PLAIN", "value": "1"},
                        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "legacy-tok", "key": "token"}}}]}]}}),
            json!({"metadata": {"namespace": "ns", "name": "caf\u{e9}-\"quoted\""},
                "spec": {"volumes": [{"name": "vault", "projected": {"sources": [
                    {"serviceAccountToken": {"audience": "https://old.example", "path": "t"}}]}}],
                    "containers": [{"name": "app", "volumeMounts": [{"name": "vault", "mountPath": "/v"}]}]}}),
            json!({"metadata": {"namespace": "ns", "name": "deep"},
                "spec": {"volumes": [{"name": "v", "projected": {"sources": [
                    {"serviceAccountToken": {"expirationSeconds": 600, "path": "t"}},
                    {"serviceAccountToken": null}]}}],
                    "containers": [{"name": "app"}]},
                "status": {"deep": deep(70)}}),
            json!({"metadata": {"namespace": "ns", "name": "no-token"},
                "spec": {"automountServiceAccountToken": false, "containers": [{"name": "c"}]}}),
        ]
    }

    fn judge_both(pod: &Value) -> (Result<JudgedPod, String>, Option<JudgedPod>) {
        let (config, mut secrets) = (config(), LegacySecrets::default());
        secrets.insert("ns", "legacy-tok");
        let known = Known {
            secrets: &secrets,
            credentials: &NO_CREDENTIALS,
        };
        let mut with_kind = pod.clone();
        with_kind["apiVersion"] = json!("v1");
        with_kind["kind"] = json!("Pod");
        (
            judge_pod_text(&config, known, &pod.to_string()),
            judge_pod(&config, known, &with_kind),
        )
    }

    #[test]
    fn the_text_reader_and_the_value_reader_agree() {
        for pod in pods() {
            let (text, value) = judge_both(&pod);
            let (text, value) = (text.unwrap(), value.unwrap());
            assert_eq!(text.facts, value.facts, "{pod}");
            assert_eq!(text.findings, value.findings, "{pod}");
        }
    }

    #[test]
    fn the_facts_and_findings_are_the_pods_own() {
        let judged: Vec<JudgedPod> = pods().iter().map(|p| judge_both(p).0.unwrap()).collect();
        let rules = |i: usize| -> Vec<RuleId> { judged[i].findings.iter().map(|f| f.0).collect() };
        let plain = &judged[0].facts;
        assert_eq!(plain.owner, Some(("ReplicaSet".into(), "web-5d".into())));
        assert_eq!((plain.generation, plain.account.as_str()), (Some(3), "web"));
        assert_eq!(plain.ttls, [3607]);
        assert_eq!(plain.started, Some("2026-12-01T10:00:05Z".parse().unwrap()));
        assert!(rules(0).is_empty(), "{:?}", judged[0].findings);
        assert!(
            rules(1).contains(&RuleId::TokenSubpath),
            "{:?}",
            judged[1].findings
        );
        assert!(judged[2].facts.has_token);
        assert!(
            rules(2).contains(&RuleId::LegacyTokenEnv),
            "{:?}",
            judged[2].findings
        );
        assert!(
            rules(2).contains(&RuleId::LegacyTokenVolume),
            "{:?}",
            judged[2].findings
        );
        assert_eq!(judged[3].facts.name, "caf\u{e9}-\"quoted\"");
        assert!(
            rules(3).contains(&RuleId::AudienceRetiringIssuer),
            "{:?}",
            judged[3].findings
        );
        assert_eq!(judged[4].facts.ttls, [600, 3600]);
        assert!(!judged[5].facts.has_token);
    }

    #[test]
    fn what_the_fast_reader_declines_is_read_as_a_value() {
        let pods = pods();
        let (mut secrets, config) = (LegacySecrets::default(), config());
        secrets.insert("ns", "legacy-tok");
        let known = Known::secrets(&secrets);
        let fast: Vec<bool> = pods
            .iter()
            .map(|p| read_fast(&config, known, &p.to_string()).is_some())
            .collect();
        assert_eq!(fast, [true, true, true, true, false, true]);
        let float = json!({"metadata": {"namespace": "ns", "name": "float"},
            "spec": {"volumes": [{"name": "v", "projected": {"sources": [
                {"serviceAccountToken": {"expirationSeconds": 3600.5, "path": "t"}}]}}]}});
        let err = judge_pod_text(&config, known, &float.to_string()).unwrap_err();
        assert_eq!(
            err, "ns/float",
            "neither reader takes a float for an integer"
        );
        let err = judge_pod_text(&config, known, "{\"metadata\": [").unwrap_err();
        assert!(err.starts_with("not JSON"), "{err}");
        let err = judge_pod_text(
            &config,
            known,
            r#"{"metadata": {"namespace": "ns", "name": "p"}, "spec": 7}"#,
        )
        .unwrap_err();
        assert_eq!(err, "ns/p");
    }
}
