//! `issuer-guard status`: whether the retiring issuer or key can be retired
//! now, after a time, or which owners and pods block it; read from the live
//! cluster with the caller's own credentials, the ledger's timeline and the
//! same rules admission uses (`judge::value`).

mod output;
mod pods;
mod verdict;

use std::{collections::HashMap, ffi::OsString, path::PathBuf, time::Duration};

use serde_json::Value;

use crate::{
    cluster::{self, ClusterError},
    config::{Config, ConfigError},
    judge::{self, Known},
    rules::{LegacySecrets, NO_CREDENTIALS},
    state::ledger::{self, Window},
};
pub use output::Format;
use pods::PodFacts;
use verdict::{JudgedPod, Owner, Verdict};

/// Exit codes a runbook or CI job can gate on.
pub const EXIT_SAFE: u8 = 0;
pub const EXIT_NOT_YET: u8 = 1;
pub const EXIT_UNDECIDED: u8 = 2;

#[derive(Debug, Clone)]
pub struct Options {
    pub kubeconfig: Option<OsString>,
    pub context: Option<String>,
    /// `None`: every namespace.
    pub namespace: Option<String>,
    pub output: Format,
    /// The ledger, as NAMESPACE/NAME.
    pub ledger: String,
    /// The configuration the webhook runs with; the embedded default when
    /// `None`.
    pub config: Option<PathBuf>,
    pub window: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("--ledger must be NAMESPACE/NAME, got {0:?}")]
    LedgerName(String),
    #[error(
        "cannot read the ledger ConfigMap {name}: {message}; is discovery on (the chart's discovery.enabled), and is --ledger the chart's <release>-ledger?"
    )]
    Ledger { name: String, message: String },
    #[error("the ledger {0} has no completed switch yet: nothing can be judged against it")]
    NoGeneration(String),
    #[error(
        "cannot list {what}: {source}; check that your credentials may list them (kubectl auth can-i list {what})"
    )]
    List {
        what: &'static str,
        source: kube::Error,
    },
    #[error("cannot read the API server's clock: {0}")]
    Clock(String),
    #[error("cannot write the report: {0}")]
    Write(#[from] std::io::Error),
}

/// Runs `status` and returns its exit code.
pub async fn run(options: &Options) -> Result<u8, StatusError> {
    let client =
        cluster::connect_as_kubectl(options.kubeconfig.as_deref(), options.context.as_deref())
            .await?;
    let found = read_timeline(&client, options).await?;
    let config = match &options.config {
        Some(path) => Config::load(path)?.config,
        None => Config::embedded_default(),
    }
    .with_discovered(&found);
    let now = cluster::server_date(&client)
        .await
        .map_err(StatusError::Clock)?;
    let scope = match &options.namespace {
        Some(ns) => format!("/namespaces/{ns}"),
        None => String::new(),
    };
    let secrets = legacy_secrets(&client, &scope).await?;
    let deployments = deployments_of_replica_sets(&client, &scope).await?;
    let known = Known {
        secrets: &secrets,
        credentials: &NO_CREDENTIALS,
    };
    let mut judged = Vec::new();
    let listed = cluster::list_pages(&client, &format!("/api/v1{scope}/pods"), false, |items| {
        for mut pod in items {
            // A list's items carry no kind of their own.
            if let Some(map) = pod.as_object_mut() {
                map.insert("apiVersion".into(), Value::from("v1"));
                map.insert("kind".into(), Value::from("Pod"));
            }
            judged.push(judge_pod(&config, known, &pod, &deployments));
        }
        if options.output == Format::Table {
            eprintln!("issuer-guard status: {} pods judged", judged.len());
        }
    })
    .await
    .map_err(|source| StatusError::List {
        what: "pods",
        source,
    })?;
    let verdicts = verdict::decide(&found, &judged, now);
    let report = output::Report {
        now,
        ledger: &options.ledger,
        found: &found,
        pods: &judged,
        verdicts: &verdicts,
        listed,
    };
    let mut out = std::io::stdout().lock();
    match options.output {
        Format::Table => report.table(&mut out)?,
        Format::Json => report.json(&mut out)?,
    }
    let all_safe = verdicts
        .iter()
        .all(|v| matches!(v.verdict, Verdict::SafeNow));
    Ok(if all_safe { EXIT_SAFE } else { EXIT_NOT_YET })
}

