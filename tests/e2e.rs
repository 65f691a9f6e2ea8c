//! End-to-end scenarios: issuer-guard registered with a real kube-apiserver
//! (and kube-controller-manager, etcd), judged by what the API server
//! returns and stores. The control-plane binaries come from
//! scripts/build-control-plane (or KUBE_APISERVER, KUBE_CONTROLLER_MANAGER
//! and ETCD).

mod support;

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::{Pod, ReplicationController, Secret},
};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use support::{
    ControlPlane, Injector, IssuerGuard, NS, SaKey, ServiceAccountFlags,
    api::{self, create},
    eventually,
    injector::{self, INJECT_LABEL},
    objects::{IMAGE, audience_pod, env_reader, env_reader_pod, plain_pod, pod},
    serve::{Server, sample},
    webhook::{
        AT_RISK_LABEL, GENERATION_LABEL, ISSUER_ANNOTATION, KEY_ID_ANNOTATION, RISKS_ANNOTATION,
        Registration, wait_secret_known,
    },
};

const OLD: &str = "https://old.issuer.e2e.example";
const NEW: &str = "https://new.issuer.e2e.example";
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(90);

/// issuer-guard's config file with a static generation.
fn config(number: u64, issuer: &str, key_id: &str, mode: &str, rotation: &str) -> String {
    format!(
        "generation:\n  static: {{number: {number}, issuer: \"{issuer}\", keyId: \"{key_id}\"}}\n\
         rotation: {rotation}\nmode: {mode}\n"
    )
}

/// A Pod that mounts the token file of Secret `secret` alone, with subPath.
fn subpath_reader(name: &str, secret: &str) -> Value {
    pod(
        name,
        json!([{"name": "client", "image": IMAGE, "volumeMounts": [
            {"name": "legacy", "mountPath": "/app/token", "subPath": "token", "readOnly": true}
        ]}]),
        json!([{"name": "legacy", "secret": {"secretName": secret}}]),
    )
}

fn workload(kind: &str, api_version: &str, name: &str, containers: Value) -> Value {
    json!({
        "apiVersion": api_version, "kind": kind,
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": if kind == "ReplicationController" { json!({"app": name}) }
                        else { json!({"matchLabels": {"app": name}}) },
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": containers},
            },
        },
    })
}

fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj["metadata"]["labels"][key].as_str()
}

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj["metadata"]["annotations"][key].as_str()
}

#[track_caller]
fn assert_stamped(obj: &Value, generation: u64, issuer: &str) {
    let name = &obj["metadata"]["name"];
    assert_eq!(
        label(obj, GENERATION_LABEL),
        Some(generation.to_string().as_str()),
        "generation of {name}: {obj}"
    );
    assert_eq!(
        annotation(obj, ISSUER_ANNOTATION),
        Some(issuer),
        "issuer of {name}"
    );
}

#[track_caller]
fn assert_at_risk(obj: &Value, rule: &str) {
    let name = &obj["metadata"]["name"];
    assert_eq!(
        label(obj, AT_RISK_LABEL),
        Some("true"),
        "at-risk of {name}: {obj}"
    );
    let risks = annotation(obj, RISKS_ANNOTATION).unwrap_or_default();
    assert!(
        risks.split(',').any(|r| r == rule),
        "risks of {name} lack {rule}: {risks:?}"
    );
}

#[track_caller]
fn assert_warned(created: &api::Created, needle: &str) {
    assert!(
        created.warnings.iter().any(|w| w.contains(needle)),
        "no warning contains {needle:?}: {:?}",
        created.warnings
    );
}

/// The Pods a controller made for the workload labelled `app=<app>`.
async fn controller_pods(cp: &ControlPlane, app: &str, owner_kind: &str) -> Vec<Value> {
    let pods: Api<Pod> = Api::namespaced(cp.client.clone(), NS);
    let lp = ListParams::default().labels(&format!("app={app}"));
    let found = eventually(
        &format!("{owner_kind} {app} to create pods"),
        CONTROLLER_TIMEOUT,
        || async { pods.list(&lp).await.ok().filter(|l| !l.items.is_empty()) },
    )
    .await;
    let pods: Vec<Value> = found
        .items
        .into_iter()
        .map(|p| serde_json::to_value(p).expect("a pod as JSON"))
        .collect();
    for p in &pods {
        assert_eq!(
            p["metadata"]["ownerReferences"][0]["kind"], owner_kind,
            "owner of {}",
            p["metadata"]["name"]
        );
    }
    pods
}

