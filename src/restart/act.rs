//! Carrying out one step of the plan against the API server. Every wait is
//! bounded by the run's timeout; every eviction honours
//! PodDisruptionBudgets, backing off while the API server answers 429; a
//! bare pod's manifest is on disk from before its eviction until its
//! replacement is admitted.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::plan::{Method, Step};
use crate::cluster::{Workloads, workload_path};

/// How often a wait asks again.
const POLL: Duration = Duration::from_millis(500);
/// How long to wait before asking again for an eviction a budget refused.
const EVICTION_BACKOFF: Duration = Duration::from_secs(2);

/// What became of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    Restarted(String),
    Skipped(String),
    Failed(String),
}

pub(super) struct Act<'a> {
    pub api: &'a Workloads,
    pub timeout: Duration,
    /// Where a bare pod's manifest is kept while it is recreated.
    pub save_dir: &'a Path,
    /// The API server's clock when the run began: the restart annotation's
    /// value.
    pub at: jiff::Timestamp,
}

fn api_error(e: &kube::Error) -> Option<(u16, String)> {
    match e {
        kube::Error::Api(status) => Some((status.code, status.message.clone())),
        _ => None,
    }
}

fn is_gone(e: &kube::Error) -> bool {
    api_error(e).is_some_and(|(code, _)| code == 404)
}

