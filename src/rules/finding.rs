//! A finding: what breaks, where, why, and the one-line warning for it.

use std::fmt::Write;

use super::RuleId;

/// Warnings longer than this are cut by some clients; kubectl shows them whole
/// only below it.
pub const MAX_WARNING_CHARS: usize = 119;

/// One way a pod spec's tokens would break.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: RuleId,
    /// Certain to break under the declared rotation; otherwise a hazard that
    /// depends on timing or on what the application does with the token.
    pub certain: bool,
    /// JSON path of the offending field, e.g. `spec.containers[0].env[2]`.
    pub path: String,
    /// The container or volume, e.g. `container "app"`.
    pub subject: String,
    /// What is referenced (a Secret name, an audience). With `rule` and
    /// `subject` it identifies the finding across edits that move paths.
    pub detail: String,
    /// Why the token breaks, when, and how to fix it.
    pub message: String,
    /// A few words for a warning line.
    pub short: &'static str,
}

impl Finding {
    /// Stable across reorderings, so an UPDATE can tell old findings from new.
    pub fn identity(&self) -> (RuleId, &str, &str) {
        (self.rule, &self.subject, &self.detail)
    }

    /// The full text, as `check` and denials show it.
    pub fn describe(&self) -> String {
        format!("{} at {}: {}", self.subject, self.path, self.message)
    }

    /// One warning line under [`MAX_WARNING_CHARS`]. The rule, subject and
    /// path say what to fix; the hint goes first when space runs out.
    pub fn warning(&self) -> String {
        let mut s = String::with_capacity(MAX_WARNING_CHARS + 8);
        let _ = write!(s, "{}: {} at {}", self.rule, self.subject, self.path);
        if s.chars().count() + 2 + self.short.chars().count() <= MAX_WARNING_CHARS {
            let _ = write!(s, ": {}", self.short);
        }
        truncate_chars(s, MAX_WARNING_CHARS)
    }
}

/// Cuts `s` to at most `max` characters, marking the cut.
pub fn truncate_chars(mut s: String, max: usize) -> String {
    if s.chars().count() <= max {
        return s;
    }
    let cut = s
        .char_indices()
        .nth(max.saturating_sub(1))
        .map_or(s.len(), |(i, _)| i);
    s.truncate(cut);
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(subject: &str, path: &str) -> Finding {
        Finding {
            rule: RuleId::LegacyTokenEnv,
            certain: true,
            path: path.into(),
            subject: subject.into(),
            detail: "s".into(),
            message: "m".into(),
            short: "frozen in env; use a projected token",
        }
    }

    #[test]
    fn warnings_stay_under_the_limit_and_keep_the_rule() {
        let short = finding(
            "container \"app\"",
            "spec.template.spec.containers[0].env[1]",
        )
        .warning();
        assert!(short.ends_with(
            "spec.template.spec.containers[0].env[1]: frozen in env; use a projected token"
        ));
        let long_path = "spec.jobTemplate.spec.template.spec.initContainers[10].envFrom[3]";
        let w = finding("container \"a-rather-long-container-name\"", long_path).warning();
        assert!(w.chars().count() <= MAX_WARNING_CHARS, "{w}");
        assert!(w.starts_with("legacy-token-env: container"), "{w}");
        let w = finding("container \"app\"", long_path).warning();
        assert!(
            w.ends_with(long_path),
            "the hint is dropped before the path: {w}"
        );
        let huge = finding(&"é".repeat(300), "p").warning();
        assert!(huge.chars().count() <= MAX_WARNING_CHARS);
        assert!(huge.ends_with('…'));
    }
}
