//! A judged object's verdict: what each finding does, and how that is told
//! to the API client (warnings, the denial) and marked on the object.

use std::fmt::Write;

use super::{Action, Decided, IGNORE_ANNOTATION, Verdict};
use crate::rules::{MAX_WARNING_CHARS, RuleId, truncate_chars};

/// Finding warnings in one response; more are summed up in one line.
pub(super) const MAX_FINDING_WARNINGS: usize = 20;
/// Denied findings spelled out in a denial; the rest are counted.
pub(super) const MAX_DENIED_LISTED: usize = 10;

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
        let warned = || {
            self.decided
                .iter()
                .filter(|d| matches!(d.action, Action::Warn | Action::Label))
        };
        // The API server cuts long warning lists on its own; a bounded list
        // with a count says more than a silently cut one.
        let mut out: Vec<String> = warned()
            .take(MAX_FINDING_WARNINGS)
            .map(|d| d.finding.warning())
            .collect();
        let more = warned().count().saturating_sub(MAX_FINDING_WARNINGS);
        if more > 0 {
            out.push(format!(
                "issuer-guard: {more} more finding(s); issuer-guard.io/risks lists their rules, `issuer-guard check` shows all"
            ));
        }
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
        for (i, d) in denied.iter().take(MAX_DENIED_LISTED).enumerate() {
            let _ = write!(
                msg,
                " ({}) [{}] {}",
                i + 1,
                d.finding.rule,
                d.finding.describe()
            );
        }
        if denied.len() > MAX_DENIED_LISTED {
            let _ = write!(
                msg,
                " ... and {} more (`issuer-guard check` lists them all).",
                denied.len() - MAX_DENIED_LISTED
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Finding;

    fn decided(n: usize, action: Action) -> Verdict {
        Verdict {
            decided: (0..n)
                .map(|i| Decided {
                    finding: Finding {
                        rule: RuleId::TokenSubpath,
                        certain: true,
                        path: format!("spec.containers[{i}].volumeMounts[0]"),
                        subject: format!("container \"c{i}\""),
                        detail: "d".into(),
                        message: "m".into(),
                        short: "s",
                    },
                    action,
                    relaxed: None,
                })
                .collect(),
            ..Verdict::default()
        }
    }

    #[test]
    fn warnings_are_bounded_and_summed_up() {
        let v = decided(25_000, Action::Label);
        let w = v.warnings();
        assert_eq!(w.len(), MAX_FINDING_WARNINGS + 1);
        assert!(w.last().unwrap().contains("24980 more finding(s)"), "{w:?}");
        assert_eq!(v.risks_value().as_deref(), Some("token-subpath"));
        let few = decided(3, Action::Warn).warnings();
        assert_eq!(few.len(), 3, "{few:?}");
    }

    #[test]
    fn denials_list_a_bounded_number_of_findings() {
        let msg = decided(25_000, Action::Deny).deny_message("Pod", "p");
        assert!(msg.contains("25000 finding(s)"), "{}", &msg[..200]);
        assert!(msg.contains("(10) [token-subpath]") && !msg.contains("(11)"));
        assert!(msg.contains("and 24990 more"));
        assert!(msg.len() < 4096, "{} bytes", msg.len());
    }
}
