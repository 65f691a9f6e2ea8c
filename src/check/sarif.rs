//! `check -o sarif`: SARIF 2.1.0, the format code-scanning services read,
//! so that findings show up on the lines of a pull request. Each result
//! points at the file and line of the offending field; unusable inputs are
//! reported as notifications of the run.

use std::io::{self, Write};

use serde_json::{Value, json};

use super::{Document, Judged, Unusable, lines::Lines, report::Report};
use crate::{policy::Action, rules::RuleId};

const SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

/// The results so far; the log is written whole at the end, so it holds
/// what the findings need and nothing of the objects without any.
#[derive(Default)]
pub(crate) struct Sarif {
    results: Vec<Value>,
    /// The lines of the document last read: a `List`'s objects share one
    /// document, whose lines are read once however many findings it has.
    lines: Option<((String, usize), Option<Lines>)>,
}

impl Report for Sarif {
    fn object(&mut self, _: &mut dyn Write, j: &Judged, doc: &Document<'_>) -> io::Result<()> {
        if j.verdict.decided.is_empty() {
            return Ok(());
        }
        let same = |(file, document): &(String, usize)| {
            file == doc.source_name && *document == doc.document
        };
        if !self.lines.as_ref().is_some_and(|(at, _)| same(at)) {
            let at = (doc.source_name.to_owned(), doc.document);
            self.lines = Some((at, Lines::read(doc.text)));
        }
        let doc_lines = self.lines.as_ref().and_then(|(_, l)| l.as_ref());
        for d in &j.verdict.decided {
            let path = if doc.prefix.is_empty() {
                d.finding.path.clone()
            } else {
                format!("{}.{}", doc.prefix, d.finding.path)
            };
            let within = doc_lines.and_then(|l| l.line_of(&path)).unwrap_or(1);
            let line = u64::try_from(doc.first_line)
                .unwrap_or(1)
                .saturating_add(within - 1)
                .max(1);
            self.results.push(json!({
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
                        "artifactLocation": {"uri": uri(doc.source_name)},
                        "region": {"startLine": line},
                    },
                    "logicalLocations": [{
                        "fullyQualifiedName": format!("{}/{}/{}", j.kind.as_str(), j.namespace, j.name),
                        "kind": "object",
                    }],
                }],
                "properties": {"action": d.action.as_str(), "document": doc.document},
            }));
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn Write, unusable: &[Unusable]) -> io::Result<()> {
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
                "results": std::mem::take(&mut self.results),
            }],
        });
        serde_json::to_writer_pretty(&mut *out, &sarif).map_err(io::Error::other)?;
        out.write_all(b"\n")
    }
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
