//! `issuer-guard restart` on a real control plane, through the seed key
//! rotation: after the switch to key B, every owner whose pods hold a
//! `subPath` copy of a token signed with key A blocks its retirement, and
//! `restart` recreates them the way the runbook does by hand.
//!
//! There is no kubelet: a stand-in reports every pod running and ready
//! through the status subresource, as a kubelet would, so that controllers
//! count pods available and rollouts finish. Pods have no node, so a delete
//! is immediate.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use k8s_openapi::api::{
    admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
    apps::v1::{Deployment, ReplicaSet, StatefulSet},
    core::v1::{Event, Pod, ReplicationController},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use serde_json::{Value, json};
use support::{
    ControlPlane, NS, SaKey, ServiceAccountFlags, eventually,
    rotation::{discovering, kubelet_stand_in, run_cli, subpath_spec},
};

const ISSUER: &str = "https://issuer.restart.example";
const WAIT: Duration = Duration::from_secs(60);

async fn create<K>(client: &Client, object: Value) -> K
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).expect("an object");
    Api::<K>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &object)
        .await
        .expect("create it")
}

async fn create_cluster_scoped<K>(client: &Client, object: Value)
where
    K: kube::Resource<Scope = kube::core::ClusterResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).expect("an object");
    Api::<K>::all(client.clone())
        .create(&PostParams::default(), &object)
        .await
        .expect("create it");
}

fn workload(kind: &str, name: &str, replicas: i64) -> Value {
    let labels = json!({"app": name});
    let mut spec = json!({"replicas": replicas, "template": subpath_spec(labels.clone())});
    if kind == "ReplicationController" {
        spec["selector"] = labels;
    } else {
        spec["selector"] = json!({"matchLabels": labels});
    }
    if kind == "StatefulSet" {
        spec["serviceName"] = json!(name);
    }
    json!({"metadata": {"name": name}, "spec": spec})
}

fn bare(name: &str) -> Value {
    let mut pod = subpath_spec(json!({"app": name}));
    pod["metadata"]["name"] = json!(name);
    pod
}

/// The uid of pod `name`, or `None` once it is gone.
async fn uid(client: &Client, name: &str) -> Option<String> {
    Api::<Pod>::namespaced(client.clone(), NS)
        .get_opt(name)
        .await
        .expect("read the pod")
        .and_then(|p| p.metadata.uid)
}

/// The names of the pods labelled app=`app`, with their generation stamp.
async fn pods_of(client: &Client, app: &str) -> Vec<(String, Option<String>)> {
    Api::<Pod>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let generation = p
                .metadata
                .labels
                .and_then(|l| l.get("issuer-guard.io/generation").cloned());
            (p.metadata.name.unwrap_or_default(), generation)
        })
        .collect()
}

fn restart(cp: &ControlPlane, extra: &[&str]) -> (i32, Value, String) {
    let started = std::time::Instant::now();
    let result = restart_once(cp, extra);
    eprintln!(
        "restart {extra:?}: exit {} in {:?}",
        result.0,
        started.elapsed()
    );
    result
}

fn restart_once(cp: &ControlPlane, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["restart", "-A", "-o", "json"];
    if !extra.iter().any(|a| a.starts_with("--timeout")) {
        args.push("--timeout=30s");
    }
    args.extend_from_slice(extra);
    run_cli(cp, &args)
}

fn steps(report: &Value) -> Vec<(String, String, String)> {
    report["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["kind"].as_str().unwrap_or_default().to_owned(),
                s["name"].as_str().unwrap_or_default().to_owned(),
                s["method"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| s["method"].to_string()),
            )
        })
        .collect()
}

fn outcome<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step for {name}: {report:#}"))
}

