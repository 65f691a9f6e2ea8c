//! `issuer-guard status` on a real control plane, through the seed key
//! rotation: nothing retires; key A retiring is blocked by a pod that froze
//! a legacy token; with that pod gone it is safe after the refresh of the
//! projected tokens minted before the switch completed; with only pods made
//! after it, safe now. Exit codes and the JSON report are checked at each
//! step.

mod support;

use std::{process::Command, time::Duration};

use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::{
    ControlPlane, NS, SaKey, ServiceAccountFlags, api, eventually,
    objects::{audience_pod, env_reader_pod},
    process::Proc,
    rotation::{discovering, spawn_inventory},
};

const ISSUER: &str = "https://issuer.status.example";
const WAIT: Duration = Duration::from_secs(60);

/// A pod with one projected token of `ttl` seconds, as the API server's
/// injected volume has, made for real (no kubelet runs it).
async fn projected_pod(cp: &ControlPlane, name: &str, ttl: i64) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "registry.example/app:1",
                "volumeMounts": [{"name": "token", "mountPath": "/var/run/secrets/tokens"}]}],
            "volumes": [{"name": "token", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": ttl}}]}}]
        }
    }))
    .expect("a Pod");
    Api::<Pod>::namespaced(cp.client.clone(), NS)
        .create(&PostParams::default(), &pod)
        .await
        .expect("create the pod");
}

async fn delete_pod(cp: &ControlPlane, name: &str) {
    Api::<Pod>::namespaced(cp.client.clone(), NS)
        .delete(name, &Default::default())
        .await
        .expect("delete the pod");
}

/// Runs `issuer-guard status -o json` as the admin against `ledger`; its
/// exit code and report.
fn status_of(cp: &ControlPlane, ledger: &str) -> (i32, Value, String) {
    let out = Command::new(support::issuer_guard_bin())
        .args(["status", "-o", "json", "-n", NS])
        .arg(format!("--kubeconfig={}", cp.kubeconfig.display()))
        .arg(format!("--ledger={NS}/{ledger}"))
        .output()
        .expect("run issuer-guard status");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), report, stderr)
}

fn status(cp: &ControlPlane) -> (i32, Value, String) {
    status_of(cp, "issuer-guard-ledger")
}

