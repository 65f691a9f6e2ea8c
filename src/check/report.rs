//! `check`'s output: a table for people, JSON for scripts.

use std::fmt::Write;

use serde::Serialize;

use crate::{
    object::Kind,
    policy::{Action, Verdict},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Json,
}

/// One judged object.
#[derive(Debug)]
pub struct Judged {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub verdict: Verdict,
}

#[derive(Serialize)]
struct JsonObject<'a> {
    kind: &'static str,
    namespace: &'a str,
    name: &'a str,
    findings: Vec<JsonFinding>,
}

#[derive(Serialize)]
struct JsonFinding {
    rule: &'static str,
    action: &'static str,
    message: String,
}

pub fn render(format: OutputFormat, judged: &[Judged]) -> String {
    match format {
        OutputFormat::Json => json(judged),
        OutputFormat::Table => table(judged),
    }
}

fn json(judged: &[Judged]) -> String {
    let objects: Vec<JsonObject> = judged
        .iter()
        .map(|j| JsonObject {
            kind: j.kind.as_str(),
            namespace: &j.namespace,
            name: &j.name,
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
        })
        .collect();
    let mut out = serde_json::to_string_pretty(&objects).unwrap_or_else(|_| "[]".to_owned());
    out.push('\n');
    out
}

fn table(judged: &[Judged]) -> String {
    let mut rows: Vec<[String; 4]> = Vec::new();
    let mut counts = [0usize; 4];
    for j in judged {
        let object = format!("{}/{}/{}", j.kind.as_str(), j.namespace, j.name);
        for d in &j.verdict.decided {
            counts[d.action as usize] += 1;
            rows.push([
                d.action.as_str().to_owned(),
                object.clone(),
                d.finding.rule.as_str().to_owned(),
                d.finding.describe(),
            ]);
        }
        for (rule, hidden) in &j.verdict.opted_out {
            rows.push([
                "opt-out".to_owned(),
                object.clone(),
                rule.as_str().to_owned(),
                format!("opted out by annotation issuer-guard.io/ignore; {hidden} finding(s) not reported"),
            ]);
        }
    }
    let mut out = String::new();
    if !rows.is_empty() {
        let header = ["ACTION", "OBJECT", "RULE", "FINDING"].map(str::to_owned);
        let width = |c: usize| {
            rows.iter()
                .chain([&header])
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths = [width(0), width(1), width(2)];
        for row in std::iter::once(&header).chain(&rows) {
            let _ = writeln!(
                out,
                "{:w0$}  {:w1$}  {:w2$}  {}",
                row[0],
                row[1],
                row[2],
                row[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            );
        }
        out.push('\n');
    }
    let with_findings = judged
        .iter()
        .filter(|j| !j.verdict.decided.is_empty())
        .count();
    let _ = writeln!(
        out,
        "{} object(s) judged, {} with findings: {} deny, {} label, {} warn",
        judged.len(),
        with_findings,
        counts[Action::Deny as usize],
        counts[Action::Label as usize],
        counts[Action::Warn as usize],
    );
    out
}