/// Creates a plain Pod and checks its stamp; returns what to check later.
async fn create_stamped(
    cp: &ControlPlane,
    name: &str,
    generation: u64,
    issuer: &'static str,
) -> (String, u64, &'static str) {
    let c = create::<Pod>(&cp.client, &plain_pod(name), false).await;
    assert_stamped(c.object(), generation, issuer);
    (name.to_owned(), generation, issuer)
}

/// Scenario 1: a Pod created through the API server is stamped; with an
/// IRSA-style injector running after issuer-guard, issuer-guard is
/// re-invoked and judges the final Pod, which only the injected volume
/// makes at risk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stamps_pods_and_judges_the_final_object_after_reinvocation() {
    let cp = ControlPlane::start(ServiceAccountFlags::issuers(&[NEW, OLD])).await;
    let rotation = format!("{{retiringIssuers: [\"{OLD}\"]}}");
    let mut guard = IssuerGuard::start(&cp, &config(2, NEW, "", "audit", &rotation)).await;

    let plain = create::<Pod>(&cp.client, &plain_pod("plain"), false).await;
    assert_stamped(plain.object(), 2, NEW);
    assert_eq!(annotation(plain.object(), KEY_ID_ANNOTATION), Some(""));
    assert_eq!(label(plain.object(), AT_RISK_LABEL), None);
    assert!(plain.warnings.is_empty(), "{:?}", plain.warnings);

    let injector = Injector::start(&cp).await;
    let calls = injector.calls();
    let mut irsa = plain_pod("irsa");
    irsa["metadata"]["labels"] = json!({INJECT_LABEL: "true"});
    let created = create::<Pod>(&cp.client, &irsa, false).await;
    let stored = created.object().clone();
    assert_eq!(injector.calls(), calls + 1, "the injector runs once");
    assert_eq!(injector::volume_count(&stored, injector::VOLUME), 1);
    assert_stamped(&stored, 2, NEW);
    // Only issuer-guard's second call can have seen the injected volume:
    // its first call came before the injector.
    assert_at_risk(&stored, "federated-audience-untrusted");
    assert_warned(
        &created,
        "federated-audience-untrusted: volume \"aws-iam-token\"",
    );

    // In enforce mode the same final object is denied, naming the volume
    // that the client never sent.
    guard
        .set_config(&config(2, NEW, "", "enforce", &rotation))
        .await;
    irsa["metadata"]["name"] = json!("irsa-enforced");
    let denied = create::<Pod>(&cp.client, &irsa, false).await;
    let message = denied.denial();
    assert!(
        message.contains("[federated-audience-untrusted] volume \"aws-iam-token\""),
        "{message}"
    );
}

/// Scenario 2: a Deployment that reads a legacy token into an env var is
/// denied in enforce mode under a declared key rotation, admitted with
/// warnings and labelled in audit mode; Pods made by controllers are stamped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denies_warns_and_stamps_controller_created_pods() {
    let cp = ControlPlane::start(ServiceAccountFlags::issuer(NEW)).await;
    let (kid_a, kid_b) = (cp.pki.sa_a.kid.clone(), cp.pki.sa_b.kid.clone());
    // The key id computed from key A (base64url of the SHA-256 of its PKIX
    // DER) is the `kid` of the tokens the API server signs with A.
    let (_, kid) = api::issuer_and_kid(&api::token_request(&cp.client, "default").await);
    assert_eq!(kid, kid_a);
    let rotation = format!("{{retiringKeyIds: [\"{kid_a}\"]}}");
    let mut guard = IssuerGuard::start(&cp, &config(1, NEW, &kid_b, "enforce", &rotation)).await;
    api::legacy_token(&cp.client, "ci-bot", "ci-bot-token").await;

    let runner = workload(
        "Deployment",
        "apps/v1",
        "runner",
        json!([env_reader("ci-bot-token")]),
    );
    // issuer-guard learns of the Secret through its watch; until then it
    // cannot tell the Secret holds a legacy token.
    wait_secret_known(&cp, "ci-bot-token", CONTROLLER_TIMEOUT).await;
    let denied = create::<Deployment>(&cp.client, &runner, true).await;
    let denied_for_real = create::<Deployment>(&cp.client, &runner, false).await;
    for message in [denied.denial(), denied_for_real.denial()] {
        assert!(
            message.contains("issuer-guard denied Deployment \"runner\"")
                && message.contains("[legacy-token-env] container \"runner\"")
                && message.contains("ci-bot-token"),
            "{message}"
        );
    }

    guard
        .set_config(&config(1, NEW, &kid_b, "audit", &rotation))
        .await;
    let admitted = create::<Deployment>(&cp.client, &runner, false).await;
    assert_at_risk(admitted.object(), "legacy-token-env");
    assert_warned(
        &admitted,
        "legacy-token-env: container \"runner\" at spec.template.spec.containers[0].env[0]",
    );
    for p in controller_pods(&cp, "runner", "ReplicaSet").await {
        assert_stamped(&p, 1, NEW);
        assert_at_risk(&p, "legacy-token-env");
    }

    let plain = json!([{"name": "app", "image": IMAGE}]);
    let rs = workload("ReplicaSet", "apps/v1", "plain-rs", plain.clone());
    create::<ReplicaSet>(&cp.client, &rs, false).await.object();
    let rc = workload("ReplicationController", "v1", "plain-rc", plain);
    create::<ReplicationController>(&cp.client, &rc, false)
        .await
        .object();
    for (app, owner) in [
        ("plain-rs", "ReplicaSet"),
        ("plain-rc", "ReplicationController"),
    ] {
        for p in controller_pods(&cp, app, owner).await {
            assert_stamped(&p, 1, NEW);
            assert_eq!(label(&p, AT_RISK_LABEL), None, "{p}");
        }
    }
}

