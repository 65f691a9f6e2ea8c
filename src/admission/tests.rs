//! The webhook's answers to real reviews: stamps, marks, denials, warnings,
//! controller-made objects, and what unusable requests get.

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::{Value, json};

use super::*;
use base64::{Engine as _, engine::general_purpose::STANDARD};

use crate::{config::Config, rules::LegacySecrets};

const SMALL_POD: &str = include_str!("../../tests/fixtures/reviews/pod-small.json");
const DEPLOYMENT: &str = include_str!("../../tests/fixtures/reviews/deployment-denied.json");
const DEPLOYMENT_UPDATE: &str = include_str!("../../tests/fixtures/reviews/deployment-update.json");

const KEY_ROTATION: &str = "generation: {static: {number: 2, issuer: 'https://kubernetes.default.svc.cluster.local', keyId: kid-b}}\nrotation: {retiringKeyIds: [kid-a]}\n";

struct Harness {
    webhook: Webhook,
    config: Arc<ArcSwap<Config>>,
}

fn harness(config: &str) -> Harness {
    harness_with(config, LegacySecrets::default())
}

fn harness_with(config: &str, secrets: LegacySecrets) -> Harness {
    let config = Arc::new(ArcSwap::from_pointee(Config::parse(config).unwrap()));
    Harness {
        webhook: Webhook::new(config.clone(), Arc::new(secrets)),
        config,
    }
}

struct Answer {
    status: u16,
    review: Value,
    decision: &'static str,
}

