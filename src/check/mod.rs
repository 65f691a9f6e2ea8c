//! `issuer-guard check`: judges manifests offline with the webhook's rules
//! and decisions, so a CI pipeline sees what admission would do.

mod errors;
mod inputs;
mod lines;
mod load;
mod read;
mod report;
mod sarif;

use std::{
    io::{BufWriter, Write},
    path::PathBuf,
};

use serde_json::Value;

pub use errors::{LoadError, Skipped, Unusable};
pub use inputs::Symlinks;
pub use load::Document;
pub use read::{DEFAULT_DOCUMENT_LIMIT, DEFAULT_FILE_LIMIT, Limits};
pub use report::{Judged, OutputFormat, Source};

use crate::state::ledger;
use crate::{
    config::{Config, ConfigError},
    judge,
    rules::{CredentialConfigs, LegacySecrets, is_legacy_token_secret},
};
use inputs::Entry;
use load::Sink;

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
    /// Where symlinks may lead.
    pub symlinks: Symlinks,
    /// How much is read of one document and one file.
    pub limits: Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "cannot use the ledger snapshot {path}: {message}; save it with `kubectl get configmap issuer-guard-ledger -n <namespace> -o yaml > {path}`"
    )]
    Snapshot { path: PathBuf, message: String },
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
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
        let ledger = ledger_snapshot(&text).map_err(snapshot)?;
        let window = ledger::Window(args.window);
        let found = ledger
            .conclude(window)
            .ok_or_else(|| snapshot("the ledger has no generation yet".to_owned()))?;
        config = config.with_discovered(&found);
        let (g, r) = (&config.generation, &config.rotation);
        eprintln!(
            "judging against generation {} (issuer {}, key {:?}) from the snapshot; retiring issuers {:?}, keys {:?}",
            g.number, g.issuer, g.key_id, r.retiring_issuers, r.retiring_key_ids
        );
    }
    let inputs = inputs::collect(&args.paths, args.symlinks);
    // Standard input cannot be read twice: it is kept, within the file limit.
    let stdin = inputs
        .entries
        .iter()
        .any(|e| matches!(e, Entry::Stdin))
        .then(|| read::stdin(args.limits));
    let known = context(&inputs.entries, stdin.as_ref(), args);

    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut report: Box<dyn report::Report> = match args.output {
        OutputFormat::Json => Box::new(report::Json::default()),
        OutputFormat::Table => Box::new(report::Table::default()),
        OutputFormat::Sarif => Box::new(sarif::Sarif::default()),
    };
    let mut unusable = Vec::new();
    let mut denied = false;
    let mut written = Ok(());
    let mut stdin = stdin;
    for entry in inputs.entries {
        let (name, explicit, text) = match entry {
            Entry::Skipped(u) => {
                unusable.push(u);
                continue;
            }
            Entry::Stdin => match stdin.take() {
                Some(text) => ("<stdin>".to_owned(), true, text),
                // `-` named twice: standard input was read once.
                None => continue,
            },
            Entry::File(input) => {
                let text = read::file(&input.name, &input.open, args.limits);
                (input.name, input.explicit, text)
            }
        };
        let text = match text {
            Ok(text) => text,
            Err(error) => {
                unusable.push(Unusable { error, explicit });
                continue;
            }
        };
        let mut judged_unusable = Vec::new();
        load::parse(
            &name,
            &text,
            explicit,
            args.limits,
            &mut Sink {
                wanted: &|_| true,
                object: &mut |doc| {
                    let Some(judged) = judge(&config, &known, &doc, &args.namespace)? else {
                        return Ok(());
                    };
                    denied |= judged.verdict.is_denied();
                    if written.is_ok() {
                        written = report.object(&mut out, &judged, &doc);
                    }
                    Ok(())
                },
                unusable: &mut |u| judged_unusable.push(u),
            },
        );
        unusable.append(&mut judged_unusable);
    }
    written?;
    report.finish(&mut out, &unusable)?;
    out.flush()?;
    // Scripts read the JSON; a person watching the job reads stderr.
    if args.output == OutputFormat::Json {
        eprint!("{}", report::unusable_lines(&unusable));
    }
    Ok(if unusable.iter().any(|u| u.explicit || args.strict) {
        EXIT_UNUSABLE
    } else if denied {
        EXIT_DENY
    } else {
        0
    })
}