/// Scenario 3: the kOps issuer migration, [old] → [old,new] → [new,old] →
/// [new], with issuer-guard's config following each step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_url_change_as_kops_does_it() {
    let mut cp = ControlPlane::start(ServiceAccountFlags::issuer(OLD)).await;
    let mut guard = IssuerGuard::start(&cp, &config(1, OLD, "", "enforce", "{}")).await;
    let retiring_old = format!("{{retiringIssuers: [\"{OLD}\"]}}");
    // Every pod created so far, with the stamp it must keep for good.
    let mut stamped = Vec::new();
    // [old]
    stamped.push(create_stamped(&cp, "step1", 1, OLD).await);
    let minted_under_old = api::token_request(&cp.client, "default").await;
    assert_eq!(api::issuer_and_kid(&minted_under_old).0, OLD);
    assert!(api::token_accepted(&cp.client, &minted_under_old).await);

    // [old, new]: old still signs, new is accepted too.
    cp.restart_apiserver(ServiceAccountFlags::issuers(&[OLD, NEW]))
        .await;
    guard.wait_called().await;
    stamped.push(create_stamped(&cp, "step2-before-config", 1, OLD).await);
    guard.set_config(&config(2, OLD, "", "enforce", "{}")).await;
    stamped.push(create_stamped(&cp, "step2", 2, OLD).await);
    // No rotation is declared yet, so nothing is certain to break.
    create::<Pod>(&cp.client, &audience_pod("aud-old-2", OLD), false)
        .await
        .object();

    // [new, old]: new signs; old is retiring.
    cp.restart_apiserver(ServiceAccountFlags::issuers(&[NEW, OLD]))
        .await;
    guard.wait_called().await;
    stamped.push(create_stamped(&cp, "step3-before-config", 2, OLD).await);
    guard
        .set_config(&config(3, NEW, "", "enforce", &retiring_old))
        .await;
    stamped.push(create_stamped(&cp, "step3", 3, NEW).await);
    let denied = create::<Pod>(&cp.client, &audience_pod("aud-old-3", OLD), false).await;
    assert!(
        denied
            .denial()
            .contains("[audience-retiring-issuer] volume \"token\""),
        "{}",
        denied.denial()
    );
    create::<Pod>(&cp.client, &audience_pod("aud-new-3", NEW), false)
        .await
        .object();
    assert_eq!(
        api::issuer_and_kid(&api::token_request(&cp.client, "default").await).0,
        NEW
    );
    // The danger: a token minted under [old] still works here...
    assert!(api::token_accepted(&cp.client, &minted_under_old).await);

    // [new]: old is retired.
    cp.restart_apiserver(ServiceAccountFlags::issuer(NEW)).await;
    guard.wait_called().await;
    guard
        .set_config(&config(4, NEW, "", "enforce", &retiring_old))
        .await;
    stamped.push(create_stamped(&cp, "step4", 4, NEW).await);
    let denied = create::<Pod>(&cp.client, &audience_pod("aud-old-4", OLD), false).await;
    assert!(denied.denial().contains("audience-retiring-issuer"));
    // ...and dies with the old issuer, while a fresh token works.
    assert!(!api::token_accepted(&cp.client, &minted_under_old).await);
    let fresh = api::token_request(&cp.client, "default").await;
    assert!(api::token_accepted(&cp.client, &fresh).await);

    // Each pod kept the stamp of the generation it was created under: read
    // back from the API server, not from the create responses.
    let pods: Api<Pod> = Api::namespaced(cp.client.clone(), NS);
    assert_eq!(stamped.len(), 6);
    for (name, generation, issuer) in &stamped {
        let stored = serde_json::to_value(pods.get(name).await.expect("a stamped pod"))
            .expect("a pod as JSON");
        assert_stamped(&stored, *generation, issuer);
    }
}