/// Runs `issuer-guard status -A -o json`: the inventory is cluster-wide.
fn status_everywhere(cp: &ControlPlane) -> Value {
    let out = Command::new(support::issuer_guard_bin())
        .args(["status", "-A", "-o", "json"])
        .arg(format!("--kubeconfig={}", cp.kubeconfig.display()))
        .arg(format!("--ledger={NS}/issuer-guard-ledger"))
        .output()
        .expect("run issuer-guard status");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// `issuer-guard inventory` assessing every 300 ms, once ready; its health
/// address.
async fn inventory(cp: &ControlPlane) -> (Proc, String) {
    let (mut proc, health) = spawn_inventory(cp, "300ms");
    proc.wait_ready(&health).await;
    (proc, health)
}

/// The value of the series `name` whose labels include every one of
/// `labels`, from the inventory's /metrics.
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(key, _)| {
            let (n, rest) = key.split_once('{').unwrap_or((key, ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, v)| v.parse().ok())
}

/// Where the inventory's metrics and `status`' report differ, if anywhere:
/// pods per generation, and for every verdict its kind, its blocking pods
/// and owners and its safe-after time.
fn disagreement(report: &Value, metrics: &str) -> Option<String> {
    let per_generation = report["pods"]["perGeneration"].as_object()?;
    for (generation, n) in per_generation {
        let got = series(
            metrics,
            "issuer_guard_inventory_pods",
            &[("generation", generation)],
        );
        if got != n.as_f64() {
            return Some(format!(
                "pods of generation {generation}: status {n}, inventory {got:?}"
            ));
        }
    }
    for v in report["verdicts"].as_array()? {
        let (kind, name) = (v["kind"].as_str()?, v["name"].as_str()?);
        let item = [("kind", kind), ("name", name)];
        let verdict = match v["verdict"].as_str()? {
            "safeNow" => "safe_now",
            "safeAfter" => "safe_after",
            "blockedBy" => "blocked",
            _ => "still_signing",
        };
        let one_hot = series(
            metrics,
            "issuer_guard_inventory_verdict",
            &[("kind", kind), ("name", name), ("verdict", verdict)],
        );
        if one_hot != Some(1.0) {
            return Some(format!(
                "{kind} {name}: status says {verdict}, inventory {one_hot:?}"
            ));
        }
        let blockers = v["blockers"].as_array().cloned().unwrap_or_default();
        let pods: usize = blockers
            .iter()
            .map(|b| b["pods"].as_array().map_or(0, Vec::len))
            .sum();
        let got = series(metrics, "issuer_guard_inventory_blocking_pods", &item);
        if got != Some(pods as f64) {
            return Some(format!(
                "{kind} {name}: {pods} blocking pods, inventory {got:?}"
            ));
        }
        let got = series(metrics, "issuer_guard_inventory_blocking_owners", &item);
        if got != Some(blockers.len() as f64) {
            return Some(format!(
                "{kind} {name}: {} blockers, inventory {got:?}",
                blockers.len()
            ));
        }
        if let Some(at) = v["at"].as_str() {
            let at: jiff::Timestamp = at.parse().ok()?;
            let got = series(
                metrics,
                "issuer_guard_inventory_safe_after_timestamp_seconds",
                &item,
            );
            if got != Some(at.as_second() as f64) {
                return Some(format!("{kind} {name}: safe after {at}, inventory {got:?}"));
            }
        }
    }
    None
}

/// Waits until the inventory at `health` says what `status -A` says.
async fn inventory_agrees(cp: &ControlPlane, health: &str) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client");
    let mut last = String::new();
    let agreed = tokio::time::timeout(WAIT, async {
        loop {
            let report = status_everywhere(cp);
            let metrics = support::rotation::metrics_text(&http, health).await;
            match disagreement(&report, &metrics) {
                None if report["verdicts"].is_array() => return,
                Some(why) => last = why,
                None => last = format!("no report: {report}"),
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    assert!(
        agreed.is_ok(),
        "the inventory never agreed with status: {last}"
    );
}

/// Restarts the API server signing with key B (A still verifies), and waits
/// until `status` says B is in force and A retires (exit 1); that report.
async fn switch_to_b(cp: &mut ControlPlane) -> Value {
    cp.restart_apiserver(ServiceAccountFlags {
        signing: SaKey::B,
        verifying: vec![SaKey::A, SaKey::B],
        ..ServiceAccountFlags::issuer(ISSUER)
    })
    .await;
    let kid_b = cp.pki.sa_b.kid.clone();
    let cp = &*cp;
    eventually("A retiring", WAIT, || async {
        let (code, report, _) = status(cp);
        (code == 1 && report["generation"]["keyId"] == kid_b.as_str()).then_some(report)
    })
    .await
}

fn verdict<'a>(report: &'a Value, kind: &str, name: &str) -> &'a Value {
    report["verdicts"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["kind"] == kind && v["name"] == name))
        .unwrap_or_else(|| panic!("no verdict for {kind} {name}: {report:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verdict_follows_the_key_rotation() {
    let mut cp = ControlPlane::start(ServiceAccountFlags {
        verifying: vec![SaKey::A],
        ..ServiceAccountFlags::issuer(ISSUER)
    })
    .await;
    let kid_a = cp.pki.sa_a.kid.clone();
    let _guard = discovering(&cp, "mode: enforce\n").await;
    eventually("the ledger", WAIT, || async {
        let (code, report, _) = status(&cp);
        (code == 0 && report["generation"]["keyId"] == kid_a.as_str()).then_some(report)
    })
    .await;
    api::legacy_token(&cp.client, "bot", "bot-token").await;
    support::webhook::wait_secret_known(&cp, "bot-token", WAIT).await;
    // Nothing retires: safe, exit 0, no verdict.
    projected_pod(&cp, "before", 3607).await;
    let created =
        api::create::<Pod>(&cp.client, &env_reader_pod("frozen", "bot-token"), false).await;
    created.object();
    let (code, report, err) = status(&cp);
    assert_eq!(code, 0, "{report:#}\n{err}");
    assert_eq!(report["verdicts"], json!([]), "{report:#}");
    assert_eq!(report["apiVersion"], "issuer-guard.io/v1");
    // The admin may read the API server's /metrics: its stale-token counter
    // is reported (no token here is older than its warnafter).
    assert_eq!(
        report["apiServerSignals"]["staleTokensTotal"],
        json!(0.0),
        "{report:#}"
    );
    // The in-cluster inventory, at every step below: its metrics say what
    // the CLI says.
    let (_inventory, health) = inventory(&cp).await;
    inventory_agrees(&cp, &health).await;

    let report = switch_to_b(&mut cp).await;
    let a = verdict(&report, "key", &kid_a);
    assert_eq!(a["verdict"], "blockedBy", "{report:#}");
    let blockers = a["blockers"].as_array().expect("blockers");
    assert_eq!(blockers.len(), 1, "{report:#}");
    assert_eq!(blockers[0]["name"], "frozen");
    assert_eq!(blockers[0]["rules"], json!(["legacy-token-env"]));
    assert!(
        blockers[0]["remedy"]
            .as_str()
            .unwrap_or_default()
            .contains("kubectl replace --force"),
        "{report:#}"
    );
    inventory_agrees(&cp, &health).await;

    // The frozen pod recreated elsewhere (here: gone): what is left are the
    // projected tokens minted before the switch completed.
    delete_pod(&cp, "frozen").await;
    let (code, report, _) = status(&cp);
    assert_eq!(code, 1, "{report:#}");
    let a = verdict(&report, "key", &kid_a);
    assert_eq!(a["verdict"], "safeAfter", "{report:#}");
    let completed: jiff::Timestamp = a["switchCompleted"]
        .as_str()
        .expect("the switch's completion")
        .parse()
        .expect("a time");
    let at: jiff::Timestamp = a["at"].as_str().expect("a time").parse().expect("a time");
    // 0.8 × 3607 s = 2885 s, plus the 5-minute margin.
    assert_eq!(
        at.as_second() - completed.as_second(),
        2885 + 300,
        "{report:#}"
    );
    inventory_agrees(&cp, &health).await;

    // Only pods made after the switch completed: safe now, exit 0.
    delete_pod(&cp, "before").await;
    // In a later second than the completion: the same second is ambiguous.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    projected_pod(&cp, "after", 3607).await;
    let (code, report, err) = status(&cp);
    assert_eq!(code, 0, "{report:#}\n{err}");
    assert_eq!(verdict(&report, "key", &kid_a)["verdict"], "safeNow");
    inventory_agrees(&cp, &health).await;

    // The table says the same; a ledger that does not exist is exit 2.
    let out = Command::new(support::issuer_guard_bin())
        .args(["status", "-n", NS])
        .arg(format!("--kubeconfig={}", cp.kubeconfig.display()))
        .arg(format!("--ledger={NS}/issuer-guard-ledger"))
        .output()
        .expect("run status");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!("key {kid_a}: safe to retire now")),
        "{table}"
    );
    let (code, _, err) = status_of(&cp, "no-such-ledger");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot read the ledger ConfigMap"), "{err}");
}

/// Seed 2, the kOps procedure, as `status` sees it: nothing retires at
/// [old] and [old, new]; at [new, old] the old issuer retires and a pod whose
/// projected token names it as audience blocks it; once that pod is gone the
/// old issuer is safe after the refresh; at [new] its retirement is reported
/// as observed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verdict_follows_the_kops_steps() {
    const OLD: &str = "https://old.status.example";
    const NEW: &str = "https://new.status.example";
    let mut cp = ControlPlane::start(ServiceAccountFlags::issuer(OLD)).await;
    let _guard = discovering(&cp, "mode: audit\n").await;
    eventually("the ledger", WAIT, || async {
        let (code, report, _) = status(&cp);
        (code == 0 && report["generation"]["issuer"] == OLD).then_some(())
    })
    .await;
    projected_pod(&cp, "before", 3607).await;
    let created = api::create::<Pod>(&cp.client, &audience_pod("aud-old", OLD), false).await;
    created.object();
    // The inventory judges the audience pod again when the ledger moves the
    // old issuer to retiring: its metrics follow every step.
    let (_inventory, health) = inventory(&cp).await;
    inventory_agrees(&cp, &health).await;
    cp.restart_apiserver(ServiceAccountFlags::issuers(&[OLD, NEW]))
        .await;
    let (code, report, _) = status(&cp);
    assert_eq!((code, &report["verdicts"]), (0, &json!([])), "{report:#}");

    cp.restart_apiserver(ServiceAccountFlags::issuers(&[NEW, OLD]))
        .await;
    let report = eventually("old retiring", WAIT, || async {
        let (code, report, _) = status(&cp);
        (code == 1 && report["generation"]["issuer"] == NEW).then_some(report)
    })
    .await;
    let old = verdict(&report, "issuer", OLD);
    assert_eq!(old["verdict"], "blockedBy", "{report:#}");
    assert_eq!(old["blockers"][0]["name"], "aud-old");
    assert_eq!(
        old["blockers"][0]["rules"],
        json!(["audience-retiring-issuer"])
    );
    inventory_agrees(&cp, &health).await;

    delete_pod(&cp, "aud-old").await;
    let (code, report, _) = status(&cp);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(
        verdict(&report, "issuer", OLD)["verdict"],
        "safeAfter",
        "{report:#}"
    );

    cp.restart_apiserver(ServiceAccountFlags::issuer(NEW)).await;
    let report = eventually("old observed retired", WAIT, || async {
        let (_, report, _) = status(&cp);
        let retired = verdict(&report, "issuer", OLD)["retired"].clone();
        (retired[1] == "observed").then_some(report)
    })
    .await;
    // Still the projected pod from before: it refreshes within the hour.
    assert_eq!(
        verdict(&report, "issuer", OLD)["verdict"],
        "safeAfter",
        "{report:#}"
    );
    inventory_agrees(&cp, &health).await;
}

