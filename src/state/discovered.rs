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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub generation: Generation,
    /// Issuers that signed before the current one and are not known to be
    /// retired, oldest first. The API server does not say which issuers it
    /// still accepts, so only the operator's word retires one.
    pub retiring_issuers: Vec<String>,
    pub retired_issuers: Vec<String>,
    /// Every key the ledger knows, by key id, sorted.
    pub keys: Vec<(String, KeyState)>,
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