/// Scenario 4: signing-key rotation. A legacy token signed with key A dies
/// when A is retired; issuer-guard flagged, at admission, the pods that
/// froze it in an env var or a subPath mount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_key_rotation_flags_pods_that_froze_a_legacy_token() {
    let mut cp = ControlPlane::start(ServiceAccountFlags::issuer(NEW)).await;
    let (kid_a, kid_b) = (cp.pki.sa_a.kid.clone(), cp.pki.sa_b.kid.clone());
    let mut guard = IssuerGuard::start(&cp, &config(1, NEW, &kid_a, "enforce", "{}")).await;
    let legacy = api::legacy_token(&cp.client, "bot", "bot-token").await;
    assert_eq!(
        api::issuer_and_kid(&legacy),
        ("kubernetes/serviceaccount".to_owned(), kid_a.clone())
    );
    assert!(api::token_accepted(&cp.client, &legacy).await);

    let env_pod = |name: &str| env_reader_pod(name, "bot-token");
    // Before any rotation is declared the hazard is labelled, not denied.
    wait_secret_known(&cp, "bot-token", CONTROLLER_TIMEOUT).await;
    let env_before = create::<Pod>(&cp.client, &env_pod("env-before"), false).await;
    assert_at_risk(env_before.object(), "legacy-token-env");
    let sub_before = create::<Pod>(
        &cp.client,
        &subpath_reader("sub-before", "bot-token"),
        false,
    )
    .await;
    assert_at_risk(sub_before.object(), "token-subpath");

    // Key B signs; A still verifies. The rotation is declared.
    cp.restart_apiserver(ServiceAccountFlags {
        signing: SaKey::B,
        verifying: vec![SaKey::A, SaKey::B],
        ..ServiceAccountFlags::issuer(NEW)
    })
    .await;
    let (_, kid) = api::issuer_and_kid(&api::token_request(&cp.client, "default").await);
    assert_eq!(kid, kid_b);
    let rotation = format!("{{retiringKeyIds: [\"{kid_a}\"]}}");
    guard.wait_called().await;
    guard
        .set_config(&config(2, NEW, &kid_b, "enforce", &rotation))
        .await;
    let denied = create::<Pod>(&cp.client, &env_pod("env-during"), false).await;
    assert!(
        denied
            .denial()
            .contains("[legacy-token-env] container \"runner\""),
        "{}",
        denied.denial()
    );
    let denied = create::<Pod>(
        &cp.client,
        &subpath_reader("sub-during", "bot-token"),
        false,
    )
    .await;
    assert!(
        denied
            .denial()
            .contains("[token-subpath] container \"client\""),
        "{}",
        denied.denial()
    );
    // An owner who accepts the risk opts out, and is still told.
    let mut opted_out = env_pod("env-opted-out");
    opted_out["metadata"]["annotations"] = json!({"issuer-guard.io/ignore": "legacy-token-env"});
    let admitted = create::<Pod>(&cp.client, &opted_out, false).await;
    assert_stamped(admitted.object(), 2, NEW);
    assert_warned(&admitted, "opts out of legacy-token-env (1 hidden)");
    // In audit mode the same pods are admitted and marked.
    guard
        .set_config(&config(2, NEW, &kid_b, "audit", &rotation))
        .await;
    let env_audit = create::<Pod>(&cp.client, &env_pod("env-audit"), false).await;
    assert_at_risk(env_audit.object(), "legacy-token-env");
    let sub_audit =
        create::<Pod>(&cp.client, &subpath_reader("sub-audit", "bot-token"), false).await;
    assert_at_risk(sub_audit.object(), "token-subpath");
    assert_warned(&sub_audit, "token-subpath: container \"client\"");

    // A is retired: only B verifies, and the controller-manager signs with B.
    cp.restart_apiserver(ServiceAccountFlags {
        signing: SaKey::B,
        verifying: vec![SaKey::B],
        ..ServiceAccountFlags::issuer(NEW)
    })
    .await;
    cp.restart_controller_manager(SaKey::B);
    assert!(
        !api::token_accepted(&cp.client, &legacy).await,
        "a legacy token signed with a retired key must be rejected"
    );
    // Regenerating the Secret mends the Secret, not the pods that froze the
    // old value: that is why issuer-guard flags them at admission.
    Api::<Secret>::namespaced(cp.client.clone(), NS)
        .patch(
            "bot-token",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"token": null}})),
        )
        .await
        .expect("clear the token");
    let regenerated = api::filled_token(&cp.client, "bot-token").await;
    assert_eq!(api::issuer_and_kid(&regenerated).1, kid_b);
    assert!(api::token_accepted(&cp.client, &regenerated).await);
    // Under the declared rotation in enforce mode, `kubectl label` of a pod
    // that already had its finding is an UPDATE that must still go through:
    // only findings an update introduces are denied.
    guard
        .set_config(&config(2, NEW, &kid_b, "enforce", &rotation))
        .await;
    let pods: Api<Pod> = Api::namespaced(cp.client.clone(), NS);
    for (name, rule) in [
        ("env-before", "legacy-token-env"),
        ("sub-before", "token-subpath"),
    ] {
        let labelled = pods
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"team": "payments"}}})),
            )
            .await
            .unwrap_or_else(|e| panic!("label {name}: {e}"));
        let labelled = serde_json::to_value(labelled).expect("a pod as JSON");
        assert_eq!(label(&labelled, "team"), Some("payments"));
        assert_at_risk(&labelled, rule);
    }
}