/// What the ledger says now: the generation, the timeline and the rotation.
async fn read_timeline(
    client: &kube::Client,
    options: &Options,
) -> Result<crate::state::Discovered, StatusError> {
    let (ledger_ns, ledger_name) = options
        .ledger
        .split_once('/')
        .filter(|(ns, n)| !ns.is_empty() && !n.is_empty())
        .ok_or_else(|| StatusError::LedgerName(options.ledger.clone()))?;
    let read_ledger = |message: String| StatusError::Ledger {
        name: options.ledger.clone(),
        message,
    };
    let path = format!("/api/v1/namespaces/{ledger_ns}/configmaps/{ledger_name}");
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| read_ledger(e.to_string()))?;
    let text = client
        .request_text(request)
        .await
        .map_err(|e| read_ledger(e.to_string()))?;
    let map: Value = serde_json::from_str(&text).map_err(|e| read_ledger(e.to_string()))?;
    let timeline = ledger::from_data(|key| map["data"][key].as_str()).map_err(read_ledger)?;
    timeline
        .conclude(Window(options.window))
        .ok_or_else(|| StatusError::NoGeneration(options.ledger.clone()))
}

/// The legacy token Secrets in `scope`, by metadata only.
async fn legacy_secrets(client: &kube::Client, scope: &str) -> Result<LegacySecrets, StatusError> {
    let mut secrets = LegacySecrets::default();
    let selector = crate::rules::legacy_token_selector()
        .replace('/', "%2F")
        .replace('=', "%3D");
    let path = format!("/api/v1{scope}/secrets?fieldSelector={selector}");
    cluster::list_pages(client, &path, true, |items| {
        for s in items {
            let meta = &s["metadata"];
            if let (Some(ns), Some(name)) = (meta["namespace"].as_str(), meta["name"].as_str()) {
                secrets.insert(ns, name);
            }
        }
    })
    .await
    .map_err(|source| StatusError::List {
        what: "secrets",
        source,
    })?;
    Ok(secrets)
}

/// (namespace, ReplicaSet) to its Deployment: a ReplicaSet's pods are acted
/// on through the Deployment.
async fn deployments_of_replica_sets(
    client: &kube::Client,
    scope: &str,
) -> Result<HashMap<(String, String), String>, StatusError> {
    let mut deployments = HashMap::new();
    let path = format!("/apis/apps/v1{scope}/replicasets");
    cluster::list_pages(client, &path, true, |items| {
        for rs in items {
            let meta = &rs["metadata"];
            let owner = meta["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|o| o["controller"] == true && o["kind"] == "Deployment")
                .and_then(|o| o["name"].as_str());
            if let (Some(ns), Some(name), Some(owner)) =
                (meta["namespace"].as_str(), meta["name"].as_str(), owner)
            {
                deployments.insert((ns.to_owned(), name.to_owned()), owner.to_owned());
            }
        }
    })
    .await
    .map_err(|source| StatusError::List {
        what: "replicasets",
        source,
    })?;
    Ok(deployments)
}

fn judge_pod(
    config: &Config,
    known: Known<'_>,
    pod: &Value,
    deployments: &HashMap<(String, String), String>,
) -> JudgedPod {
    let facts = PodFacts::of(pod);
    let findings = match judge::value(config, known, pod, &facts.namespace) {
        Ok(Some(j)) => j
            .verdict
            .decided
            .iter()
            .map(|d| (d.finding.rule, d.finding.detail.clone()))
            .collect(),
        // A live Pod the API server accepted is always readable; one that is
        // not is judged as holding nothing, and says so.
        Ok(None) | Err(_) => {
            eprintln!(
                "issuer-guard status: pod {}/{} could not be judged",
                facts.namespace, facts.name
            );
            Vec::new()
        }
    };
    let owner = facts.owner.as_ref().map(|(kind, name)| {
        let key = (facts.namespace.clone(), name.clone());
        match (kind.as_str(), deployments.get(&key)) {
            ("ReplicaSet", Some(deployment)) => Owner {
                kind: "Deployment".into(),
                namespace: facts.namespace.clone(),
                name: deployment.clone(),
            },
            _ => Owner {
                kind: kind.clone(),
                namespace: facts.namespace.clone(),
                name: name.clone(),
            },
        }
    });
    JudgedPod {
        facts,
        owner,
        findings,
    }
}
