//! The report: a table for a person, or JSON (`apiVersion:
//! issuer-guard.io/v1`, `kind: Status`; docs/status.md documents it) for a
//! script.

use std::{collections::BTreeMap, io::Write};

use jiff::Timestamp;
use serde_json::{Value, json};

use super::verdict::{JudgedPod, RetirementVerdict, Verdict};
use crate::state::Discovered;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

pub(super) struct Report<'a> {
    pub now: Timestamp,
    pub ledger: &'a str,
    pub found: &'a Discovered,
    pub pods: &'a [JudgedPod],
    pub verdicts: &'a [RetirementVerdict],
    pub listed: usize,
}

fn time(seconds: i64) -> String {
    Timestamp::from_second(seconds).map_or_else(|_| seconds.to_string(), |t| t.to_string())
}

impl Report<'_> {
    /// Pods per stamped generation; `unstamped` for pods older than the
    /// install or never reviewed.
    fn per_generation(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for p in self.pods {
            let key = p
                .facts
                .generation
                .map_or_else(|| "unstamped".to_owned(), |g| g.to_string());
            *counts.entry(key).or_insert(0) += 1;
        }
        counts
    }

    /// At-risk pods by rule, grouped by owner: (rule, [(owner, pods)]).
    fn at_risk(&self) -> BTreeMap<&'static str, BTreeMap<String, usize>> {
        let mut by_rule: BTreeMap<&'static str, BTreeMap<String, usize>> = BTreeMap::new();
        for p in self.pods {
            let owner = p.owner.as_ref().map_or_else(
                || format!("Pod {}/{}", p.facts.namespace, p.facts.name),
                |o| format!("{} {}/{}", o.kind, o.namespace, o.name),
            );
            let mut rules: Vec<&'static str> = p.findings.iter().map(|(r, _)| r.as_str()).collect();
            rules.dedup();
            for rule in rules {
                *by_rule
                    .entry(rule)
                    .or_default()
                    .entry(owner.clone())
                    .or_insert(0) += 1;
            }
        }
        by_rule
    }

    pub(super) fn json(&self, out: &mut impl Write) -> std::io::Result<()> {
        let g = &self.found.generation;
        let at_risk: Vec<Value> = self
            .at_risk()
            .into_iter()
            .map(|(rule, owners)| {
                let owners: Vec<Value> = owners
                    .into_iter()
                    .map(|(owner, pods)| json!({"owner": owner, "pods": pods}))
                    .collect();
                json!({"rule": rule, "owners": owners})
            })
            .collect();
        let value = json!({
            "apiVersion": "issuer-guard.io/v1",
            "kind": "Status",
            "now": self.now,
            "ledger": self.ledger,
            "generation": {"number": g.number, "issuer": g.issuer, "keyId": g.key_id},
            "switches": self.found.switches.iter().map(|s| json!({
                "generation": s.number, "issuer": s.issuer, "keyId": s.key_id,
                "started": time(s.started), "completed": s.completed.map(time),
            })).collect::<Vec<_>>(),
            "retirements": self.found.retirements.iter().map(|r| json!({
                "kind": r.kind, "name": r.name, "at": time(r.at), "source": r.source,
            })).collect::<Vec<_>>(),
            "pods": {"listed": self.listed, "perGeneration": self.per_generation()},
            "atRisk": at_risk,
            "verdicts": self.verdicts,
        });
        serde_json::to_writer_pretty(&mut *out, &value)?;
        writeln!(out)
    }

    pub(super) fn table(&self, out: &mut impl Write) -> std::io::Result<()> {
        let g = &self.found.generation;
        writeln!(
            out,
            "Generation in force: {} ({}, key {}); ledger {}; API server clock {}",
            g.number, g.issuer, g.key_id, self.ledger, self.now
        )?;
        writeln!(out, "\nTimeline:")?;
        for s in &self.found.switches {
            let completed = s.completed.map_or_else(
                || "not complete: some server does not sign with it".to_owned(),
                time,
            );
            writeln!(
                out,
                "  generation {}  {} key {}  started {}  completed {}",
                s.number,
                s.issuer,
                s.key_id,
                time(s.started),
                completed
            )?;
        }
        for r in &self.found.retirements {
            writeln!(
                out,
                "  retired {} {} at {} ({})",
                r.kind,
                r.name,
                time(r.at),
                r.source
            )?;
        }
        let counts: Vec<String> = self
            .per_generation()
            .into_iter()
            .map(|(g, n)| format!("{g}: {n}"))
            .collect();
        writeln!(
            out,
            "\nPods per generation ({} listed): {}",
            self.listed,
            counts.join(", ")
        )?;
        let at_risk = self.at_risk();
        if !at_risk.is_empty() {
            writeln!(out, "\nAt risk, by rule:")?;
            for (rule, owners) in at_risk {
                for (owner, pods) in owners {
                    writeln!(out, "  {rule:<28} {owner} ({pods} pods)")?;
                }
            }
        }
        self.verdicts_table(out)
    }

    fn verdicts_table(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out, "\nVerdicts:")?;
        if self.verdicts.is_empty() {
            writeln!(out, "  nothing retires")?;
        }
        for v in self.verdicts {
            let what = format!(
                "{} {}",
                serde_json::to_value(v.kind)
                    .ok()
                    .and_then(|k| k.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                v.name
            );
            if let Some((at, source)) = v.retired {
                writeln!(out, "  {what}: retired at {at} ({source})")?;
            }
            match &v.verdict {
                Verdict::SafeNow => writeln!(out, "  {what}: safe to retire now")?,
                Verdict::StillSigning => {
                    writeln!(out, "  {what}: not yet: an API server still signs with it")?;
                }
                Verdict::SafeAfter { at } => {
                    let left = at.duration_since(self.now);
                    writeln!(
                        out,
                        "  {what}: safe after {at} (in {}m)",
                        (left.as_secs() + 59) / 60
                    )?;
                }
                Verdict::BlockedBy { blockers } => {
                    let broken = if v.retired.is_some() {
                        "broken now"
                    } else {
                        "blocked by"
                    };
                    writeln!(out, "  {what}: {broken} {} owners", blockers.len())?;
                    for b in blockers {
                        writeln!(
                            out,
                            "    {} {}/{} ({} pods): {}; fix: {}",
                            b.kind,
                            b.namespace,
                            b.name,
                            b.pods.len(),
                            b.rules.join(", "),
                            b.remedy
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
}