/// Scenario 5: a dryRun=All create is judged like a real one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_is_judged_like_a_real_create() {
    let cp = ControlPlane::start(ServiceAccountFlags::issuers(&[NEW, OLD])).await;
    let rotation = format!("{{retiringIssuers: [\"{OLD}\"]}}");
    let _guard = IssuerGuard::start(&cp, &config(7, NEW, "", "enforce", &rotation)).await;

    let stamped = create::<Pod>(&cp.client, &plain_pod("dry-ok"), true).await;
    assert_stamped(stamped.object(), 7, NEW);
    let denied = create::<Pod>(&cp.client, &audience_pod("dry-bad", OLD), true).await;
    assert!(
        denied.denial().contains("audience-retiring-issuer"),
        "{}",
        denied.denial()
    );
    let template = audience_pod("unused", OLD)["spec"].clone();
    let mut deployment = workload("Deployment", "apps/v1", "dry-deploy", json!([]));
    deployment["spec"]["template"]["spec"] = template;
    let denied = create::<Deployment>(&cp.client, &deployment, true).await;
    assert!(
        denied
            .denial()
            .contains("issuer-guard denied Deployment \"dry-deploy\""),
        "{}",
        denied.denial()
    );
}

/// A workload of `kind` whose pods read Secret `secret`'s legacy token
/// through an env var.
fn env_workload(kind: &str, api_version: &str, name: &str, secret: &str) -> Value {
    workload(kind, api_version, name, json!([env_reader(secret)]))
}

/// Waits until exactly `count` pods carry `selector`, and returns them.
async fn pods_now(cp: &ControlPlane, selector: &str, count: usize) -> Vec<Value> {
    let pods: Api<Pod> = Api::namespaced(cp.client.clone(), NS);
    let lp = ListParams::default().labels(selector);
    let found = eventually(
        &format!("{count} pods with {selector}"),
        CONTROLLER_TIMEOUT,
        || async {
            let list = pods.list(&lp).await.ok()?;
            let live: Vec<Pod> = list
                .items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            (live.len() == count).then_some(live)
        },
    )
    .await;
    found
        .into_iter()
        .map(|p| serde_json::to_value(p).expect("a pod as JSON"))
        .collect()
}

/// The conditions of a workload's status that say a controller could not
/// create what it wanted to: `ReplicaFailure`, or a Deployment that stopped
/// progressing because a ReplicaSet could not be created.
fn creation_failures(workload: &Value) -> Vec<Value> {
    workload["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            (c["type"] == "ReplicaFailure" && c["status"] == "True")
                || c["reason"] == "ReplicaSetCreateError"
        })
        .cloned()
        .collect()
}