impl Answer {
    fn response(&self) -> &Value {
        &self.review["response"]
    }
    fn allowed(&self) -> bool {
        self.response()["allowed"].as_bool().unwrap()
    }
    fn warnings(&self) -> Vec<String> {
        self.response()["warnings"]
            .as_array()
            .map(|w| w.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    }
    fn message(&self) -> &str {
        self.response()["status"]["message"]
            .as_str()
            .unwrap_or_default()
    }
    /// The JSON Patch, decoded from its base64 wire form.
    fn patch(&self) -> Option<json_patch::Patch> {
        let text = self.response().get("patch")?.as_str().expect("base64");
        Some(serde_json::from_slice(&STANDARD.decode(text).unwrap()).unwrap())
    }
}

fn ask(h: &Harness, endpoint: Endpoint, body: &str) -> Answer {
    let reviewed = h.webhook.review(endpoint, body.as_bytes());
    let (status, review) = match reviewed.reply {
        Reply::Review(json) => (200, serde_json::from_slice(&json).unwrap()),
        Reply::Unusable(why) => (400, json!({ "error": why })),
    };
    Answer {
        status,
        review,
        decision: reviewed.decision.as_str(),
    }
}

fn edit(body: &str, f: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(body).unwrap();
    f(&mut v);
    v.to_string()
}

fn apply(original: &Value, patch: &json_patch::Patch) -> Value {
    let mut doc = original.clone();
    json_patch::patch(&mut doc, patch).unwrap();
    doc
}

#[test]
fn mutate_stamps_a_new_pod_and_keeps_every_field() {
    let h = harness(KEY_ROTATION);
    let a = ask(&h, Endpoint::Mutate, SMALL_POD);
    assert_eq!(a.status, 200);
    assert_eq!(a.response()["uid"], "7b0c5f0e-2f4b-4d7e-8a1f-0d9c8b7a6e51");
    assert_eq!(a.review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(a.response()["patchType"], "JSONPatch");
    assert!(a.allowed());

    let original: Value =
        serde_json::from_str::<Value>(SMALL_POD).unwrap()["request"]["object"].clone();
    let patched = apply(&original, &a.patch().unwrap());
    let meta = &patched["metadata"];
    assert_eq!(meta["labels"]["issuer-guard.io/generation"], "2");
    assert_eq!(
        meta["annotations"]["issuer-guard.io/issuer"],
        "https://kubernetes.default.svc.cluster.local"
    );
    assert_eq!(meta["annotations"]["issuer-guard.io/key-id"], "kid-b");
    assert!(meta["labels"].get("issuer-guard.io/at-risk").is_none());
    // Everything else is untouched, in the original key order.
    let mut stripped = patched.clone();
    for (map, key) in [
        ("labels", "issuer-guard.io/generation"),
        ("annotations", "issuer-guard.io/issuer"),
        ("annotations", "issuer-guard.io/key-id"),
    ] {
        stripped["metadata"][map]
            .as_object_mut()
            .unwrap()
            .shift_remove(key);
    }
    assert_eq!(stripped.to_string(), original.to_string());

    // Reinvocation sees its own stamp and changes nothing.
    let again = edit(SMALL_POD, |v| v["request"]["object"] = patched.clone());
    let a = ask(&h, Endpoint::Mutate, &again);
    assert!(a.allowed());
    assert!(a.patch().is_none(), "second pass must not patch");
}

#[test]
fn mutate_replaces_a_stale_stamp() {
    let h = harness(KEY_ROTATION);
    let body = edit(SMALL_POD, |v| {
        let m = &mut v["request"]["object"]["metadata"];
        m["labels"]["issuer-guard.io/generation"] = json!("1");
        m["annotations"]["issuer-guard.io/key-id"] = json!("kid-a");
        m["annotations"]["issuer-guard.io/issuer"] =
            json!("https://kubernetes.default.svc.cluster.local");
    });
    let a = ask(&h, Endpoint::Mutate, &body);
    let ops = serde_json::to_value(a.patch().unwrap()).unwrap();
    assert_eq!(
        ops,
        json!([
            {"op": "replace", "path": "/metadata/labels/issuer-guard.io~1generation", "value": "2"},
            {"op": "replace", "path": "/metadata/annotations/issuer-guard.io~1key-id", "value": "kid-b"},
        ])
    );
}

#[test]
fn mutate_creates_missing_maps() {
    let h = harness("");
    let body = edit(SMALL_POD, |v| {
        let m = v["request"]["object"]["metadata"].as_object_mut().unwrap();
        m.remove("labels");
        m.remove("annotations");
    });
    let a = ask(&h, Endpoint::Mutate, &body);
    let ops = serde_json::to_value(a.patch().unwrap()).unwrap();
    assert_eq!(ops[0]["op"], "add");
    assert_eq!(ops[0]["path"], "/metadata/labels");
    assert_eq!(ops[0]["value"], json!({"issuer-guard.io/generation": "1"}));
    assert_eq!(ops[1]["path"], "/metadata/annotations");
}

#[test]
fn validate_denies_a_certain_breakage_in_enforce_mode() {
    let h = harness(KEY_ROTATION);
    let a = ask(&h, Endpoint::Validate, DEPLOYMENT);
    assert_eq!(a.status, 200);
    assert!(!a.allowed());
    assert_eq!(a.response()["uid"], "5c4b3a29-1807-4f6e-9d5c-4b3a2918f7e6");
    assert_eq!(a.response()["status"]["code"], 403);
    let msg = a.message();
    assert!(msg.contains("Deployment \"checkout\""), "{msg}");
    assert!(msg.contains("[token-subpath]"), "{msg}");
    assert!(
        msg.contains("container \"checkout\" at spec.template.spec.containers[0].volumeMounts[0]"),
        "{msg}"
    );
    assert!(msg.contains("kid-a"), "{msg}");
    assert!(msg.contains("issuer-guard.io/ignore"), "{msg}");
    assert_eq!(a.response()["auditAnnotations"]["risks"], "token-subpath");
}

#[test]
fn validate_warns_about_hazards_without_a_rotation() {
    let h = harness("");
    let a = ask(&h, Endpoint::Validate, DEPLOYMENT);
    assert!(a.allowed());
    let w = a.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with(
        "token-subpath: container \"checkout\" at spec.template.spec.containers[0].volumeMounts[0]"
    ));
    assert!(w.iter().all(|w| w.chars().count() < 120));
}

#[test]
fn audit_mode_never_denies_but_overrides_win() {
    let h = harness(&format!("{KEY_ROTATION}mode: audit\n"));
    let a = ask(&h, Endpoint::Validate, DEPLOYMENT);
    assert!(a.allowed());
    assert_eq!(a.warnings().len(), 1);

    h.config.store(Arc::new(
        Config::parse(&format!(
            "{KEY_ROTATION}mode: audit\nrules: {{token-subpath: deny}}\n"
        ))
        .unwrap(),
    ));
    assert!(!ask(&h, Endpoint::Validate, DEPLOYMENT).allowed());

    h.config.store(Arc::new(
        Config::parse(&format!("{KEY_ROTATION}rules: {{token-subpath: off}}\n")).unwrap(),
    ));
    let a = ask(&h, Endpoint::Validate, DEPLOYMENT);
    assert!(a.allowed());
    assert!(a.warnings().is_empty());
}

#[test]
fn mutate_marks_a_workload_at_risk_and_clears_the_mark_when_fixed() {
    let h = harness(&format!("{KEY_ROTATION}mode: audit\n"));
    let a = ask(&h, Endpoint::Mutate, DEPLOYMENT);
    let original: Value =
        serde_json::from_str::<Value>(DEPLOYMENT).unwrap()["request"]["object"].clone();
    let patched = apply(&original, &a.patch().unwrap());
    assert_eq!(
        patched["metadata"]["labels"]["issuer-guard.io/at-risk"],
        "true"
    );
    assert_eq!(
        patched["metadata"]["annotations"]["issuer-guard.io/risks"],
        "token-subpath"
    );
    assert!(
        patched["metadata"]["labels"]
            .get("issuer-guard.io/generation")
            .is_none(),
        "workloads are not stamped"
    );
    assert!(
        patched["spec"]["template"]["metadata"]["labels"]
            .get("issuer-guard.io/at-risk")
            .is_none()
    );

    // The owner removes the subPath: the marks go away on UPDATE.
    let fixed = edit(DEPLOYMENT, |v| {
        v["request"]["operation"] = json!("UPDATE");
        v["request"]["oldObject"] = patched.clone();
        let mut obj = patched.clone();
        obj["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]
            .as_object_mut()
            .unwrap()
            .remove("subPath");
        v["request"]["object"] = obj;
    });
    let a = ask(&h, Endpoint::Mutate, &fixed);
    let ops = serde_json::to_value(a.patch().unwrap()).unwrap();
    assert_eq!(
        ops,
        json!([
            {"op": "remove", "path": "/metadata/labels/issuer-guard.io~1at-risk"},
            {"op": "remove", "path": "/metadata/annotations/issuer-guard.io~1risks"},
        ])
    );
}

#[test]
fn updates_deny_only_new_findings() {
    let h = harness(KEY_ROTATION);
    // The old object already had the subPath: scaling must go through.
    let a = ask(&h, Endpoint::Validate, DEPLOYMENT_UPDATE);
    assert!(a.allowed(), "{}", a.message());
    assert_eq!(a.warnings().len(), 1);
    // The same finding introduced by this update is denied.
    let introduced = edit(DEPLOYMENT_UPDATE, |v| {
        v["request"]["oldObject"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]
            .as_object_mut()
            .unwrap()
            .remove("subPath");
    });
    assert!(!ask(&h, Endpoint::Validate, &introduced).allowed());
}

#[test]
fn opt_out_is_reported_not_silent() {
    let h = harness(KEY_ROTATION);
    let body = edit(DEPLOYMENT, |v| {
        v["request"]["object"]["spec"]["template"]["metadata"]["annotations"]["issuer-guard.io/ignore"] =
            json!("token-subpath, no-such-rule");
    });
    let a = ask(&h, Endpoint::Validate, &body);
    assert!(a.allowed());
    let w = a.warnings();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].contains("opts out of token-subpath (1 hidden)"),
        "{w:?}"
    );
    assert!(w[1].contains("unknown rules: no-such-rule"), "{w:?}");
    // The workload's own metadata does not opt its pods out.
    let body = edit(DEPLOYMENT, |v| {
        v["request"]["object"]["metadata"]["annotations"]["issuer-guard.io/ignore"] =
            json!("token-subpath");
    });
    assert!(!ask(&h, Endpoint::Validate, &body).allowed());
}