impl Act<'_> {
    pub(super) async fn step(&self, step: &Step) -> Outcome {
        let result = match &step.method {
            Method::Skip(why) => return Outcome::Skipped(why.clone()),
            Method::RolloutRestart => self.rollout_restart(step).await,
            Method::RollingReplace => self.rolling_replace(step).await,
            Method::ScaleToZero => self.scale_to_zero(step).await,
            Method::Recreate => self.recreate(step).await,
            Method::Evict => self.evict_all(step).await,
        };
        match result {
            Ok(done) => Outcome::Restarted(done),
            Err(Refused::Skip(why)) => Outcome::Skipped(why),
            Err(Refused::Fail(why)) => Outcome::Failed(why),
        }
    }

    fn path(&self, step: &Step) -> Result<String, Refused> {
        workload_path(&step.kind, &step.namespace, &step.name)
            .ok_or_else(|| Refused::Fail(format!("cannot act on kind {}", step.kind)))
    }

    async fn get(&self, path: &str) -> Result<Value, Refused> {
        self.api
            .get(path)
            .await
            .map_err(|e| Refused::Fail(format!("reading {path}: {e}")))
    }

    /// Polls `done` on the object at `path` until it holds or the timeout.
    async fn wait_for(
        &self,
        path: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Result<(), Refused> {
        let start = Instant::now();
        loop {
            let object = self.get(path).await?;
            if done(&object) {
                return Ok(());
            }
            if start.elapsed() > self.timeout {
                return Err(Refused::Fail(format!(
                    "timed out after {}s waiting for {what}; it goes on by itself, check it with kubectl and run restart again",
                    self.timeout.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `kubectl rollout restart`: a new pod-template annotation, then the
    /// wait for the rollout to finish, as `kubectl rollout status` reads it.
    async fn rollout_restart(&self, step: &Step) -> Result<String, Refused> {
        let path = self.path(step)?;
        let at = self.at.to_string();
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": at}}}}});
        self.api
            .merge_patch(&path, &patch)
            .await
            .map_err(|e| Refused::Fail(format!("patching the pod template: {e}")))?;
        let kind = step.kind.clone();
        self.wait_for(&path, "the rollout", move |o| rolled_out(&kind, o))
            .await?;
        Ok(format!(
            "rolled out ({} pods were blocking)",
            step.pods.len()
        ))
    }

    async fn scale(&self, path: &str, replicas: i64) -> Result<(), Refused> {
        self.api
            .merge_patch(path, &json!({"spec": {"replicas": replicas}}))
            .await
            .map(|_| ())
            .map_err(|e| Refused::Fail(format!("scaling to {replicas}: {e}")))
    }

    /// The seed runbook's rolling update without `kubectl rolling-update`:
    /// for each old pod, one more replica, ready, then the old pod made the
    /// cheapest to delete and the count set back. Name and selector stay.
    async fn rolling_replace(&self, step: &Step) -> Result<String, Refused> {
        let path = self.path(step)?;
        let rc = self.get(&path).await?;
        let replicas = rc["spec"]["replicas"].as_i64().unwrap_or(1);
        for old in &step.pods {
            let pod_path = format!("/api/v1/namespaces/{}/pods/{old}", step.namespace);
            match self.api.get(&pod_path).await {
                Err(e) if is_gone(&e) => continue,
                Err(e) => return Err(Refused::Fail(format!("reading pod {old}: {e}"))),
                Ok(_) => {}
            }
            self.scale(&path, replicas + 1).await?;
            self.wait_for(&path, "the extra pod to be ready", |o| {
                o["status"]["readyReplicas"].as_i64().unwrap_or(0) > replicas
            })
            .await?;
            let cost = json!({"metadata": {"annotations": {
                "controller.kubernetes.io/pod-deletion-cost": "-2147483648"}}});
            if let Err(e) = self.api.merge_patch(&pod_path, &cost).await
                && !is_gone(&e)
            {
                // Put the count back before giving up on this controller.
                self.scale(&path, replicas).await?;
                return Err(Refused::Fail(format!(
                    "marking {old} as the one to remove: {e}"
                )));
            }
            self.scale(&path, replicas).await?;
            let start = Instant::now();
            loop {
                match self.api.get(&pod_path).await {
                    Err(e) if is_gone(&e) => break,
                    Ok(p) if p["metadata"]["deletionTimestamp"].is_string() => break,
                    _ if start.elapsed() > self.timeout => {
                        return Err(Refused::Fail(format!(
                            "{old} was not removed within {}s",
                            self.timeout.as_secs()
                        )));
                    }
                    _ => tokio::time::sleep(POLL).await,
                }
            }
        }
        self.wait_for(&path, "the pods to be ready", |o| {
            o["status"]["readyReplicas"].as_i64().unwrap_or(0) >= replicas
        })
        .await?;
        Ok(format!(
            "{} pods replaced one at a time; never fewer than {replicas} ready",
            step.pods.len()
        ))
    }

    /// The seed runbook's scale to zero and back: downtime, on request only.
    async fn scale_to_zero(&self, step: &Step) -> Result<String, Refused> {
        let path = self.path(step)?;
        let rc = self.get(&path).await?;
        let replicas = rc["spec"]["replicas"].as_i64().unwrap_or(1);
        self.scale(&path, 0).await?;
        self.wait_for(&path, "every pod to go", |o| {
            o["status"]["replicas"].as_i64().unwrap_or(0) == 0
        })
        .await?;
        self.scale(&path, replicas).await?;
        self.wait_for(&path, "the pods to be ready", |o| {
            o["status"]["readyReplicas"].as_i64().unwrap_or(0) >= replicas
        })
        .await?;
        Ok(format!("scaled to 0 and back to {replicas}"))
    }

    /// Evicts one pod, waiting out a budget's 429s until the timeout.
    async fn evict(&self, namespace: &str, pod: &str) -> Result<(), Refused> {
        let start = Instant::now();
        loop {
            match self.api.evict(namespace, pod).await {
                Ok(()) => return Ok(()),
                Err(e) if is_gone(&e) => return Ok(()),
                Err(e) => match api_error(&e) {
                    Some((429, message)) if start.elapsed() < self.timeout => {
                        tracing::debug!(pod, %message, "eviction refused by a budget; waiting");
                        tokio::time::sleep(EVICTION_BACKOFF).await;
                    }
                    Some((429, message)) => {
                        return Err(Refused::Skip(format!(
                            "a PodDisruptionBudget refused to let {pod} go for {}s ({message}); nothing was deleted",
                            self.timeout.as_secs()
                        )));
                    }
                    Some((500, message)) if message.contains("more than one") => {
                        return Err(Refused::Skip(format!(
                            "{pod} is covered by more than one PodDisruptionBudget, which the API server cannot evict through; nothing was deleted"
                        )));
                    }
                    _ => return Err(Refused::Fail(format!("evicting {pod}: {e}"))),
                },
            }
        }
    }

    async fn evict_all(&self, step: &Step) -> Result<String, Refused> {
        for pod in &step.pods {
            self.evict(&step.namespace, pod).await?;
        }
        Ok(format!(
            "{} pods evicted; {} {} makes them again",
            step.pods.len(),
            step.kind,
            step.name
        ))
    }

    /// A bare pod: its replacement is tried first (a server-side dry run,
    /// through every admission webhook), its manifest saved, then it is
    /// evicted and created again.
    async fn recreate(&self, step: &Step) -> Result<String, Refused> {
        let path = self.path(step)?;
        let live = self.get(&path).await?;
        let replacement = replacement(&live);
        let collection = format!("/api/v1/namespaces/{}/pods", step.namespace);
        match self.api.create(&collection, &replacement, true).await {
            Ok(_) => {}
            // Admission passed; the name is only taken by the pod itself.
            Err(e) if api_error(&e).is_some_and(|(c, _)| c == 409) => {}
            Err(e) => {
                let (_, message) = api_error(&e).unwrap_or((0, e.to_string()));
                if message.contains("dry run") || message.contains("dryRun") {
                    return Err(Refused::Skip(format!(
                        "cannot pre-check its replacement (an admission webhook does not support dry run: {message}); left alone"
                    )));
                }
                return Err(Refused::Skip(format!(
                    "its replacement would be refused ({message}); fix its spec, the pod is left alone"
                )));
            }
        }
        let saved = save(self.save_dir, &step.namespace, &step.name, &live)?;
        self.evict(&step.namespace, &step.name).await?;
        let uid = live["metadata"]["uid"].clone();
        let start = Instant::now();
        loop {
            match self.api.get(&path).await {
                Err(e) if is_gone(&e) => break,
                Ok(p) if p["metadata"]["uid"] != uid => break,
                _ if start.elapsed() > self.timeout => {
                    return Err(Refused::Fail(format!(
                        "it was evicted but is still terminating after {}s; its manifest is saved at {}: kubectl create -f {} once it is gone",
                        self.timeout.as_secs(),
                        saved.display(),
                        saved.display()
                    )));
                }
                _ => tokio::time::sleep(POLL).await,
            }
        }
        match self.api.create(&collection, &replacement, false).await {
            Ok(_) => {
                // Admitted: the saved copy is no longer the only one.
                let _ = std::fs::remove_file(&saved);
                Ok("evicted and created again from its live spec".to_owned())
            }
            Err(e) => Err(Refused::Fail(format!(
                "it was evicted but its replacement was refused ({e}); its manifest is saved at {}: fix it and kubectl create -f {}",
                saved.display(),
                saved.display()
            ))),
        }
    }
}

pub(super) enum Refused {
    /// Left alone on purpose; nothing was lost.
    Skip(String),
    Fail(String),
}

/// Whether a rollout of `kind` has finished, as `kubectl rollout status`
/// reads it.
pub(super) fn rolled_out(kind: &str, o: &Value) -> bool {
    let spec = &o["spec"];
    let status = &o["status"];
    let int = |v: &Value| v.as_i64().unwrap_or(0);
    let observed = int(&status["observedGeneration"]) >= int(&o["metadata"]["generation"]);
    let replicas = spec["replicas"].as_i64().unwrap_or(1);
    observed
        && match kind {
            "Deployment" => {
                int(&status["updatedReplicas"]) == replicas
                    && int(&status["replicas"]) == replicas
                    && int(&status["availableReplicas"]) == replicas
            }
            "StatefulSet" => {
                int(&status["updatedReplicas"]) == replicas
                    && int(&status["readyReplicas"]) == replicas
                    && status["currentRevision"] == status["updateRevision"]
            }
            "DaemonSet" => {
                let desired = int(&status["desiredNumberScheduled"]);
                int(&status["updatedNumberScheduled"]) == desired
                    && int(&status["numberAvailable"]) == desired
            }
            _ => false,
        }
}

/// A bare pod's replacement: its live object without what the API server,
/// the scheduler and issuer-guard's stamp set. Everything the user wrote
/// stays, in its order.
pub(super) fn replacement(live: &Value) -> Value {
    let mut pod = live.clone();
    if let Some(map) = pod.as_object_mut() {
        map.remove("status");
        map.insert("apiVersion".into(), Value::from("v1"));
        map.insert("kind".into(), Value::from("Pod"));
    }
    if let Some(meta) = pod["metadata"].as_object_mut() {
        for field in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
            "generation",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            meta.remove(field);
        }
        for stamps in ["labels", "annotations"] {
            if let Some(m) = meta.get_mut(stamps).and_then(Value::as_object_mut) {
                m.retain(|k, _| !k.starts_with("issuer-guard.io/"));
            }
        }
    }
    if let Some(spec) = pod["spec"].as_object_mut() {
        spec.remove("nodeName");
    }
    pod
}

fn save(dir: &Path, namespace: &str, name: &str, live: &Value) -> Result<PathBuf, Refused> {
    let fail = |e: std::io::Error| {
        Refused::Skip(format!(
            "cannot save its manifest under {} ({e}), so it is left alone; pass --save-dir",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let path = dir.join(format!("{namespace}_{name}.json"));
    let text = serde_json::to_vec_pretty(live).map_err(|e| fail(std::io::Error::other(e)))?;
    std::fs::write(&path, text).map_err(fail)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replacement_keeps_the_users_fields_and_drops_the_servers() {
        let live = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "resourceVersion": "9",
                "creationTimestamp": "2026-12-01T00:00:00Z", "managedFields": [],
                "labels": {"app": "x", "issuer-guard.io/generation": "1"},
                "annotations": {"note": "keep", "issuer-guard.io/issuer": "https://old"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i", "args": ["b", "a"]}]},
            "status": {"phase": "Running"}});
        let r = replacement(&live);
        assert_eq!(
            r,
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "ns",
                    "labels": {"app": "x"}, "annotations": {"note": "keep"}},
                "spec": {"containers": [{"name": "c", "image": "i", "args": ["b", "a"]}]}})
        );
    }

    #[test]
    fn a_rollout_is_done_when_every_replica_is_updated_and_available() {
        let d = |updated, available, observed| {
            json!({"metadata": {"generation": 2}, "spec": {"replicas": 3},
                "status": {"observedGeneration": observed, "updatedReplicas": updated,
                    "replicas": 3, "availableReplicas": available}})
        };
        assert!(rolled_out("Deployment", &d(3, 3, 2)));
        assert!(!rolled_out("Deployment", &d(3, 2, 2)));
        assert!(!rolled_out("Deployment", &d(3, 3, 1)), "not yet observed");
        assert!(!rolled_out("Unknown", &d(3, 3, 2)));
    }
}
