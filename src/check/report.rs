//! `check`'s output: a table for people, JSON for scripts.

use std::{
    fmt::Write as _,
    io::{self, Write},
};

use serde::Serialize;

use super::{Document, Unusable};
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

/// Where an object was read. Serialized without a tag, so a file reads
/// `{"file", "document"}` and a live object `{"object", "owner"}`.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Source {
    /// A file (or `<stdin>`) and the 1-based document in it.
    File { file: String, document: usize },
    /// An object read from the API server, as `namespace/name`, with its
    /// controlling owner (`Kind/name`) when a controller made it.
    Live {
        object: String,
        owner: Option<String>,
    },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File { file, document } => write!(f, "{file}, document {document}"),
            Source::Live {
                object,
                owner: Some(owner),
            } => write!(f, "{object}, owned by {owner}"),
            Source::Live {
                object,
                owner: None,
            } => f.write_str(object),
        }
    }
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

/// The report, written as objects are judged: nothing of an object is kept
/// once it is written, but for the counts and, for SARIF, its findings.
pub(crate) trait Report {
    fn object(
        &mut self,
        out: &mut dyn Write,
        judged: &Judged,
        doc: &Document<'_>,
    ) -> io::Result<()>;
    /// The end of the report, with what could not be used.
    fn finish(&mut self, out: &mut dyn Write, unusable: &[Unusable]) -> io::Result<()>;
}

/// One entry per unusable input, its error indented under it.
pub(super) fn unusable_lines(unusable: &[Unusable]) -> String {
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

#[derive(Default)]
pub(crate) struct Json {
    written: usize,
}

/// An unusable input in the JSON report.
#[derive(Serialize)]
struct JsonUnusable<'a> {
    file: &'a str,
    /// The document, when one document of the file was the problem.
    document: Option<usize>,
    error: String,
    /// Named on the command line: its loss fails the run.
    explicit: bool,
}

impl Report for Json {
    fn object(&mut self, out: &mut dyn Write, j: &Judged, _: &Document<'_>) -> io::Result<()> {
        let object = JsonObject {
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
        };
        let text = serde_json::to_string_pretty(&object).map_err(io::Error::other)?;
        out.write_all(if self.written == 0 {
            b"{\n  \"objects\": [\n"
        } else {
            b",\n"
        })?;
        indented(out, &text, "    ", "    ")?;
        self.written += 1;
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn Write, unusable: &[Unusable]) -> io::Result<()> {
        out.write_all(if self.written == 0 {
            b"{\n  \"objects\": []"
        } else {
            b"\n  ]"
        })?;
        let unusable: Vec<JsonUnusable> = unusable
            .iter()
            .map(|u| JsonUnusable {
                file: u.error.source_name(),
                document: u.error.document(),
                error: u.error.to_string(),
                explicit: u.explicit,
            })
            .collect();
        let text = serde_json::to_string_pretty(&unusable).map_err(io::Error::other)?;
        out.write_all(b",\n  \"unusable\": ")?;
        indented(out, &text, "", "  ")?;
        out.write_all(b"\n}\n")
    }
}

/// Writes pretty JSON one level in: the first line after `first`, the
/// others after `rest`.
fn indented(out: &mut dyn Write, text: &str, first: &str, rest: &str) -> io::Result<()> {
    for (i, line) in text.lines().enumerate() {
        let indent = if i == 0 { first } else { rest };
        let newline = if i == 0 { "" } else { "\n" };
        write!(out, "{newline}{indent}{line}")?;
    }
    Ok(())
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
#[derive(Default)]
pub(crate) struct Table {
    counts: [usize; 4],
    judged: usize,
    exempt: usize,
    with_findings: usize,
    /// Whether any object had a line: a blank line then ends the list.
    listed: bool,
}

impl Report for Table {
    fn object(&mut self, out: &mut dyn Write, j: &Judged, _: &Document<'_>) -> io::Result<()> {
        let mut text = String::new();
        let object = format!(
            "{}/{}/{} ({})",
            j.kind.as_str(),
            j.namespace,
            j.name,
            j.source
        );
        self.judged += 1;
        if j.verdict.exempt {
            self.exempt += 1;
            let _ = writeln!(text, "{:<7} {object}", "exempt");
            wrapped(
                &mut text,
                &format!(
                    "namespace \"{}\" is in exemptNamespaces: not judged",
                    j.namespace
                ),
            );
        }
        if !j.verdict.decided.is_empty() {
            self.with_findings += 1;
        }
        for d in &j.verdict.decided {
            self.counts[d.action as usize] += 1;
            let _ = writeln!(
                text,
                "{:<7} {:<28} {object}",
                d.action.as_str(),
                d.finding.rule.as_str()
            );
            wrapped(&mut text, &d.finding.describe());
        }
        for (rule, hidden) in &j.verdict.opted_out {
            let _ = writeln!(text, "{:<7} {:<28} {object}", "opt-out", rule.as_str());
            wrapped(
                &mut text,
                &format!(
                    "opted out by annotation issuer-guard.io/ignore; {hidden} finding(s) not reported"
                ),
            );
        }
        for entry in &j.verdict.unknown_opt_outs {
            let _ = writeln!(text, "{:<7} {:<28} {object}", "warn", "unknown-opt-out");
            wrapped(
                &mut text,
                &format!(
                    "issuer-guard.io/ignore names \"{entry}\", which is no rule: nothing is opted out by it"
                ),
            );
        }
        self.listed |= !text.is_empty();
        out.write_all(text.as_bytes())
    }

    fn finish(&mut self, out: &mut dyn Write, unusable: &[Unusable]) -> io::Result<()> {
        let mut text = String::new();
        if self.listed {
            text.push('\n');
        }
        text.push_str(&unusable_lines(unusable));
        if !unusable.is_empty() {
            text.push('\n');
        }
        let _ = writeln!(
            text,
            "{} object(s) judged, {} exempt, {} with findings: {} deny, {} label, {} warn; {} unusable input(s)",
            self.judged - self.exempt,
            self.exempt,
            self.with_findings,
            self.counts[Action::Deny as usize],
            self.counts[Action::Label as usize],
            self.counts[Action::Warn as usize],
            unusable.len(),
        );
        out.write_all(text.as_bytes())
    }
}