/// Issue 7: after a key rotation is declared, workloads created before it
/// still scale, scale back from zero and roll, their new pods are marked,
/// and the validating webhook never even sees what the controllers make.
/// What people submit with the same specs is still denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_keep_scaling_and_rolling_through_a_key_rotation() {
    let cp = ControlPlane::start(ServiceAccountFlags::issuer(NEW)).await;
    let (kid_a, kid_b) = (cp.pki.sa_a.kid.clone(), cp.pki.sa_b.kid.clone());
    let mut guard = IssuerGuard::start(&cp, &config(1, NEW, &kid_a, "enforce", "{}")).await;
    api::legacy_token(&cp.client, "app", "app-token").await;
    let env_pod = |name: &str| env_reader_pod(name, "app-token");
    wait_secret_known(&cp, "app-token", CONTROLLER_TIMEOUT).await;
    // The counts the validating webhook must not move while controllers
    // work. The Pods issuer-guard was probed with above were counted, so the
    // series exists and counts.
    let validated_pods = guard.requests("validate", "Pod", None).await;
    assert!(
        validated_pods > 0,
        "no Pod counted by the validating webhook"
    );
    let validated_rs = guard.requests("validate", "ReplicaSet", None).await;

    // Before any rotation: admitted with a warning, as the README says.
    let rc = env_workload("ReplicationController", "v1", "env-rc", "app-token");
    let created = create::<ReplicationController>(&cp.client, &rc, false).await;
    assert_warned(&created, "legacy-token-env: container \"runner\"");
    let dep = env_workload("Deployment", "apps/v1", "env-dep", "app-token");
    create::<Deployment>(&cp.client, &dep, false).await.object();
    pods_now(&cp, "app=env-rc", 1).await;
    pods_now(&cp, "app=env-dep", 1).await;

    guard
        .set_config(&config(
            2,
            NEW,
            &kid_b,
            "enforce",
            &format!("{{retiringKeyIds: [\"{kid_a}\"]}}"),
        ))
        .await;

    // kubectl scale: the scale subresource, which no webhook sees; the
    // controller then creates the Pods.
    let rcs: Api<ReplicationController> = Api::namespaced(cp.client.clone(), NS);
    let scale = |n: i32| {
        let rcs = rcs.clone();
        async move {
            rcs.patch_scale(
                "env-rc",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": n}})),
            )
            .await
            .unwrap_or_else(|e| panic!("scale env-rc to {n}: {e}"));
        }
    };
    scale(2).await;
    let scaled = pods_now(&cp, "app=env-rc", 2).await;
    let new_pods: Vec<&Value> = scaled
        .iter()
        .filter(|p| label(p, GENERATION_LABEL) == Some("2"))
        .collect();
    assert_eq!(new_pods.len(), 1, "one pod made under the rotation");
    assert_at_risk(new_pods[0], "legacy-token-env");
    // From zero back up: every pod is made under the rotation.
    scale(0).await;
    pods_now(&cp, "app=env-rc", 0).await;
    scale(2).await;
    for p in pods_now(&cp, "app=env-rc", 2).await {
        assert_stamped(&p, 2, NEW);
        assert_at_risk(&p, "legacy-token-env");
    }
    let stored = serde_json::to_value(rcs.get("env-rc").await.expect("get env-rc")).unwrap();
    assert_eq!(creation_failures(&stored), Vec::<Value>::new());

    // kubectl rollout restart: an UPDATE of the Deployment's template, which
    // already had the finding, then a new ReplicaSet and its pods.
    let deployments: Api<Deployment> = Api::namespaced(cp.client.clone(), NS);
    deployments
        .restart("env-dep")
        .await
        .expect("rollout restart env-dep");
    let replica_sets: Api<ReplicaSet> = Api::namespaced(cp.client.clone(), NS);
    let lp = ListParams::default().labels("app=env-dep");
    let rolled = eventually(
        "env-dep to make a second ReplicaSet",
        CONTROLLER_TIMEOUT,
        || async {
            let list = replica_sets.list(&lp).await.ok()?;
            list.items
                .into_iter()
                .map(|rs| serde_json::to_value(rs).expect("a ReplicaSet as JSON"))
                .find(|rs| {
                    rs["spec"]["template"]["metadata"]["annotations"]
                        .as_object()
                        .is_some_and(|a| a.keys().any(|k| k.ends_with("restartedAt")))
                })
        },
    )
    .await;
    assert_eq!(
        rolled["metadata"]["ownerReferences"][0]["kind"],
        "Deployment"
    );
    assert_at_risk(&rolled, "legacy-token-env");
    let hash = label(&rolled, "pod-template-hash").expect("a pod-template-hash");
    for p in pods_now(&cp, &format!("app=env-dep,pod-template-hash={hash}"), 1).await {
        assert_stamped(&p, 2, NEW);
        assert_at_risk(&p, "legacy-token-env");
    }
    let stored = serde_json::to_value(deployments.get("env-dep").await.expect("get")).unwrap();
    assert_eq!(creation_failures(&stored), Vec::<Value>::new());

    // The registration's matchConditions kept every Pod and ReplicaSet the
    // controllers made away from the fail-closed webhook; the mutating
    // webhook saw and marked them all.
    assert_eq!(
        guard.requests("validate", "Pod", None).await,
        validated_pods
    );
    assert_eq!(
        guard.requests("validate", "ReplicaSet", None).await,
        validated_rs
    );
    // While a ReplicaSet a person submits does reach it, and is counted: the
    // equality above is not that of a series that does not exist.
    let submitted = workload(
        "ReplicaSet",
        "apps/v1",
        "submitted-rs",
        json!([{"name": "app", "image": IMAGE}]),
    );
    create::<ReplicaSet>(&cp.client, &submitted, true)
        .await
        .object();
    assert_eq!(
        guard.requests("validate", "ReplicaSet", None).await,
        validated_rs + 1
    );
    let marked = guard
        .requests("mutate", "Pod", Some("controller-at-risk"))
        .await;
    // 2 first pods, 1 by scaling up, 2 from zero, 1 rolled.
    assert!(marked >= 6, "mutate marked {marked} controller-made pods");

    // On UPDATE the mutating webhook keeps the marks of findings the object
    // still has: removing the label by hand does not hide the risk.
    let relabelled = deployments
        .patch(
            "env-dep",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {AT_RISK_LABEL: null}}})),
        )
        .await
        .expect("remove the at-risk label");
    assert_at_risk(
        &serde_json::to_value(relabelled).expect("JSON"),
        "legacy-token-env",
    );

    // kubectl debug adds an ephemeral container to a controller-made Pod:
    // a person's change, judged as one.
    let pods: Api<Pod> = Api::namespaced(cp.client.clone(), NS);
    let target = pods_now(&cp, "app=env-rc", 2).await[0]["metadata"]["name"]
        .as_str()
        .expect("a pod name")
        .to_owned();
    let debug = |name: &str, env: Value| {
        json!({"spec": {"ephemeralContainers": [
            {"name": name, "image": IMAGE, "env": env}
        ]}})
    };
    let refused = pods
        .patch_ephemeral_containers(
            &target,
            &PatchParams::default(),
            &Patch::Merge(debug(
                "debug-token",
                json!([{"name": "T", "valueFrom": {"secretKeyRef": {"name": "app-token", "key": "token"}}}]),
            )),
        )
        .await
        .expect_err("an ephemeral container reading the legacy token is denied");
    assert!(
        refused
            .to_string()
            .contains("[legacy-token-env] container \"debug-token\""),
        "{refused}"
    );
    pods.patch_ephemeral_containers(
        &target,
        &PatchParams::default(),
        &Patch::Merge(debug("debug", json!([]))),
    )
    .await
    .expect("a clean ephemeral container is admitted");

    // What a person submits with the same spec is still denied.
    let again = env_workload("Deployment", "apps/v1", "env-dep-new", "app-token");
    let denied = create::<Deployment>(&cp.client, &again, false).await;
    assert!(
        denied
            .denial()
            .contains("[legacy-token-env] container \"runner\""),
        "{}",
        denied.denial()
    );
    let denied = create::<Pod>(&cp.client, &env_pod("env-bare"), false).await;
    assert!(denied.denial().contains("[legacy-token-env]"));

    // A forged controller reference: admitted and marked like any
    // controller-made Pod (no more than the opt-out annotation gives anyone),
    // and deleted by the garbage collector because its owner does not exist.
    let mut forged = env_pod("env-forged");
    forged["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "v1", "kind": "ReplicationController", "name": "ghost",
        "uid": "6f1c1a57-0000-4000-8000-000000000001", "controller": true,
    }]);
    let admitted = create::<Pod>(&cp.client, &forged, false).await;
    assert_at_risk(admitted.object(), "legacy-token-env");
    assert!(admitted.warnings.is_empty(), "{:?}", admitted.warnings);
    let pods: Api<Pod> = Api::namespaced(cp.client.clone(), NS);
    eventually(
        "the garbage collector to delete env-forged",
        CONTROLLER_TIMEOUT,
        || async {
            pods.get_opt("env-forged")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
}

/// Issue 7, on an API server registration without `matchConditions`: the
/// handler's own check still admits what controllers make, and counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_match_conditions_controllers_are_still_never_denied() {
    let cp = ControlPlane::start(ServiceAccountFlags::issuer(NEW)).await;
    let (kid_a, kid_b) = (cp.pki.sa_a.kid.clone(), cp.pki.sa_b.kid.clone());
    let rotation = format!("{{retiringKeyIds: [\"{kid_a}\"]}}");
    let mut guard = IssuerGuard::start_with(
        &cp,
        &config(1, NEW, &kid_a, "enforce", "{}"),
        Registration {
            match_conditions: false,
        },
    )
    .await;
    api::legacy_token(&cp.client, "app", "app-token").await;
    let rc = env_workload("ReplicationController", "v1", "env-rc", "app-token");
    wait_secret_known(&cp, "app-token", CONTROLLER_TIMEOUT).await;
    create::<ReplicationController>(&cp.client, &rc, false)
        .await
        .object();
    pods_now(&cp, "app=env-rc", 1).await;
    guard
        .set_config(&config(2, NEW, &kid_b, "enforce", &rotation))
        .await;
    Api::<ReplicationController>::namespaced(cp.client.clone(), NS)
        .patch_scale(
            "env-rc",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("scale env-rc");
    for p in pods_now(&cp, "app=env-rc", 3).await {
        assert_at_risk(&p, "legacy-token-env");
    }
    let judged = guard
        .requests("validate", "Pod", Some("controller-at-risk"))
        .await;
    assert!(judged >= 3, "validate saw {judged} controller-made pods");
    // None of them was denied; that the count of denials can say so is
    // shown by a bare Pod with the same container, which is.
    assert_eq!(guard.requests("validate", "Pod", Some("denied")).await, 0);
    let bare = create::<Pod>(&cp.client, &env_reader_pod("env-bare", "app-token"), false).await;
    assert!(
        bare.denial().contains("[legacy-token-env]"),
        "{}",
        bare.body
    );
    assert_eq!(guard.requests("validate", "Pod", Some("denied")).await, 1);
}

/// `serve` never reads `~/.kube/config` on its own: with a HOME whose
/// kubeconfig points at a live API server it runs without a cluster, while
/// the same file given with `--kubeconfig` is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_never_reads_the_home_kubeconfig() {
    let cp = ControlPlane::start(ServiceAccountFlags::issuer(NEW)).await;
    api::legacy_token(&cp.client, "bot", "bot-token").await;
    let home = cp.dir().join("home");
    std::fs::create_dir_all(home.join(".kube")).expect("create ~/.kube");
    std::fs::copy(&cp.kubeconfig, home.join(".kube/config")).expect("copy the kubeconfig");
    let certs = cp.dir().join("home-certs");
    let args = ["--dev-cert-dir".to_owned(), certs.display().to_string()];
    let other_certs = cp.dir().join("explicit-certs");
    let with_home =
        Server::start_with_env(&args, certs.join("ca.crt"), &[("HOME", home.as_os_str())]);

    let mut explicit_args = vec![
        "--dev-cert-dir".to_owned(),
        other_certs.display().to_string(),
    ];
    explicit_args.extend([
        "--kubeconfig".to_owned(),
        home.join(".kube/config").display().to_string(),
    ]);
    let explicit = Server::start_with_env(
        &explicit_args,
        other_certs.join("ca.crt"),
        &[("HOME", home.as_os_str())],
    );
    // The same file works when named: the Secret cache syncs and knows
    // the legacy token.
    eventually(
        "the explicit kubeconfig to sync",
        CONTROLLER_TIMEOUT,
        || async {
            let m = explicit.metrics().await;
            (sample(&m, "issuer_guard_legacy_token_secrets") == Some(1.0)).then_some(())
        },
    )
    .await;
    let log = with_home.log();
    assert!(log.contains("no cluster configured"), "{log}");
    assert_eq!(
        sample(
            &with_home.metrics().await,
            "issuer_guard_legacy_token_secrets"
        ),
        Some(0.0)
    );
}

/// Three API server restarts in a row, as a control-plane roll does them:
/// a legacy token Secret created after the last one is known to the webhook
/// within 10 s, however the watch's retries went before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_cache_recovers_from_api_server_restarts() {
    let mut cp = ControlPlane::start(ServiceAccountFlags::issuer(NEW)).await;
    let guard = IssuerGuard::start(&cp, &config(1, NEW, "", "enforce", "{}")).await;
    for _ in 0..3 {
        cp.restart_apiserver(ServiceAccountFlags::issuer(NEW)).await;
    }
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(cp.client.clone(), NS);
    accounts
        .create(
            &Default::default(),
            &serde_json::from_value(json!({"metadata": {"name": "late"}})).expect("an SA"),
        )
        .await
        .expect("create a ServiceAccount");
    api::legacy_token_secret(&cp.client, "late", "late-token").await;
    let created = std::time::Instant::now();
    wait_secret_known(&cp, "late-token", Duration::from_secs(10)).await;
    eprintln!("late-token known after {:?}", created.elapsed());
    drop(guard);
}
