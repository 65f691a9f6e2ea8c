//! The rule ids: their names, order and parsing.

use std::fmt;

/// Every rule issuer-guard knows. The string forms are part of the public
/// interface: they appear in config overrides, the opt-out annotation, the
/// `issuer-guard.io/risks` annotation, metrics and `check` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleId {
    LegacyTokenEnv,
    LegacyTokenVolume,
    TokenSubpath,
    RefreshExceedsGrace,
    AudienceRetiringIssuer,
    FederatedAudienceUntrusted,
}

impl RuleId {
    pub const ALL: [RuleId; 6] = [
        RuleId::LegacyTokenEnv,
        RuleId::LegacyTokenVolume,
        RuleId::TokenSubpath,
        RuleId::RefreshExceedsGrace,
        RuleId::AudienceRetiringIssuer,
        RuleId::FederatedAudienceUntrusted,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RuleId::LegacyTokenEnv => "legacy-token-env",
            RuleId::LegacyTokenVolume => "legacy-token-volume",
            RuleId::TokenSubpath => "token-subpath",
            RuleId::RefreshExceedsGrace => "refresh-exceeds-grace",
            RuleId::AudienceRetiringIssuer => "audience-retiring-issuer",
            RuleId::FederatedAudienceUntrusted => "federated-audience-untrusted",
        }
    }

    pub fn parse(s: &str) -> Option<RuleId> {
        RuleId::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Position in [`RuleId::ALL`], for per-rule tables without hashing.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::RuleId;

    #[test]
    fn ids_round_trip_and_index_matches_position() {
        for (i, r) in RuleId::ALL.into_iter().enumerate() {
            assert_eq!(RuleId::parse(r.as_str()), Some(r));
            assert_eq!(r.index(), i);
        }
        assert_eq!(RuleId::parse("legacy-token"), None);
    }
}