#[test]
fn exempt_namespaces_are_untouched() {
    let h = harness(&format!("{KEY_ROTATION}exemptNamespaces: [shop]\n"));
    let a = ask(&h, Endpoint::Validate, DEPLOYMENT);
    assert!(a.allowed());
    assert!(a.warnings().is_empty());
    assert!(ask(&h, Endpoint::Mutate, SMALL_POD).patch().is_none());
}

#[test]
fn dry_run_is_judged_the_same() {
    let h = harness(KEY_ROTATION);
    let body = edit(DEPLOYMENT, |v| v["request"]["dryRun"] = json!(true));
    let a = ask(&h, Endpoint::Validate, &body);
    assert!(!a.allowed());
    assert_eq!(
        a.message(),
        ask(&h, Endpoint::Validate, DEPLOYMENT).message()
    );
}

/// The small pod (made by a ReplicaSet) with a container reading the legacy
/// token Secret `checkout-token` into an env var.
fn pod_reading_legacy_token_env() -> String {
    edit(SMALL_POD, |v| {
        v["request"]["object"]["spec"]["containers"][0]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "KUBE_TOKEN", "valueFrom": {"secretKeyRef": {"name": "checkout-token", "key": "token"}}}));
    })
}

/// The same review with the Pod's controlling ownerReference removed, as a
/// person would submit a bare Pod.
fn bare(body: &str) -> String {
    edit(body, |v| {
        v["request"]["object"]["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("ownerReferences");
    })
}

#[test]
fn legacy_token_env_is_denied_under_a_key_rotation() {
    let mut secrets = LegacySecrets::default();
    secrets.insert("shop", "checkout-token");
    let h = harness_with(KEY_ROTATION, secrets);
    let body = bare(&pod_reading_legacy_token_env());
    let a = ask(&h, Endpoint::Validate, &body);
    assert!(!a.allowed());
    assert!(
        a.message().contains("[legacy-token-env]"),
        "{}",
        a.message()
    );
    assert!(
        a.message().contains("Pod \"checkout-7c9f8b6d5-*\""),
        "{}",
        a.message()
    );
    // The same Secret in another namespace is someone else's.
    let other = edit(&body, |v| v["request"]["namespace"] = json!("elsewhere"));
    assert!(ask(&h, Endpoint::Validate, &other).allowed());
}

#[test]
fn unusable_requests_get_clear_answers() {
    let h = harness("");
    let a = ask(&h, Endpoint::Validate, "{not json");
    assert_eq!(a.status, 400);
    assert!(
        a.review["error"]
            .as_str()
            .unwrap()
            .contains("not a JSON AdmissionReview")
    );

    let a = ask(
        &h,
        Endpoint::Validate,
        &edit(DEPLOYMENT, |v| {
            v["apiVersion"] = json!("admission.k8s.io/v1beta1")
        }),
    );
    assert_eq!(a.status, 200);
    assert!(!a.allowed());
    assert_eq!(a.response()["uid"], "5c4b3a29-1807-4f6e-9d5c-4b3a2918f7e6");
    assert!(
        a.message().contains("admission.k8s.io/v1beta1"),
        "{}",
        a.message()
    );

    let a = ask(
        &h,
        Endpoint::Validate,
        r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
    );
    assert_eq!(a.status, 400);
    assert!(a.review["error"].as_str().unwrap().contains("no request"));

    let a = ask(
        &h,
        Endpoint::Validate,
        &edit(DEPLOYMENT, |v| v["request"]["object"] = Value::Null),
    );
    assert!(!a.allowed());
    assert!(a.message().contains("request.object is missing"));

    let a = ask(
        &h,
        Endpoint::Validate,
        &edit(DEPLOYMENT, |v| {
            v["request"]["object"]["spec"]["template"]["spec"]["containers"] = json!("oops")
        }),
    );
    assert!(!a.allowed());
    assert!(
        a.message()
            .contains("request.object is not a readable Deployment"),
        "{}",
        a.message()
    );

    let a = ask(
        &h,
        Endpoint::Validate,
        &edit(DEPLOYMENT, |v| {
            v["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "ConfigMap"})
        }),
    );
    assert!(a.allowed());
    assert!(a.warnings()[0].contains("does not judge /ConfigMap"));
}

#[test]
fn an_escaped_uid_is_echoed() {
    let h = harness("");
    let body = SMALL_POD.replace("7b0c5f0e-2f4b", "7b0c5f0e-\\u0032f4b");
    let a = ask(&h, Endpoint::Validate, &body);
    assert_eq!(a.status, 200);
    assert_eq!(a.response()["uid"], "7b0c5f0e-2f4b-4d7e-8a1f-0d9c8b7a6e51");
}

#[test]
fn outcomes_name_kind_decision_and_findings() {
    let h = harness(KEY_ROTATION);
    let validated = h.webhook.review(Endpoint::Validate, DEPLOYMENT.as_bytes());
    assert_eq!(
        (validated.kind.as_str(), validated.decision.as_str()),
        ("Deployment", "denied")
    );
    assert_eq!(
        validated.findings,
        [(crate::rules::RuleId::TokenSubpath, Action::Deny)]
    );
    let mutated = h.webhook.review(Endpoint::Mutate, DEPLOYMENT.as_bytes());
    assert_eq!(mutated.decision, Decision::Patched);
    assert!(mutated.findings.is_empty(), "counted by validate only");
    let garbage = h.webhook.review(Endpoint::Mutate, b"garbage");
    assert_eq!(
        (garbage.kind, garbage.decision),
        (Subjected::Unknown, Decision::Error)
    );
    assert!(matches!(garbage.reply, Reply::Unusable(_)));
}

#[test]
fn controller_made_objects_are_marked_never_denied() {
    let mut secrets = LegacySecrets::default();
    secrets.insert("shop", "checkout-token");
    let h = harness_with(KEY_ROTATION, secrets);
    let made = pod_reading_legacy_token_env();

    let a = ask(&h, Endpoint::Validate, &made);
    assert!(a.allowed(), "{}", a.message());
    assert_eq!(a.decision, "controller-at-risk");
    assert!(a.warnings().is_empty(), "{:?}", a.warnings());
    assert_eq!(
        a.response()["auditAnnotations"]["risks"],
        "legacy-token-env"
    );
    let m = ask(&h, Endpoint::Mutate, &made);
    assert_eq!(m.decision, "controller-at-risk");
    let object = serde_json::from_str::<Value>(&made).unwrap()["request"]["object"].clone();
    let patched = apply(&object, &m.patch().unwrap());
    assert_eq!(
        patched["metadata"]["labels"]["issuer-guard.io/at-risk"],
        "true"
    );
    assert_eq!(
        patched["metadata"]["annotations"]["issuer-guard.io/risks"],
        "legacy-token-env"
    );

    // The same Pod submitted by a person is denied...
    let a = ask(&h, Endpoint::Validate, &bare(&made));
    assert!(!a.allowed());
    assert_eq!(a.decision, "denied");
    // ...and so is a controller-made Pod that a person adds an ephemeral
    // container to (`kubectl debug`).
    let debug = edit(&made, |v| {
        let req = &mut v["request"];
        req["subResource"] = json!("ephemeralcontainers");
        req["operation"] = json!("UPDATE");
        let mut old = req["object"].clone();
        old["spec"]["containers"][0]["env"]
            .as_array_mut()
            .unwrap()
            .pop();
        req["oldObject"] = old;
    });
    let a = ask(&h, Endpoint::Validate, &debug);
    assert!(!a.allowed());
    assert!(
        a.message().contains("[legacy-token-env]"),
        "{}",
        a.message()
    );
}

#[test]
fn a_forged_controller_reference_is_marked_like_any_controller_made_object() {
    let mut secrets = LegacySecrets::default();
    secrets.insert("shop", "checkout-token");
    let h = harness_with(KEY_ROTATION, secrets);
    // An owner that does not exist: admission cannot tell, and leaves it to
    // the garbage collector.
    let forged = edit(&bare(&pod_reading_legacy_token_env()), |v| {
        v["request"]["object"]["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "v1", "kind": "ReplicationController", "name": "ghost",
            "uid": "00000000-0000-0000-0000-000000000000", "controller": true
        }]);
    });
    let a = ask(&h, Endpoint::Validate, &forged);
    assert!(a.allowed());
    assert_eq!(
        a.response()["auditAnnotations"]["risks"],
        "legacy-token-env"
    );
    let m = ask(&h, Endpoint::Mutate, &forged);
    let object = serde_json::from_str::<Value>(&forged).unwrap()["request"]["object"].clone();
    let patched = apply(&object, &m.patch().unwrap());
    assert_eq!(
        patched["metadata"]["labels"]["issuer-guard.io/at-risk"],
        "true"
    );
}

