//! What discovery concluded from the generation ledger: the pair that signs
//! now, and where every issuer and key it has seen stands in a rotation.

use super::Generation;

/// Where a key of the API server stands, from what the ledger has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyState {
    /// Signs new tokens now.
    Signing,
    /// Verifies but has never signed: a rotation is coming.
    Staged,
    /// Signed before and still verifies: tokens it signed die with it.
    Retiring,
    /// Signed before and no longer verifies: its rotation is over.
    Retired,
}

impl KeyState {
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyState::Signing => "signing",
            KeyState::Staged => "staged",
            KeyState::Retiring => "retiring",
            KeyState::Retired => "retired",
        }
    }
}

/// One switch of the timeline, in Unix seconds of the API server's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchTimes {
    pub number: u64,
    pub issuer: String,
    pub key_id: String,
    pub started: i64,
    /// `None` while some server does not sign with it yet.
    pub completed: Option<i64>,
}

/// A retirement of an issuer or key, and who says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retired {
    /// `issuer` or `key`.
    pub kind: &'static str,
    pub name: String,
    pub at: i64,
    /// `observed` or `declared`.
    pub source: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// The newest generation whose switch completed: what is stamped.
    pub generation: Generation,
    /// Issuers that signed before the current one and are not retired,
    /// oldest first.
    pub retiring_issuers: Vec<String>,
    pub retired_issuers: Vec<String>,
    /// The issuer a switch under way goes to: some servers sign with it,
    /// not all yet. The issuer in force is then retiring.
    pub next_issuer: Option<String>,
    /// Every key the ledger knows, by key id, sorted.
    pub keys: Vec<(String, KeyState)>,
    /// Every switch the ledger holds, by number.
    pub switches: Vec<SwitchTimes>,
    pub retirements: Vec<Retired>,
    /// Issuers the API servers accept that never signed: a planned issuer,
    /// or an API audience that is not an issuer at all. Shown, never
    /// enforced on without a declaration.
    pub candidate_issuers: Vec<String>,
    /// When the newest observation behind this was made (Unix seconds).
    pub observed_at: i64,
}

impl Discovered {
    pub fn key_ids(&self, state: KeyState) -> impl Iterator<Item = &str> {
        self.keys
            .iter()
            .filter(move |(_, s)| *s == state)
            .map(|(k, _)| k.as_str())
    }
}
