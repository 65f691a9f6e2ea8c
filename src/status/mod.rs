//! `issuer-guard status`: whether the retiring issuer or key can be retired
//! now, after a time, or which owners and pods block it; read from the live
//! cluster with the caller's own credentials, the ledger's timeline and the
//! same rules admission uses (`judge::view`).

mod output;
mod signals;

use std::{
    collections::{BTreeMap, HashMap},
    ffi::OsString,
    path::PathBuf,
    time::Duration,
};

use serde_json::Value;

use crate::{
    cluster::{self, ClusterError},
    config::{Config, ConfigError},
    judge::Known,
    retirement::{Accounts, Evidence, LegacyToken, SecretKey, Verdict, judge_pod_text},
    rules::{LegacySecrets, NO_CREDENTIALS},
    state::ledger::{self, Window},
};
pub use output::Format;

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
    /// Only pods matching this label selector.
    pub selector: Option<String>,
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

/// What a run read from the cluster: everything an assessment is made
/// from. `restart` reads the same, so that it restarts what `status` says
/// blocks.
pub(crate) struct Collected {
    pub client: kube::Client,
    pub found: crate::state::Discovered,
    pub judged: Vec<crate::retirement::JudgedPod>,
    pub deployments: HashMap<(String, String), String>,
    pub accounts: Accounts,
    pub legacy: BTreeMap<SecretKey, LegacyToken>,
    pub now: jiff::Timestamp,
    pub listed: usize,
}

impl Collected {
    pub(crate) fn evidence(&self) -> Evidence<'_> {
        Evidence {
            found: &self.found,
            pods: &self.judged,
            deployments: &self.deployments,
            accounts: &self.accounts,
            legacy: &self.legacy,
            now: self.now,
        }
    }
}

/// Reads the ledger, the legacy token Secrets, ReplicaSets,
/// ServiceAccounts and pods of `options`' scope, and judges every pod;
/// `progress` writes a count to stderr after each page.
pub(crate) async fn collect(options: &Options, progress: bool) -> Result<Collected, StatusError> {
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
    let (secrets, legacy) = legacy_secrets(&client, &scope).await?;
    let deployments = deployments_of_replica_sets(&client, &scope).await?;
    let accounts = service_accounts(&client, &scope).await?;
    let known = Known {
        secrets: &secrets,
        credentials: &NO_CREDENTIALS,
    };
    let mut judged = Vec::new();
    let pods_path = match &options.selector {
        Some(selector) => format!(
            "/api/v1{scope}/pods?labelSelector={}",
            cluster::percent(selector)
        ),
        None => format!("/api/v1{scope}/pods"),
    };
    let listed = cluster::list_page_texts(&client, &pods_path, |items| {
        for item in items {
            match judge_pod_text(&config, known, item) {
                Ok(p) => judged.push(p),
                // A live Pod the API server accepted is always readable.
                Err(what) => {
                    eprintln!("issuer-guard: a pod could not be read ({what}), and is left out");
                }
            }
        }
        if progress {
            eprintln!("issuer-guard: {} pods judged", judged.len());
        }
    })
    .await
    .map_err(|source| StatusError::List {
        what: "pods",
        source,
    })?;
    Ok(Collected {
        client,
        found,
        judged,
        deployments,
        accounts,
        legacy,
        now,
        listed,
    })
}

/// Judges every pod of one list page's text as `collect` does, or, with
/// `fast` false, through a `serde_json::Value` per pod as `status` did
/// before; returns how many were judged. For the benchmark.
#[cfg(feature = "test-support")]
pub fn judge_page(config: &Config, page: &str, fast: bool) -> usize {
    let secrets = LegacySecrets::default();
    let known = Known::secrets(&secrets);
    let Ok((_, items)) = cluster::page_items(page) else {
        return 0;
    };
    let judged = |item: &&&str| {
        if fast {
            judge_pod_text(config, known, item).is_ok()
        } else {
            let mut pod: Value = serde_json::from_str(item).unwrap_or_default();
            pod["apiVersion"] = "v1".into();
            pod["kind"] = "Pod".into();
            crate::retirement::judge_pod(config, known, &pod).is_some()
        }
    };
    items.iter().filter(judged).count()
}

