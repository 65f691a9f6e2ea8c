//! `check -o sarif`: SARIF 2.1.0, the format code-scanning services read,
//! so that findings show up on the lines of a pull request. Each result
//! points at the file and line of the offending field; unusable inputs are
//! reported as notifications of the run.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{Judged, Unusable, lines::Lines};
use crate::{policy::Action, rules::RuleId};

const SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

pub fn render(judged: &[Judged], unusable: &[Unusable]) -> String {
    let rules: Vec<Value> = RuleId::ALL
        .iter()
        .map(|r| {
            json!({
                "id": r.as_str(),
                "name": r.as_str(),
                "shortDescription": {"text": describe(*r)},
            })
        })
        .collect();
    // Each document's lines are read once, however many findings it has.
    let mut lines: HashMap<*const u8, Option<Lines>> = HashMap::new();
    let mut results = Vec::new();
    for j in judged {
        let src = &j.source;
        for d in &j.verdict.decided {
            let doc_lines = lines
                .entry(src.text.as_ptr())
                .or_insert_with(|| Lines::read(&src.text));
            let path = if src.prefix.is_empty() {
                d.finding.path.clone()
            } else {
                format!("{}.{}", src.prefix, d.finding.path)
            };
            let within = doc_lines
                .as_ref()
                .and_then(|l| l.line_of(&path))
                .unwrap_or(1);
            let line = u64::try_from(src.first_line)
                .unwrap_or(1)
                .saturating_add(within - 1)
                .max(1);
            results.push(json!({
                "ruleId": d.finding.rule.as_str(),
                "ruleIndex": d.finding.rule.index(),
                "level": match d.action {
                    Action::Deny => "error",
                    _ => "warning",
                },
                "message": {"text": format!(
                    "{}/{}/{}: {}",
                    j.kind.as_str(), j.namespace, j.name, d.finding.describe()
                )},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": uri(&src.file)},
                        "region": {"startLine": line},
                    },
                    "logicalLocations": [{
                        "fullyQualifiedName": format!("{}/{}/{}", j.kind.as_str(), j.namespace, j.name),
                        "kind": "object",
                    }],
                }],
                "properties": {"action": d.action.as_str(), "document": src.document},
            }));
        }
    }
    let notifications: Vec<Value> = unusable
        .iter()
        .map(|u| {
            json!({
                "level": if u.explicit { "error" } else { "warning" },
                "message": {"text": u.error.to_string()},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": uri(u.error.source_name())}}}],
            })
        })
        .collect();
    let sarif = json!({
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "issuer-guard",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "invocations": [{
                "executionSuccessful": true,
                "toolExecutionNotifications": notifications,
            }],
            "results": results,
        }],
    });
    let mut out = serde_json::to_string_pretty(&sarif).unwrap_or_default();
    out.push('\n');
    out
}

/// A relative URI for a path as given (code scanning resolves it against
/// the repository root); stdin has none of its own.
fn uri(file: &str) -> String {
    let file = file.strip_prefix("./").unwrap_or(file);
    if file == "<stdin>" {
        return "stdin".to_owned();
    }
    file.split('/')
        .map(|seg| {
            seg.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn describe(rule: RuleId) -> &'static str {
    match rule {
        RuleId::LegacyTokenEnv => "A legacy token Secret read into an environment variable",
        RuleId::LegacyTokenVolume => "A legacy token Secret mounted as a volume",
        RuleId::TokenSubpath => {
            "A service-account token mounted by subPath, or copied into another volume"
        }
        RuleId::RefreshExceedsGrace => {
            "A projected token refreshed more slowly than the rotation's grace"
        }
        RuleId::AudienceRetiringIssuer => "A projected token whose audience is a retiring issuer",
        RuleId::FederatedAudienceUntrusted => {
            "A projected token for a federated party that may not trust the new issuer or key"
        }
    }
}