#[test]
fn other_subresources_and_operations_are_let_through() {
    let h = harness(KEY_ROTATION);
    // Denied as a plain create: the subPath finding is certain.
    assert!(!ask(&h, Endpoint::Validate, DEPLOYMENT).allowed());
    for (sub, op) in [
        (Some("status"), "UPDATE"),
        (Some("scale"), "UPDATE"),
        (None, "DELETE"),
        (None, "CONNECT"),
    ] {
        let body = edit(DEPLOYMENT, |v| {
            v["request"]["operation"] = json!(op);
            if let Some(sub) = sub {
                v["request"]["subResource"] = json!(sub);
            }
        });
        let a = ask(&h, Endpoint::Validate, &body);
        assert!(a.allowed(), "{sub:?} {op}: {}", a.message());
        assert_eq!(a.decision, "allowed", "{sub:?} {op}");
        assert!(a.warnings().is_empty(), "{sub:?} {op}");
        assert!(
            ask(&h, Endpoint::Mutate, &body).patch().is_none(),
            "{sub:?} {op}"
        );
    }
    // Ephemeral containers are judged: a new finding there is denied.
    let debug = edit(DEPLOYMENT, |v| {
        v["request"]["operation"] = json!("UPDATE");
        v["request"]["subResource"] = json!("ephemeralcontainers");
    });
    assert!(!ask(&h, Endpoint::Validate, &debug).allowed());
}

#[test]
fn errors_quote_a_bounded_part_of_the_input() {
    let h = harness(KEY_ROTATION);
    let huge = "x".repeat(2 << 20);
    // A string where the object belongs: serde quotes it in its message.
    let body = edit(SMALL_POD, |v| v["request"]["object"] = json!(huge));
    let a = ask(&h, Endpoint::Validate, &body);
    assert_eq!(a.status, 200);
    assert!(!a.allowed());
    let message = a.message();
    assert!(message.contains("request.object"), "{}", &message[..100]);
    assert!(
        message.chars().count() <= MAX_ECHO_CHARS,
        "{} chars",
        message.len()
    );
    // With no uid to answer under, the HTTP error is bounded too.
    let a = ask(&h, Endpoint::Validate, &format!("{{\"kind\": \"{huge}\""));
    assert_eq!(a.status, 400);
    assert!(a.review["error"].as_str().unwrap().chars().count() <= MAX_ECHO_CHARS);
}
