//! A judged object's verdict: what each finding does, and how that is told
//! to the API client (warnings, the denial) and marked on the object.

use std::fmt::Write;

use super::{Action, Decided, IGNORE_ANNOTATION, Verdict};
use crate::rules::{MAX_WARNING_CHARS, RuleId, truncate_chars};

impl Verdict {
    pub fn denied(&self) -> impl Iterator<Item = &Decided> {
        self.decided.iter().filter(|d| d.action == Action::Deny)
    }

    pub fn is_denied(&self) -> bool {
        self.denied().next().is_some()
    }

    /// Rule ids that mark the object at risk, sorted and without repeats.
    pub fn at_risk_rules(&self) -> Vec<RuleId> {
        let mut rules: Vec<RuleId> = self
            .decided
            .iter()
            .filter(|d| d.action >= Action::Label)
            .map(|d| d.finding.rule)
            .collect();
        rules.sort_unstable();
        rules.dedup();
        rules
    }

    /// The value of the `issuer-guard.io/risks` annotation.
    pub fn risks_value(&self) -> Option<String> {
        let rules = self.at_risk_rules();
        (!rules.is_empty()).then(|| {
            rules
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
    }

    /// A controller-made object with findings that mark it at risk.
    pub fn controller_at_risk(&self) -> bool {
        self.made_by.is_some() && !self.at_risk_rules().is_empty()
    }

    /// Warning lines for the API client: non-denied findings and opt-outs.
    /// None for a controller-made object: no person reads a controller's
    /// warnings, and the marks already say it all.
    pub fn warnings(&self) -> Vec<String> {
        if self.made_by.is_some() {
            return Vec::new();
        }
        let mut out: Vec<String> = self
            .decided
            .iter()
            .filter(|d| matches!(d.action, Action::Warn | Action::Label))
            .map(|d| d.finding.warning())
            .collect();
        if !self.opted_out.is_empty() {
            let mut line = format!("issuer-guard: {IGNORE_ANNOTATION} opts out of");
            for (i, (rule, hidden)) in self.opted_out.iter().enumerate() {
                let sep = if i == 0 { " " } else { ", " };
                let _ = write!(line, "{sep}{rule} ({hidden} hidden)");
            }
            out.push(truncate_chars(line, MAX_WARNING_CHARS));
        }
        if !self.unknown_opt_outs.is_empty() {
            out.push(truncate_chars(
                format!(
                    "issuer-guard: {IGNORE_ANNOTATION} names unknown rules: {}",
                    self.unknown_opt_outs.join(", ")
                ),
                MAX_WARNING_CHARS,
            ));
        }
        out
    }

    /// The denial text: every denied finding in full, then the way out.
    pub fn deny_message(&self, kind: &str, name: &str) -> String {
        let denied: Vec<&Decided> = self.denied().collect();
        let mut msg = format!(
            "issuer-guard denied {kind} \"{name}\": {} finding(s) certain to break its service-account tokens under the declared rotation.",
            denied.len()
        );
        for (i, d) in denied.iter().enumerate() {
            let _ = write!(
                msg,
                " ({}) [{}] {}",
                i + 1,
                d.finding.rule,
                d.finding.describe()
            );
        }
        let _ = write!(
            msg,
            " To accept the risk, list the rule in annotation {IGNORE_ANNOTATION} on the {}.",
            if kind == "Pod" { "pod" } else { "pod template" }
        );
        msg
    }
}