/// Every resourceVersion of the objects the scenario made.
async fn versions(client: &Client) -> Vec<String> {
    let mut all = Vec::new();
    macro_rules! collect {
        ($k:ty) => {
            for o in Api::<$k>::namespaced(client.clone(), NS)
                .list(&ListParams::default())
                .await
                .expect("list")
                .items
            {
                all.push(format!(
                    "{}/{}",
                    o.metadata.name.unwrap_or_default(),
                    o.metadata.resource_version.unwrap_or_default()
                ));
            }
        };
    }
    collect!(ReplicationController);
    collect!(Deployment);
    collect!(StatefulSet);
    collect!(ReplicaSet);
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_runbook_by_one_command() {
    let mut cp = ControlPlane::start(ServiceAccountFlags {
        verifying: vec![SaKey::A],
        ..ServiceAccountFlags::issuer(ISSUER)
    })
    .await;
    let kid_a = cp.pki.sa_a.kid.clone();
    let mut guard = discovering(&cp, "mode: audit\n").await;
    let _kubelet = kubelet_stand_in(&cp);
    eventually("the ledger", WAIT, || async {
        let (code, report, _) = run_cli(&cp, &["status", "-A", "-o", "json"]);
        (code == 0 && report["generation"]["keyId"] == kid_a.as_str()).then_some(())
    })
    .await;
    let c = cp.client.clone();
    create::<ReplicationController>(&c, workload("ReplicationController", "legacy", 2)).await;
    create::<ReplicationController>(&c, workload("ReplicationController", "batch", 1)).await;
    create::<Deployment>(&c, workload("Deployment", "web", 2)).await;
    create::<StatefulSet>(&c, workload("StatefulSet", "db", 1)).await;
    // A ReplicaSet no Deployment owns is evicted from; this one's budget
    // lets no pod go.
    create::<ReplicaSet>(&c, workload("ReplicaSet", "held", 1)).await;
    create::<PodDisruptionBudget>(
        &c,
        json!({"metadata": {"name": "held"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "held"}}}}),
    )
    .await;
    for name in ["runner", "guarded", "fragile"] {
        create::<Pod>(&c, bare(name)).await;
    }
    for app in ["legacy", "batch", "web", "db", "held"] {
        eventually(&format!("{app}'s pods"), WAIT, || async {
            (!pods_of(&c, app).await.is_empty()).then_some(())
        })
        .await;
    }

    // Switch to key B: A retires, and every one of them blocks it.
    cp.restart_apiserver(ServiceAccountFlags {
        signing: SaKey::B,
        verifying: vec![SaKey::A, SaKey::B],
        ..ServiceAccountFlags::issuer(ISSUER)
    })
    .await;
    eventually("A blocked", WAIT, || async {
        let (code, report, _) = run_cli(&cp, &["status", "-A", "-o", "json"]);
        (code == 1).then_some(report)
    })
    .await;
    // Controllers write status as the stand-in reports pods ready: wait
    // until nothing moves before taking the versions.
    let before = eventually("the workloads settled", WAIT, || async {
        let first = versions(&c).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        (versions(&c).await == first).then_some(first)
    })
    .await;
    let runner_uid = uid(&c, "runner").await;

    // The plan, by default without a terminal: nothing changes.
    let (code, plan, err) = restart(&cp, &[]);
    assert_eq!(code, 0, "{plan:#}\n{err}");
    assert_eq!(plan["kind"], "RestartPlan");
    assert_eq!(plan["dryRun"], true);
    let mut planned = steps(&plan);
    planned.sort();
    let expected = [
        ("Deployment", "web", "rolloutRestart"),
        ("Pod", "fragile", "recreate"),
        ("Pod", "guarded", "recreate"),
        ("Pod", "runner", "recreate"),
        ("ReplicaSet", "held", "evict"),
        ("ReplicationController", "batch", "rollingReplace"),
        ("ReplicationController", "legacy", "rollingReplace"),
        ("StatefulSet", "db", "rolloutRestart"),
    ]
    .map(|(k, n, m)| (k.to_owned(), n.to_owned(), m.to_owned()));
    assert_eq!(planned, expected, "{plan:#}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(versions(&c).await, before, "a dry run changed something");
    assert_eq!(uid(&c, "runner").await, runner_uid);

    // The seed's RC case, rolling: the ready count never drops below 2.
    let rcs = Api::<ReplicationController>::namespaced(c.clone(), NS);
    let lowest = Arc::new(AtomicI64::new(i64::MAX));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (rcs, lowest, sampling) = (rcs.clone(), lowest.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Acquire) {
                if let Ok(rc) = rcs.get("legacy").await {
                    let ready = rc.status.and_then(|s| s.ready_replicas).unwrap_or(0);
                    lowest.fetch_min(i64::from(ready), Ordering::AcqRel);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let old: Vec<String> = pods_of(&c, "legacy")
        .await
        .into_iter()
        .map(|p| p.0)
        .collect();
    let (code, report, err) = restart(&cp, &["--yes", "--owner", "replicationcontroller/legacy"]);
    sampling.store(false, Ordering::Release);
    sampler.await.expect("the sampler");
    assert_eq!(code, 0, "{report:#}\n{err}");
    assert_eq!(
        outcome(&report, "legacy")["outcome"],
        "restarted",
        "{report:#}"
    );
    assert!(
        lowest.load(Ordering::Acquire) >= 2,
        "the ready count fell to {}",
        lowest.load(Ordering::Acquire)
    );
    let now = pods_of(&c, "legacy").await;
    assert_eq!(now.len(), 2, "{now:?}");
    for (name, generation) in &now {
        assert!(!old.contains(name), "{name} was not replaced: {now:?}");
        assert_eq!(generation.as_deref(), Some("2"), "{name} is not stamped 2");
    }
    let rc = rcs.get("legacy").await.expect("the RC");
    let spec = rc.spec.expect("a spec");
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(
        serde_json::to_value(&spec.selector).expect("json"),
        json!({"app": "legacy"})
    );

    // --strategy recreate: the scale to 0 and back.
    let old_batch = pods_of(&c, "batch").await;
    let (code, report, err) = restart(
        &cp,
        &[
            "--yes",
            "--owner",
            "replicationcontroller/batch",
            "--strategy",
            "recreate",
        ],
    );
    assert_eq!(code, 0, "{report:#}\n{err}");
    assert_eq!(outcome(&report, "batch")["method"], "scaleToZero");
    let new_batch = pods_of(&c, "batch").await;
    assert_eq!(new_batch.len(), 1);
    assert_ne!(new_batch[0].0, old_batch[0].0);

    // A Deployment and a StatefulSet: by the template annotation.
    for owner in ["deployment/web", "statefulset/db"] {
        let (code, report, err) = restart(&cp, &["--yes", "--owner", owner]);
        assert_eq!(code, 0, "{owner}: {report:#}\n{err}");
    }
    let web = Api::<Deployment>::namespaced(c.clone(), NS)
        .get("web")
        .await
        .expect("web");
    let annotations = web
        .spec
        .template
        .metadata
        .and_then(|m| m.annotations)
        .unwrap_or_default();
    assert!(
        annotations.contains_key("kubectl.kubernetes.io/restartedAt"),
        "{annotations:?}"
    );
    let events = Api::<Event>::namespaced(c.clone(), NS)
        .list(&ListParams::default().fields("involvedObject.name=web"))
        .await
        .expect("events");
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("IssuerGuardRestarted")),
        "no Event on deployment/web"
    );

    // A bare pod: recreated with its spec intact, field by field.
    let pods = Api::<Pod>::namespaced(c.clone(), NS);
    let original = serde_json::to_value(pods.get("runner").await.expect("runner")).expect("json");
    let (code, report, err) = restart(&cp, &["--yes", "--owner", "pod/runner"]);
    assert_eq!(code, 0, "{report:#}\n{err}");
    let again = serde_json::to_value(pods.get("runner").await.expect("runner")).expect("json");
    assert_ne!(again["metadata"]["uid"], original["metadata"]["uid"]);
    assert_eq!(again["spec"], original["spec"]);
    assert_eq!(again["metadata"]["labels"]["app"], "runner");
    assert_eq!(
        again["metadata"]["labels"]["issuer-guard.io/generation"],
        "2"
    );

    // A budget that lets nothing go: reported, nothing lost.
    let held = pods_of(&c, "held").await;
    let (code, report, err) = restart(
        &cp,
        &["--yes", "--owner", "replicaset/held", "--timeout=5s"],
    );
    assert_eq!(code, 0, "{report:#}\n{err}");
    let step = outcome(&report, "held");
    assert_eq!(step["outcome"], "skipped", "{report:#}");
    assert!(
        step["message"]
            .as_str()
            .unwrap_or_default()
            .contains("PodDisruptionBudget"),
        "{report:#}"
    );
    assert_eq!(pods_of(&c, "held").await, held);

    // A failure between the eviction and the create: a policy refuses the
    // real create of `fragile` but lets the dry run through. The manifest
    // stays on disk, and the message says where.
    let policy = json!({
        "metadata": {"name": "refuse-fragile"},
        "spec": {"failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE"], "resources": ["pods"]}]},
            "validations": [{"expression":
                "request.dryRun == true || !object.metadata.name.startsWith('fragile')",
                "message": "fragile may not come back"}]}});
    let binding = json!({
        "metadata": {"name": "refuse-fragile"},
        "spec": {"policyName": "refuse-fragile", "validationActions": ["Deny"]}});
    create_cluster_scoped::<ValidatingAdmissionPolicy>(&c, policy).await;
    create_cluster_scoped::<ValidatingAdmissionPolicyBinding>(&c, binding).await;
    // In force once a probe of the same name is refused.
    eventually("the policy in force", WAIT, || async {
        let probe: Pod = serde_json::from_value(bare("fragile-probe")).expect("a pod");
        match pods.create(&PostParams::default(), &probe).await {
            Ok(_) => {
                let _ = pods.delete("fragile-probe", &Default::default()).await;
                None
            }
            Err(_) => Some(()),
        }
    })
    .await;
    let original = serde_json::to_value(pods.get("fragile").await.expect("fragile")).expect("json");
    let (code, report, err) = restart(&cp, &["--yes", "--owner", "pod/fragile"]);
    assert_eq!(code, 1, "{report:#}\n{err}");
    let step = outcome(&report, "fragile");
    assert_eq!(step["outcome"], "failed", "{report:#}");
    let message = step["message"].as_str().unwrap_or_default();
    let saved = cp.dir().join("issuer-guard-restart/e2e_fragile.json");
    assert!(
        message.contains("issuer-guard-restart/e2e_fragile.json"),
        "{message}"
    );
    let kept: Value =
        serde_json::from_slice(&std::fs::read(&saved).expect("the saved manifest")).expect("json");
    assert_eq!(kept["spec"], original["spec"]);
    assert_eq!(kept["metadata"]["uid"], original["metadata"]["uid"]);

    // A bare pod whose replacement issuer-guard itself would deny: in
    // enforce mode, a subPath copy of a token is refused while key A
    // retires. It is reported and left alone.
    let guarded = uid(&c, "guarded").await;
    guard.set_config("mode: enforce\n").await;
    let (code, report, err) = restart(&cp, &["--yes", "--owner", "pod/guarded"]);
    assert_eq!(code, 0, "{report:#}\n{err}");
    let step = outcome(&report, "guarded");
    assert_eq!(step["outcome"], "skipped", "{report:#}");
    assert!(
        step["message"]
            .as_str()
            .unwrap_or_default()
            .contains("would be refused"),
        "{report:#}"
    );
    assert_eq!(uid(&c, "guarded").await, guarded, "the pod was touched");

    // What is left blocking: the held pods and the guarded one. With the
    // budget gone and audit mode back, one run without --owner restarts
    // them, and nothing restarted before is chosen again.
    Api::<PodDisruptionBudget>::namespaced(c.clone(), NS)
        .delete("held", &Default::default())
        .await
        .expect("delete the budget");
    guard.set_config("mode: audit\n").await;
    let (code, plan, _) = restart(&cp, &["--dry-run"]);
    assert_eq!(code, 0);
    let mut left: Vec<String> = steps(&plan).into_iter().map(|s| s.1).collect();
    left.sort();
    assert_eq!(left, ["guarded", "held"], "{plan:#}");
    let report = eventually("the rest restarted", WAIT, || async {
        let (code, report, _) = restart(&cp, &["--yes"]);
        (code == 0).then_some(report)
    })
    .await;
    let (code, status, err) = eventually("status safe", WAIT, || async {
        let r = run_cli(&cp, &["status", "-A", "-o", "json"]);
        (r.0 == 0).then_some(r)
    })
    .await;
    assert_eq!(code, 0, "{report:#}\n{status:#}\n{err}");
    let a = status["verdicts"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == kid_a.as_str()))
        .expect("the verdict on key A");
    assert_eq!(a["verdict"], "safeNow", "{status:#}");
}
