//! What a finding can do, the two modes, and the policy that picks between
//! them: the part of the configuration that decides, as opposed to what is
//! judged (`crate::state`).

use crate::rules::RuleId;

/// `enforce` denies findings certain to break; `audit` never denies by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Audit,
}

/// What happens to a finding. Ordered by strength, so that combining two
/// decisions is a `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Not reported.
    Off,
    /// Reported as an admission warning.
    Warn,
    /// Reported as a warning and marked on the object (`issuer-guard.io/at-risk`).
    Label,
    /// The request is rejected.
    Deny,
}

impl Action {
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Off => "off",
            Action::Warn => "warn",
            Action::Label => "label",
            Action::Deny => "deny",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "off" => Some(Action::Off),
            "warn" => Some(Action::Warn),
            "label" => Some(Action::Label),
            "deny" => Some(Action::Deny),
            _ => None,
        }
    }
}

/// How findings turn into actions, and which namespaces are left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    /// Indexed by [`RuleId::index`].
    pub overrides: [Option<Action>; RuleId::ALL.len()],
    pub exempt_namespaces: Vec<String>,
}

impl Policy {
    pub fn is_exempt(&self, namespace: &str) -> bool {
        self.exempt_namespaces.iter().any(|n| n == namespace)
    }

    /// The action for a finding before the opt-out and relaxations.
    pub fn action(&self, rule: RuleId, certain: bool) -> Action {
        self.overrides[rule.index()].unwrap_or_else(|| default_action(self.mode, certain))
    }
}

/// The action for a finding before overrides: in enforce mode a certain
/// breakage is denied, everything else is warned about and labelled.
pub(super) fn default_action(mode: Mode, certain: bool) -> Action {
    match (mode, certain) {
        (Mode::Enforce, true) => Action::Deny,
        _ => Action::Label,
    }
}