/// A saved ledger: the ConfigMap as `kubectl get -o yaml` (or `-o json`)
/// writes it, or the JSON of its `ledger.json` key alone.
fn ledger_snapshot(text: &str) -> Result<ledger::Ledger, String> {
    let value: Value = crate::yaml::from_str(text).map_err(|e| e.to_string())?;
    if value.get("kind").and_then(Value::as_str) == Some("ConfigMap") {
        let data = value.get("data");
        return ledger::from_data(|key| data?.get(key)?.as_str())
            .map_err(|e| format!("the ConfigMap: {e}"));
    }
    ledger::from_json(&value.to_string())
}

/// What judging needs to know of the whole input: its legacy token Secrets
/// and cloud credential configurations. A first pass parses only the
/// documents that could be one of those; what it cannot read the second
/// pass reports.
struct Known {
    secrets: LegacySecrets,
    credentials: CredentialConfigs,
}

fn context(entries: &[Entry], stdin: Option<&Result<String, LoadError>>, args: &Options) -> Known {
    let mut known = Known {
        secrets: LegacySecrets::default(),
        credentials: CredentialConfigs::default(),
    };
    // A kind spelled with escapes (`"\u0053ecret"`) must not hide a Secret.
    let wanted =
        |text: &str| text.contains("Secret") || text.contains("ConfigMap") || text.contains('\\');
    for entry in entries {
        let (name, explicit, owned);
        let text = match entry {
            Entry::Skipped(_) => continue,
            Entry::Stdin => match stdin {
                Some(Ok(text)) => {
                    (name, explicit) = ("<stdin>", true);
                    text.as_str()
                }
                _ => continue,
            },
            Entry::File(input) => match read::file(&input.name, &input.open, args.limits) {
                Ok(text) => {
                    (name, explicit, owned) = (input.name.as_str(), input.explicit, text);
                    owned.as_str()
                }
                Err(_) => continue,
            },
        };
        load::parse(
            name,
            text,
            explicit,
            args.limits,
            &mut Sink {
                wanted: &wanted,
                object: &mut |doc| {
                    remember(&mut known, &doc.value, &args.namespace);
                    Ok(())
                },
                unusable: &mut |_| {},
            },
        );
    }
    known
}

/// Judges one object of a judged kind against the configuration and what
/// the input holds; `None` for objects of other kinds.
fn judge(
    config: &Config,
    known: &Known,
    doc: &Document<'_>,
    default_namespace: &str,
) -> Result<Option<Judged>, LoadError> {
    let known = judge::Known {
        secrets: &known.secrets,
        credentials: &known.credentials,
    };
    let judged = judge::value(config, known, &doc.value, default_namespace).map_err(|message| {
        LoadError::Parse {
            source_name: doc.source_name.to_owned(),
            document: doc.document,
            message,
        }
    })?;
    Ok(judged.map(|j| Judged {
        kind: j.kind,
        namespace: j.namespace,
        name: j.name,
        source: Source::File {
            file: doc.source_name.to_owned(),
            document: doc.document,
        },
        verdict: j.verdict,
    }))
}

/// Keeps what judging needs of a Secret or ConfigMap.
fn remember(known: &mut Known, v: &Value, default_namespace: &str) {
    let kind = v.get("kind").and_then(Value::as_str);
    if kind != Some("Secret") && kind != Some("ConfigMap") {
        return;
    }
    let meta = v.get("metadata");
    let str_at = |key| meta.and_then(|m| m.get(key)).and_then(Value::as_str);
    let Some(name) = str_at("name") else { return };
    let namespace = str_at("namespace").unwrap_or(default_namespace);
    if kind == Some("Secret") {
        if is_legacy_token_secret(v.get("type").and_then(Value::as_str)) {
            known.secrets.insert(namespace, name);
        }
        return;
    }
    for (key, value) in v
        .get("data")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if let Some(text) = value.as_str() {
            known.credentials.insert(namespace, name, key, text);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rules::SecretIndex;

    #[test]
    fn only_secrets_of_the_token_type_are_legacy_tokens() {
        let mut known = Known {
            secrets: LegacySecrets::default(),
            credentials: CredentialConfigs::default(),
        };
        let annotation = json!({"kubernetes.io/service-account.name": "bot"});
        remember(
            &mut known,
            &json!({"kind": "Secret", "type": "kubernetes.io/service-account-token",
                "metadata": {"name": "typed", "annotations": annotation}}),
            "ci",
        );
        remember(
            &mut known,
            &json!({"kind": "Secret", "type": "Opaque",
                "metadata": {"name": "annotated", "annotations": annotation}}),
            "ci",
        );
        assert!(known.secrets.is_legacy_token("ci", "typed"));
        assert!(!known.secrets.is_legacy_token("ci", "annotated"));
    }
}
