//! The API calls `restart` makes, as raw JSON: the objects it recreates are
//! read and written as the API server gave them, never round-tripped
//! through typed structs, so no field a newer API server added is lost.

use kube::Client;
use serde_json::{Value, json};

/// The REST path of a workload or pod `kind` named `name` in `namespace`;
/// `None` for a kind `restart` does not act on.
pub(crate) fn path(kind: &str, namespace: &str, name: &str) -> Option<String> {
    let (prefix, plural) = match kind {
        "Deployment" => ("/apis/apps/v1", "deployments"),
        "StatefulSet" => ("/apis/apps/v1", "statefulsets"),
        "DaemonSet" => ("/apis/apps/v1", "daemonsets"),
        "ReplicaSet" => ("/apis/apps/v1", "replicasets"),
        "ReplicationController" => ("/api/v1", "replicationcontrollers"),
        "Pod" => ("/api/v1", "pods"),
        _ => return None,
    };
    Some(format!("{prefix}/namespaces/{namespace}/{plural}/{name}"))
}

#[derive(Clone)]
pub(crate) struct Workloads {
    client: Client,
}

impl Workloads {
    pub(crate) fn new(client: Client) -> Self {
        Workloads { client }
    }

    async fn send(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&Value>,
        content_type: &str,
    ) -> Result<Value, kube::Error> {
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).map_err(kube::Error::SerdeError)?,
            None => Vec::new(),
        };
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::CONTENT_TYPE, content_type)
            .body(bytes)
            .map_err(|e| kube::Error::BuildRequest(kube::core::request::Error::BuildRequest(e)))?;
        let text = self.client.request_text(request).await?;
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(kube::Error::SerdeError)
    }

    pub(crate) async fn get(&self, path: &str) -> Result<Value, kube::Error> {
        self.send(http::Method::GET, path, None, "application/json")
            .await
    }

    /// A JSON merge patch: only the fields named change.
    pub(crate) async fn merge_patch(
        &self,
        path: &str,
        patch: &Value,
    ) -> Result<Value, kube::Error> {
        self.send(
            http::Method::PATCH,
            path,
            Some(patch),
            "application/merge-patch+json",
        )
        .await
    }

    /// Creates `object` in the collection at `collection`; with `dry_run`
    /// the API server runs every admission step and stores nothing.
    pub(crate) async fn create(
        &self,
        collection: &str,
        object: &Value,
        dry_run: bool,
    ) -> Result<Value, kube::Error> {
        let path = if dry_run {
            format!("{collection}?dryRun=All")
        } else {
            collection.to_owned()
        };
        self.send(http::Method::POST, &path, Some(object), "application/json")
            .await
    }

    /// Asks to evict a pod: the API server refuses (429) what a
    /// PodDisruptionBudget does not allow.
    pub(crate) async fn evict(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        let eviction = json!({
            "apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        });
        self.send(
            http::Method::POST,
            &format!("/api/v1/namespaces/{namespace}/pods/{name}/eviction"),
            Some(&eviction),
            "application/json",
        )
        .await
        .map(|_| ())
    }

    /// Records what was done as an Event on the object at (kind, namespace,
    /// name, uid), as `kubectl describe` shows it, stamped with the API
    /// server's clock. A failed Event is not a failed restart.
    pub(crate) async fn event(
        &self,
        involved: (&str, &str, &str, &str),
        api_version: &str,
        reason: &str,
        message: &str,
    ) -> Result<(), kube::Error> {
        let (kind, namespace, name, uid) = involved;
        let now = super::server_date(&self.client)
            .await
            .map_err(|e| kube::Error::Service(e.into()))?
            .to_string();
        let event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": format!("{name}.issuer-guard-"), "namespace": namespace},
            "involvedObject": {"apiVersion": api_version, "kind": kind, "name": name,
                "namespace": namespace, "uid": uid},
            "reason": reason, "message": message, "type": "Normal",
            "source": {"component": "issuer-guard-restart"},
            "reportingComponent": "issuer-guard-restart",
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        });
        self.create(
            &format!("/api/v1/namespaces/{namespace}/events"),
            &event,
            false,
        )
        .await
        .map(|_| ())
    }
}
