//! What the `status` and `restart` scenarios share: issuer-guard discovering
//! from the test's API server with a canary account, the CLI run as the
//! admin, and a stand-in for the kubelet's status reports.

use std::{process::Command, time::Duration};

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use super::{ControlPlane, IssuerGuard, NS, process::Proc, webhook::Launch};

pub const ACCOUNT: &str = "issuer-guard-canary";
pub const LEDGER: &str = "issuer-guard-ledger";

/// issuer-guard discovering from the one API server, minting for the canary
/// account, registered with the API server.
pub async fn discovering(cp: &ControlPlane, config: &str) -> IssuerGuard {
    discovering_with(cp, config, true).await
}

/// [`discovering`], registered as the pods' admission webhook only when
/// `registered`.
pub async fn discovering_with(cp: &ControlPlane, config: &str, registered: bool) -> IssuerGuard {
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": ACCOUNT}})).expect("an SA");
    Api::<ServiceAccount>::namespaced(cp.client.clone(), NS)
        .create(&PostParams::default(), &account)
        .await
        .expect("the canary account");
    let mut launch = Launch {
        args: vec![
            format!("--service-account={NS}/{ACCOUNT}"),
            format!(
                "--apiserver-endpoints=https://127.0.0.1:{}",
                cp.apiserver_port()
            ),
            "--discovery-interval=500ms".into(),
            "--discovery-window=4s".into(),
        ],
        ..Launch::default()
    };
    if !registered {
        launch.registration = None;
    }
    IssuerGuard::launch(cp, config, launch).await
}

/// Starts `issuer-guard inventory` as the chart runs it, here as the admin
/// and on loopback, assessing every `interval`; its health address. It is
/// not waited for.
pub fn spawn_inventory(cp: &ControlPlane, interval: &str) -> (Proc, String) {
    let health = format!("127.0.0.1:{}", super::process::free_port());
    let proc = Proc::spawn(
        "inventory",
        &super::issuer_guard_bin(),
        &[
            "inventory".into(),
            format!("--kubeconfig={}", cp.kubeconfig.display()),
            format!("--ledger={NS}/{LEDGER}"),
            format!("--listen={health}"),
            format!("--interval={interval}"),
        ],
        cp.dir().join("inventory.log"),
    );
    (proc, health)
}

/// Runs `issuer-guard <args> --kubeconfig … --ledger …` as the admin; its
/// exit code, stdout read as JSON (null when it is not) and stderr.
pub fn run_cli(cp: &ControlPlane, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(super::issuer_guard_bin())
        .args(args)
        .arg(format!("--kubeconfig={}", cp.kubeconfig.display()))
        .arg(format!("--ledger={NS}/{LEDGER}"))
        .current_dir(cp.dir())
        .output()
        .expect("run issuer-guard");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), report, stderr)
}

/// A pod template (or pod) whose container `app` mounts its projected
/// token file alone, with `subPath`: a copy taken at the container's start.
pub fn subpath_spec(labels: Value) -> Value {
    json!({
        "metadata": {"labels": labels},
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "registry.example/app:1",
                "volumeMounts": [{"name": "token", "mountPath": "/var/run/token", "subPath": "token"}]}],
            "volumes": [{"name": "token", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}}]
        }
    })
}

/// There is no kubelet: this says, through the status subresource as a
/// kubelet would, that each pod of [`NS`] runs and is ready, so that
/// controllers count it available and rollouts finish. Until dropped.
pub fn kubelet_stand_in(cp: &ControlPlane) -> tokio::task::JoinHandle<()> {
    let pods = Api::<Pod>::namespaced(cp.client.clone(), NS);
    tokio::spawn(async move {
        loop {
            if let Ok(list) = pods.list(&ListParams::default()).await {
                for pod in list.items {
                    let ready = pod
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| {
                            c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        });
                    if ready || pod.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    let (Some(name), Some(created)) = (
                        pod.metadata.name.clone(),
                        pod.metadata.creation_timestamp.clone(),
                    ) else {
                        continue;
                    };
                    let at = created.0.to_string();
                    let containers: Vec<Value> = pod
                        .spec
                        .iter()
                        .flat_map(|s| &s.containers)
                        .map(|c| {
                            json!({"name": c.name, "image": c.image, "imageID": "",
                            "ready": true, "started": true, "restartCount": 0,
                            "state": {"running": {"startedAt": at}}})
                        })
                        .collect();
                    let status = json!({"status": {"phase": "Running",
                        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": at}],
                        "containerStatuses": containers}});
                    let _ = pods
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                        .await;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// The text of `/metrics` at `health`.
pub async fn metrics_text(http: &reqwest::Client, health: &str) -> String {
    http.get(format!("http://{health}/metrics"))
        .send()
        .await
        .expect("/metrics")
        .text()
        .await
        .expect("its text")
}
