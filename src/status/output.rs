//! The report: a table for a person, or JSON (`apiVersion:
//! issuer-guard.io/v1`, `kind: Status`; docs/status.md documents it) for a
//! script.

use std::io::Write;

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::{
    retirement::{Assessment, Verdict},
    state::Discovered,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

pub(super) struct Report<'a> {
    pub now: Timestamp,
    pub ledger: &'a str,
    pub found: &'a Discovered,
    pub assessment: &'a Assessment,
    pub signals: &'a super::signals::Signals,
    pub listed: usize,
}

fn time(seconds: i64) -> String {
    Timestamp::from_second(seconds).map_or_else(|_| seconds.to_string(), |t| t.to_string())
}

impl Report<'_> {
    pub(super) fn json(&self, out: &mut impl Write) -> std::io::Result<()> {
        let g = &self.found.generation;
        let a = self.assessment;
        let at_risk: Vec<Value> = a
            .at_risk
            .iter()
            .map(|(rule, owners)| {
                let owners: Vec<Value> = owners
                    .iter()
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
            "pods": {"listed": self.listed, "perGeneration": a.per_generation},
            "atRisk": at_risk,
            "verdicts": a.verdicts,
            "serviceAccounts": a.accounts,
            "apiServerSignals": self.signals,
            "legacyTokens": a.legacy.iter().map(|(t, pods)| {
                let mut v = json!(t);
                v["mountedBy"] = json!(pods);
                v
            }).collect::<Vec<_>>(),
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
        let a = self.assessment;
        let counts: Vec<String> = a
            .per_generation
            .iter()
            .map(|(g, n)| format!("{g}: {n}"))
            .collect();
        writeln!(
            out,
            "\nPods per generation ({} listed): {}",
            self.listed,
            counts.join(", ")
        )?;
        if !a.at_risk.is_empty() {
            writeln!(out, "\nAt risk, by rule:")?;
            for (rule, owners) in &a.at_risk {
                for (owner, pods) in owners {
                    writeln!(out, "  {rule:<28} {owner} ({pods} pods)")?;
                }
            }
        }
        self.accounts_table(out)?;
        self.signals_table(out)?;
        self.legacy_table(out)?;
        self.verdicts_table(out)
    }

    fn accounts_table(&self, out: &mut impl Write) -> std::io::Result<()> {
        for account in &self.assessment.accounts {
            let what = match account.recreated {
                Some(at) => format!("recreated at {at}"),
                None => "deleted".to_owned(),
            };
            writeln!(
                out,
                "\nServiceAccount {}/{} {what}: its pods' tokens are refused",
                account.namespace, account.name
            )?;
            for pod in &account.pods {
                let when = match pod.heals {
                    Some(at) => format!("heals at {at}, when the kubelet refreshes"),
                    None if pod.broken_until_recreated => {
                        "holds a copy: broken until the pod is recreated".to_owned()
                    }
                    None => "broken until the ServiceAccount exists again".to_owned(),
                };
                writeln!(out, "  pod {}: {when}", pod.name)?;
            }
        }
        Ok(())
    }

    fn signals_table(&self, out: &mut impl Write) -> std::io::Result<()> {
        let s = self.signals;
        match (&s.unreadable, s.stale_tokens_total) {
            (Some(why), _) => writeln!(
                out,
                "\nThe API server's token counters: not readable: {why}"
            ),
            (None, Some(n)) if n > 0.0 => writeln!(
                out,
                "\nThe API server accepted {n} stale injected tokens since it started: some application read its token once and keeps it (it breaks at the retirement); the audit log's authentication.k8s.io/stale-token annotation names it"
            ),
            (None, Some(_)) => writeln!(
                out,
                "\nThe API server accepted no stale injected token since it started"
            ),
            (None, None) => Ok(()),
        }
    }

    fn legacy_table(&self, out: &mut impl Write) -> std::io::Result<()> {
        if self.assessment.legacy.is_empty() {
            return Ok(());
        }
        writeln!(
            out,
            "\nLegacy token Secrets (signed by a key of their day):"
        )?;
        for (t, pods) in &self.assessment.legacy {
            let used = match &t.last_used {
                Some(day) => format!("in use, last used {day}"),
                None => "idle, not used since tracking began".to_owned(),
            };
            writeln!(
                out,
                "  {}/{} ({}): {used}; mounted by {pods} pods",
                t.namespace, t.name, t.service_account
            )?;
        }
        Ok(())
    }

    fn verdicts_table(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out, "\nVerdicts:")?;
        if self.assessment.verdicts.is_empty() {
            writeln!(out, "  nothing retires")?;
        }
        for v in &self.assessment.verdicts {
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
