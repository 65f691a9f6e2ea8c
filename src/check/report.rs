//! `check`'s output: a table for people, JSON for scripts.

use std::fmt::Write;

use serde::Serialize;

use super::Unusable;
use crate::{
    object::Kind,
    policy::{Action, Verdict},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Json,
    Sarif,
}

/// Where an object was read: its file (or `<stdin>`) and the 1-based
/// document in it; and, for reports that point at lines, the document's
/// text, its first line in the file and the object's path within it.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    pub file: String,
    pub document: usize,
    #[serde(skip)]
    pub text: std::sync::Arc<str>,
    #[serde(skip)]
    pub first_line: usize,
    #[serde(skip)]
    pub prefix: String,
}

/// One judged object.
#[derive(Debug)]
pub struct Judged {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub source: Source,
    pub verdict: Verdict,
}

#[derive(Serialize)]
struct JsonObject<'a> {
    kind: &'static str,
    namespace: &'a str,
    name: &'a str,
    source: &'a Source,
    /// In an exempt namespace: not judged.
    exempt: bool,
    findings: Vec<JsonFinding>,
    opted_out: Vec<JsonOptOut>,
    unknown_opt_outs: &'a [String],
}

#[derive(Serialize)]
struct JsonFinding {
    rule: &'static str,
    action: &'static str,
    message: String,
}

#[derive(Serialize)]
struct JsonOptOut {
    rule: &'static str,
    hidden_findings: usize,
}

/// The report for stdout. With JSON, unusable input goes to stderr (see
/// [`unusable_lines`]) so that stdout stays one array of objects.
pub fn render(format: OutputFormat, judged: &[Judged], unusable: &[Unusable]) -> String {
    match format {
        OutputFormat::Json => json(judged),
        OutputFormat::Table => table(judged, unusable),
        OutputFormat::Sarif => super::sarif::render(judged, unusable),
    }
}

/// One entry per unusable input, its error indented under it.
pub fn unusable_lines(unusable: &[Unusable]) -> String {
    let mut out = String::new();
    for u in unusable {
        let text = u.error.to_string();
        let mut lines = text.lines();
        let _ = writeln!(out, "unusable: {}", lines.next().unwrap_or_default());
        for line in lines {
            let _ = writeln!(out, "    {line}");
        }
    }
    out
}

fn json(judged: &[Judged]) -> String {
    let objects: Vec<JsonObject> = judged
        .iter()
        .map(|j| JsonObject {
            kind: j.kind.as_str(),
            namespace: &j.namespace,
            name: &j.name,
            source: &j.source,
            exempt: j.verdict.exempt,
            findings: j
                .verdict
                .decided
                .iter()
                .map(|d| JsonFinding {
                    rule: d.finding.rule.as_str(),
                    action: d.action.as_str(),
                    message: d.finding.describe(),
                })
                .collect(),
            opted_out: j
                .verdict
                .opted_out
                .iter()
                .map(|(rule, hidden)| JsonOptOut {
                    rule: rule.as_str(),
                    hidden_findings: *hidden,
                })
                .collect(),
            unknown_opt_outs: &j.verdict.unknown_opt_outs,
        })
        .collect();
    let mut out = serde_json::to_string_pretty(&objects).unwrap_or_else(|_| "[]".to_owned());
    out.push('\n');
    out
}

/// Explanations wrap at this width, under their finding's line.
const WRAP: usize = 96;
const INDENT: &str = "    ";

fn wrapped(out: &mut String, text: &str) {
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && INDENT.len() + line.len() + 1 + word.len() > WRAP {
            let _ = writeln!(out, "{INDENT}{line}");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        let _ = writeln!(out, "{INDENT}{line}");
    }
}

/// One line per finding (action, rule, object and where it was read), its
/// explanation and fix wrapped beneath, so that it fits a terminal.
fn table(judged: &[Judged], unusable: &[Unusable]) -> String {
    let mut out = String::new();
    let mut counts = [0usize; 4];
    for j in judged {
        let object = format!(
            "{}/{}/{} ({}, document {})",
            j.kind.as_str(),
            j.namespace,
            j.name,
            j.source.file,
            j.source.document
        );
        if j.verdict.exempt {
            let _ = writeln!(out, "{:<7} {object}", "exempt");
            wrapped(
                &mut out,
                &format!(
                    "namespace \"{}\" is in exemptNamespaces: not judged",
                    j.namespace
                ),
            );
        }
        for d in &j.verdict.decided {
            counts[d.action as usize] += 1;
            let _ = writeln!(
                out,
                "{:<7} {:<28} {object}",
                d.action.as_str(),
                d.finding.rule.as_str()
            );
            wrapped(&mut out, &d.finding.describe());
        }
        for (rule, hidden) in &j.verdict.opted_out {
            let _ = writeln!(out, "{:<7} {:<28} {object}", "opt-out", rule.as_str());
            wrapped(
                &mut out,
                &format!(
                    "opted out by annotation issuer-guard.io/ignore; {hidden} finding(s) not reported"
                ),
            );
        }
        for entry in &j.verdict.unknown_opt_outs {
            let _ = writeln!(out, "{:<7} {:<28} {object}", "warn", "unknown-opt-out");
            wrapped(
                &mut out,
                &format!(
                    "issuer-guard.io/ignore names \"{entry}\", which is no rule: nothing is opted out by it"
                ),
            );
        }
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(&unusable_lines(unusable));
    if !unusable.is_empty() {
        out.push('\n');
    }
    let exempt = judged.iter().filter(|j| j.verdict.exempt).count();
    let with_findings = judged
        .iter()
        .filter(|j| !j.verdict.decided.is_empty())
        .count();
    let _ = writeln!(
        out,
        "{} object(s) judged, {exempt} exempt, {with_findings} with findings: {} deny, {} label, {} warn; {} unusable input(s)",
        judged.len() - exempt,
        counts[Action::Deny as usize],
        counts[Action::Label as usize],
        counts[Action::Warn as usize],
        unusable.len(),
    );
    out
}