/// A pod running as ServiceAccount `account` whose container `app` mounts
/// its projected token file alone, with `subPath`: a copy taken at the
/// container's start that the kubelet never refreshes.
async fn subpath_pod(cp: &ControlPlane, name: &str, account: &str) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "serviceAccountName": account,
            "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "registry.example/app:1",
                "volumeMounts": [{"name": "token", "mountPath": "/var/run/token", "subPath": "token"}]}],
            "volumes": [{"name": "token", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}}]
        }
    }))
    .expect("a Pod");
    Api::<Pod>::namespaced(cp.client.clone(), NS)
        .create(&PostParams::default(), &pod)
        .await
        .expect("create the pod");
}

/// There is no kubelet: the test says, through the status subresource as a
/// kubelet would, that the pod's container `app` is running since its
/// creation.
async fn mark_started(cp: &ControlPlane, name: &str) -> String {
    let pods = Api::<Pod>::namespaced(cp.client.clone(), NS);
    let pod = pods.get(name).await.expect("the pod");
    let created = pod
        .metadata
        .creation_timestamp
        .expect("a creation time")
        .0
        .to_string();
    let status = json!({"status": {"phase": "Running", "containerStatuses": [{
        "name": "app", "image": "registry.example/app:1", "imageID": "", "ready": true,
        "restartCount": 0, "state": {"running": {"startedAt": created}}}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("set the pod's status");
    created
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect()
}

/// What the seed key rotation leaves besides pods that froze a legacy token:
/// a legacy token Secret no pod mounts but something still sends (the API
/// server's `legacy-token-last-used` label) blocks the old key, an idle one
/// does not; a `subPath` copy taken before the switch blocks, one in a pod
/// made after it does not; and a ServiceAccount deleted and recreated under
/// its pods is reported with when each pod heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_tokens_copies_and_recreated_accounts() {
    let mut cp = ControlPlane::start(ServiceAccountFlags {
        verifying: vec![SaKey::A],
        ..ServiceAccountFlags::issuer(ISSUER)
    })
    .await;
    let kid_a = cp.pki.sa_a.kid.clone();
    let _guard = discovering(&cp, "mode: audit\n").await;
    eventually("the ledger", WAIT, || async {
        let (code, report, _) = status(&cp);
        (code == 0 && report["generation"]["keyId"] == kid_a.as_str()).then_some(())
    })
    .await;

    // A CI bot's token, sent to the API server (here through a TokenReview,
    // which runs the same authenticator), and one nobody sends.
    let used = api::legacy_token(&cp.client, "ci", "ci-token").await;
    api::legacy_token(&cp.client, "old-tool", "idle-token").await;
    assert!(api::token_accepted(&cp.client, &used).await);
    let secrets = Api::<Secret>::namespaced(cp.client.clone(), NS);
    let day = eventually("the API server to label the used token", WAIT, || async {
        let labels = secrets.get("ci-token").await.ok()?.metadata.labels?;
        labels.get("kubernetes.io/legacy-token-last-used").cloned()
    })
    .await;

    // ServiceAccount `app` with two pods, then deleted and made again.
    let accounts = Api::<ServiceAccount>::namespaced(cp.client.clone(), NS);
    let app: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "app"}})).expect("an SA");
    accounts
        .create(&PostParams::default(), &app)
        .await
        .expect("create app");
    subpath_pod(&cp, "copy-before", "app").await;
    projected_pod(&cp, "projected-before", 3607).await;
    mark_started(&cp, "copy-before").await;
    mark_started(&cp, "projected-before").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    accounts
        .delete("app", &DeleteParams::default())
        .await
        .expect("delete app");
    eventually("app gone", WAIT, || async {
        accounts.get_opt("app").await.ok()?.is_none().then_some(())
    })
    .await;
    let made = accounts
        .create(&PostParams::default(), &app)
        .await
        .expect("make app again");
    let recreated = made.metadata.creation_timestamp.expect("a time").0;

    let (code, report, err) = status(&cp);
    assert_eq!(code, 0, "nothing retires: {report:#}\n{err}");
    let tokens = &report["legacyTokens"];
    let token = |name: &str| {
        tokens
            .as_array()
            .and_then(|t| t.iter().find(|t| t["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no legacy token {name}: {report:#}"))
    };
    assert_eq!(token("ci-token")["lastUsed"], day.as_str(), "{report:#}");
    assert_eq!(token("idle-token")["lastUsed"], Value::Null, "{report:#}");
    assert_eq!(token("ci-token")["mountedBy"], 0);
    let app = report["serviceAccounts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == "app"))
        .unwrap_or_else(|| panic!("app not reported: {report:#}"));
    assert_eq!(
        app["recreated"]
            .as_str()
            .map(|t| t.parse::<jiff::Timestamp>().ok()),
        Some(Some(recreated)),
        "{report:#}"
    );
    // `projected-before` runs as `default`, which was never recreated.
    assert_eq!(names(&app["pods"]), ["copy-before"], "{report:#}");
    assert_eq!(app["pods"][0]["brokenUntilRecreated"], true);

    let report = switch_to_b(&mut cp).await;
    let a = verdict(&report, "key", &kid_a);
    assert_eq!(a["verdict"], "blockedBy", "{report:#}");
    let blockers: Vec<(&str, &str)> = a["blockers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            (
                b["kind"].as_str().unwrap_or(""),
                b["name"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        blockers,
        [("Pod", "copy-before"), ("Secret", "ci-token")],
        "{report:#}"
    );

    // The copy taken again in a pod made after the switch completed holds
    // the new key: only the used Secret is left.
    delete_pod(&cp, "copy-before").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    subpath_pod(&cp, "copy-after", "app").await;
    mark_started(&cp, "copy-after").await;
    let (code, report, _) = status(&cp);
    assert_eq!(code, 1, "{report:#}");
    let a = verdict(&report, "key", &kid_a);
    assert_eq!(names(&a["blockers"]), ["ci-token"], "{report:#}");
    assert_eq!(
        a["blockers"][0]["rules"],
        json!(["legacy-token-in-use"]),
        "{report:#}"
    );
}

/// kubectl runs a plugin `kubectl-issuer_guard` with the words after
/// `kubectl issuer-guard`: the same binary, under that name, answers them.
#[test]
fn the_binary_answers_as_the_kubectl_plugin() {
    let dir = tempfile::tempdir().expect("a directory");
    let plugin = dir.path().join("kubectl-issuer_guard");
    std::fs::copy(support::issuer_guard_bin(), &plugin).expect("copy the binary");
    let out = Command::new(&plugin)
        .args(["status", "--help"])
        .output()
        .expect("run the plugin");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    assert!(
        help.contains("--ledger") && help.contains("--all-namespaces"),
        "{help}"
    );
    // With no API server to ask: exit 2, and it says what to do.
    let out = Command::new(&plugin)
        .args(["status", "--kubeconfig", "/nonexistent/kubeconfig"])
        .env_remove("KUBECONFIG")
        .output()
        .expect("run the plugin");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("issuer-guard status: "), "{err}");
}