/// Runs `status` and returns its exit code.
pub async fn run(options: &Options) -> Result<u8, StatusError> {
    let collected = collect(options, options.output == Format::Table).await?;
    let signals = api_server_signals(&collected.client).await;
    let assessment = collected.evidence().assess();
    let (found, now, listed) = (&collected.found, collected.now, collected.listed);
    let report = output::Report {
        now,
        ledger: &options.ledger,
        found,
        assessment: &assessment,
        signals: &signals,
        listed,
    };
    let mut out = std::io::stdout().lock();
    match options.output {
        Format::Table => report.table(&mut out)?,
        Format::Json => report.json(&mut out)?,
    }
    let all_safe = assessment
        .verdicts
        .iter()
        .all(|v| matches!(v.verdict, Verdict::SafeNow));
    Ok(if all_safe { EXIT_SAFE } else { EXIT_NOT_YET })
}

/// The API server's own token counters, when the caller may read them
/// (`get` on the non-resource URL `/metrics`).
async fn api_server_signals(client: &kube::Client) -> signals::Signals {
    let request = match http::Request::get("/metrics").body(Vec::new()) {
        Ok(r) => r,
        Err(e) => return signals::Signals::unreadable(e.to_string()),
    };
    match client.request_text(request).await {
        Ok(text) => signals::Signals::parse(&text),
        Err(e) => signals::Signals::unreadable(format!(
            "{e} (reading them needs get on the non-resource URL /metrics)"
        )),
    }
}

/// What the ledger says now: the generation, the timeline and the rotation.
async fn read_timeline(
    client: &kube::Client,
    options: &Options,
) -> Result<crate::state::Discovered, StatusError> {
    let (ledger_ns, ledger_name) = cluster::split_pair(&options.ledger)
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

/// The legacy token Secrets in `scope`, by metadata only: the index the
/// rules ask, and each with the day it was last used.
async fn legacy_secrets(
    client: &kube::Client,
    scope: &str,
) -> Result<(LegacySecrets, BTreeMap<SecretKey, LegacyToken>), StatusError> {
    let mut secrets = LegacySecrets::default();
    let mut tokens = BTreeMap::new();
    let selector = crate::rules::legacy_token_selector()
        .replace('/', "%2F")
        .replace('=', "%3D");
    let path = format!("/api/v1{scope}/secrets?fieldSelector={selector}");
    cluster::list_pages(client, &path, true, |items| {
        for s in items {
            if let Some(token) = LegacyToken::of(&s["metadata"]) {
                secrets.insert(&token.namespace, &token.name);
                tokens.insert((token.namespace.clone(), token.name.clone()), token);
            }
        }
    })
    .await
    .map_err(|source| StatusError::List {
        what: "secrets",
        source,
    })?;
    Ok((secrets, tokens))
}

/// When each ServiceAccount in `scope` was created, by metadata only.
async fn service_accounts(client: &kube::Client, scope: &str) -> Result<Accounts, StatusError> {
    let mut accounts = Accounts::new();
    cluster::list_pages(
        client,
        &format!("/api/v1{scope}/serviceaccounts"),
        true,
        |items| {
            for a in items {
                let meta = &a["metadata"];
                let created = meta["creationTimestamp"]
                    .as_str()
                    .and_then(|t| t.parse().ok());
                if let (Some(ns), Some(name), Some(created)) =
                    (meta["namespace"].as_str(), meta["name"].as_str(), created)
                {
                    accounts.insert((ns.to_owned(), name.to_owned()), created);
                }
            }
        },
    )
    .await
    .map_err(|source| StatusError::List {
        what: "serviceaccounts",
        source,
    })?;
    Ok(accounts)
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
