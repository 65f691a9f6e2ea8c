//! `issuer-guard check`: judges manifests offline with the webhook's rules
//! and decisions, so a CI pipeline sees what admission would do.

mod lines;
mod load;
mod report;
mod sarif;

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

pub use load::{Document, LoadError, Loaded, Unusable, load};
pub use report::{Judged, OutputFormat, Source};

use crate::{
    config::{Config, ConfigError},
    discovery::ledger,
    object::{Kind, ObjectView},
    policy,
    rules::{
        CredentialConfigs, LegacySecrets, SERVICE_ACCOUNT_NAME_ANNOTATION,
        SERVICE_ACCOUNT_TOKEN_TYPE,
    },
};

/// What to check, and how to report it.
#[derive(Debug, Clone)]
pub struct Options {
    /// Configuration file; the embedded default when `None`.
    pub config: Option<PathBuf>,
    pub output: OutputFormat,
    /// Namespace assumed for objects that name none.
    pub namespace: String,
    /// Manifest files or directories; `-` reads stdin.
    pub paths: Vec<PathBuf>,
    /// Unusable input found in a directory fails the run too.
    pub strict: bool,
    /// A saved copy of the generation ledger: judge against the discovered
    /// generation and rotation, combined with the configuration.
    pub snapshot: Option<PathBuf>,
    /// Discovery's window, to read the snapshot as the webhook reads it.
    pub window: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "cannot use the ledger snapshot {path}: {message}; save it with `kubectl get configmap issuer-guard-ledger -n <namespace> -o yaml > {path}`"
    )]
    Snapshot { path: PathBuf, message: String },
}

/// Exit codes: a finding would be denied.
pub const EXIT_DENY: u8 = 1;
/// Exit codes: the input or config could not be used.
pub const EXIT_UNUSABLE: u8 = 2;

/// Runs the command, printing to stdout; returns the process exit code.
/// Unusable input is reported and the rest judged; it fails the run (exit
/// 2) when it was named on the command line, or with `--strict`.
pub fn run(args: &Options) -> Result<u8, CheckError> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?.config,
        None => Config::embedded_default(),
    };
    if let Some(path) = &args.snapshot {
        let snapshot = |message: String| CheckError::Snapshot {
            path: path.clone(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| snapshot(e.to_string()))?;
        let ledger = ledger::from_snapshot(&text).map_err(snapshot)?;
        let timing = ledger::Timing {
            window: args.window,
        };
        let found = ledger
            .conclude(timing)
            .ok_or_else(|| snapshot("the ledger has no generation yet".to_owned()))?;
        config = config.with_discovered(&found);
        let (g, r) = (&config.generation, &config.rotation);
        eprintln!(
            "judging against generation {} (issuer {}, key {:?}) from the snapshot; retiring issuers {:?}, keys {:?}",
            g.number, g.issuer, g.key_id, r.retiring_issuers, r.retiring_key_ids
        );
    }
    let Loaded {
        docs, mut unusable, ..
    } = load(&args.paths);
    let judged = judge_documents(&config, &docs, &args.namespace, &mut unusable);
    print!("{}", report::render(args.output, &judged, &unusable));
    if args.output == OutputFormat::Json {
        eprint!("{}", report::unusable_lines(&unusable));
    }
    Ok(if unusable.iter().any(|u| u.explicit || args.strict) {
        EXIT_UNUSABLE
    } else if judged.iter().any(|j| j.verdict.is_denied()) {
        EXIT_DENY
    } else {
        0
    })
}

/// Judges every object of a judged kind, knowing the input's own Secrets.
/// An object of a judged kind that cannot be read is added to `unusable`.
pub fn judge_documents(
    config: &Config,
    docs: &[Document],
    default_namespace: &str,
    unusable: &mut Vec<Unusable>,
) -> Vec<Judged> {
    let secrets = legacy_secrets(docs, default_namespace);
    let credentials = credential_configs(docs, default_namespace);
    let mut judged = Vec::new();
    for doc in docs {
        let api_version = doc
            .value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind_name = doc
            .value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(kind) = Kind::from_api_version(api_version, kind_name) else {
            continue;
        };
        let obj = match <ObjectView as Deserialize>::deserialize(&doc.value) {
            Ok(obj) => obj,
            Err(e) => {
                unusable.push(Unusable {
                    error: LoadError::Parse {
                        source_name: doc.source_name.clone(),
                        document: doc.document,
                        message: format!("not a readable {kind_name}: {e}"),
                    },
                    explicit: doc.explicit,
                });
                continue;
            }
        };
        let namespace = obj.namespace_or(default_namespace);
        let verdict = policy::assess(
            &config.policy,
            &config.context_with(&secrets, &credentials),
            policy::Subject {
                kind,
                namespace,
                obj: &obj,
                old: None,
                origin: policy::Origin::of(&obj),
            },
        );
        judged.push(Judged {
            kind,
            namespace: namespace.to_owned(),
            name: obj.meta().display_name(),
            source: report::Source {
                file: doc.source_name.clone(),
                document: doc.document,
                text: doc.text.clone(),
                first_line: doc.first_line,
                prefix: doc.prefix.clone(),
            },
            verdict,
        });
    }
    judged
}

/// Cloud credential configurations in the input's ConfigMaps.
fn credential_configs(docs: &[Document], default_namespace: &str) -> CredentialConfigs {
    let mut configs = CredentialConfigs::default();
    for v in docs.iter().map(|d| &d.value) {
        if v.get("kind").and_then(Value::as_str) != Some("ConfigMap") {
            continue;
        }
        let meta = v.get("metadata");
        let str_at = |key| meta.and_then(|m| m.get(key)).and_then(Value::as_str);
        let Some(name) = str_at("name") else { continue };
        let namespace = str_at("namespace").unwrap_or(default_namespace);
        for (key, value) in v
            .get("data")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if let Some(text) = value.as_str() {
                configs.insert(namespace, name, key, text);
            }
        }
    }
    configs
}

/// Secrets in the input that are legacy tokens, by type or by annotation.
fn legacy_secrets(docs: &[Document], default_namespace: &str) -> LegacySecrets {
    let mut secrets = LegacySecrets::default();
    for doc in docs {
        let v = &doc.value;
        if v.get("kind").and_then(Value::as_str) != Some("Secret") {
            continue;
        }
        let meta = v.get("metadata");
        let str_at = |key| meta.and_then(|m| m.get(key)).and_then(Value::as_str);
        let typed = v.get("type").and_then(Value::as_str) == Some(SERVICE_ACCOUNT_TOKEN_TYPE);
        let annotated = meta
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get(SERVICE_ACCOUNT_NAME_ANNOTATION))
            .is_some();
        if let Some(name) = str_at("name")
            && (typed || annotated)
        {
            secrets.insert(str_at("namespace").unwrap_or(default_namespace), name);
        }
    }
    secrets
}
