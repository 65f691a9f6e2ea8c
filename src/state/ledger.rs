//! The generation ledger: every (issuer, key id) pair the API server has
//! been seen signing with, under a number given once and never reused, and
//! every key its JWKS has listed. Kept in a ConfigMap so that replicas agree
//! and a restart keeps the history; this module is the pure part, shared
//! by discovery (which probes and writes it) and `check` (which reads a
//! saved copy). No I/O, no clock: times come in with the observations.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Discovered, Generation, KeyState};

/// The ConfigMap key that holds the ledger as JSON.
pub(crate) const DATA_KEY: &str = "ledger.json";

/// Bounds on history, so the ConfigMap stays far below its 1 MiB limit even
/// after years of rotations. The oldest entries go first.
const MAX_GENERATIONS: usize = 100;
const MAX_KEYS: usize = 100;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Ledger {
    #[serde(default)]
    pub generations: Vec<GenerationEntry>,
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
    /// Issuers the operator has said are retired (`rotation.retiredIssuers`),
    /// kept here so that removing them from the configuration later does not
    /// bring them back as retiring.
    #[serde(default)]
    pub retired_issuers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerationEntry {
    pub number: u64,
    pub issuer: String,
    pub key_id: String,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

/// A key the JWKS listed: it verifies while it is seen there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeyEntry {
    pub key_id: String,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

/// One successful probe of the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Observation {
    /// The `iss` of a verified token the API server just minted.
    pub issuer: String,
    /// Its header's `kid`.
    pub key_id: String,
    /// Every key id in the JWKS.
    pub verifying: Vec<String>,
    pub at: Timestamp,
}

/// What was seen within this long of the newest observation counts as
/// seen now. It spans a rolling control-plane upgrade, during which
/// consecutive probes may see the old and the new signer in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window(pub Duration);

impl Window {
    /// A `last_seen` is only moved forward once it is this old: every
    /// replica probes every interval, and writing each probe would turn
    /// the ledger into a hot object.
    pub(crate) fn refresh(&self) -> Duration {
        self.0 / 5
    }
}

impl Ledger {
    /// Records `seen`, numbering a new pair after the highest number used
    /// (or `first_number` in an empty ledger). Returns whether anything
    /// changed, so that an unchanged ledger is not written back.
    pub(crate) fn observe(
        &mut self,
        seen: &Observation,
        first_number: u64,
        retired_issuers: &[String],
        window: Window,
    ) -> bool {
        let refresh = jiff::SignedDuration::try_from(window.refresh()).unwrap_or_default();
        let stale = |last: Timestamp| seen.at.duration_since(last) >= refresh;
        let mut changed = false;
        match self
            .generations
            .iter_mut()
            .find(|g| g.issuer == seen.issuer && g.key_id == seen.key_id)
        {
            Some(entry) => {
                if stale(entry.last_seen) {
                    entry.last_seen = seen.at;
                    changed = true;
                }
            }
            None => {
                let number = self
                    .generations
                    .iter()
                    .map(|g| g.number + 1)
                    .max()
                    .unwrap_or(first_number.max(1));
                self.generations.push(GenerationEntry {
                    number,
                    issuer: seen.issuer.clone(),
                    key_id: seen.key_id.clone(),
                    first_seen: seen.at,
                    last_seen: seen.at,
                });
                changed = true;
            }
        }
        for kid in &seen.verifying {
            match self.keys.iter_mut().find(|k| k.key_id == *kid) {
                Some(entry) => {
                    if stale(entry.last_seen) {
                        entry.last_seen = seen.at;
                        changed = true;
                    }
                }
                None => {
                    self.keys.push(KeyEntry {
                        key_id: kid.clone(),
                        first_seen: seen.at,
                        last_seen: seen.at,
                    });
                    changed = true;
                }
            }
        }
        for issuer in retired_issuers {
            let signed = self.generations.iter().any(|g| g.issuer == *issuer);
            if signed && issuer != &seen.issuer && !self.retired_issuers.contains(issuer) {
                self.retired_issuers.push(issuer.clone());
                changed = true;
            }
        }
        changed | self.trim()
    }

    fn trim(&mut self) -> bool {
        let mut trimmed = false;
        if self.generations.len() > MAX_GENERATIONS {
            self.generations.sort_by_key(|g| g.number);
            let excess = self.generations.len() - MAX_GENERATIONS;
            self.generations.drain(..excess);
            trimmed = true;
        }
        if self.keys.len() > MAX_KEYS {
            self.keys.sort_by_key(|k| k.last_seen);
            let excess = self.keys.len() - MAX_KEYS;
            self.keys.drain(..excess);
            trimmed = true;
        }
        trimmed
    }

    /// The newest observation recorded: what "recently" is measured from,
    /// so that a ledger read back after an outage, or a saved copy read by
    /// `check`, concludes what it concluded when it was written.
    fn latest(&self) -> Option<Timestamp> {
        let generations = self.generations.iter().map(|g| g.last_seen);
        generations
            .chain(self.keys.iter().map(|k| k.last_seen))
            .max()
    }

    /// Whether this ledger is at least as far along as `other`. Every
    /// change to a ledger adds a generation or moves an observation forward,
    /// so (highest number, newest observation) orders the versions of one
    /// ledger; a watch event that arrives after this replica's own newer
    /// write is behind by it.
    pub(crate) fn is_at_least(&self, other: &Ledger) -> bool {
        let progress = |l: &Ledger| (l.generations.iter().map(|g| g.number).max(), l.latest());
        progress(self) >= progress(other)
    }

    /// What the ledger says now; `None` while it is empty.
    pub(crate) fn conclude(&self, window: Window) -> Option<Discovered> {
        let latest = self.latest()?;
        let window = jiff::SignedDuration::try_from(window.0).unwrap_or_default();
        let recent = |last: Timestamp| latest.duration_since(last) <= window;
        // The newest pair seen within the window signs: during a roll the
        // old signer is seen again, and must not take the stamp back.
        let current = self
            .generations
            .iter()
            .filter(|g| recent(g.last_seen))
            .max_by_key(|g| g.number)
            .or_else(|| self.generations.iter().max_by_key(|g| g.number))?;
        let mut by_age: Vec<&GenerationEntry> = self.generations.iter().collect();
        by_age.sort_by_key(|g| g.number);
        let (mut retiring_issuers, mut retired_issuers) = (Vec::new(), Vec::new());
        for g in by_age {
            if g.number >= current.number || g.issuer == current.issuer {
                continue;
            }
            let list = if self.retired_issuers.contains(&g.issuer) {
                &mut retired_issuers
            } else {
                &mut retiring_issuers
            };
            if !list.contains(&g.issuer) {
                list.push(g.issuer.clone());
            }
        }
        let mut keys: Vec<(String, KeyState)> = self
            .keys
            .iter()
            .filter_map(|k| {
                let signed = self.generations.iter().any(|g| g.key_id == k.key_id);
                let state = match (k.key_id == current.key_id, recent(k.last_seen), signed) {
                    (true, _, _) => KeyState::Signing,
                    (false, true, true) => KeyState::Retiring,
                    (false, true, false) => KeyState::Staged,
                    (false, false, true) => KeyState::Retired,
                    // Listed once, never signed, gone: nothing to follow.
                    (false, false, false) => return None,
                };
                Some((k.key_id.clone(), state))
            })
            .collect();
        keys.sort();
        Some(Discovered {
            generation: Generation::new(current.number, &current.issuer, &current.key_id),
            retiring_issuers,
            retired_issuers,
            keys,
            observed_at: latest.as_second(),
        })
    }
}

/// Reads the ledger from a ConfigMap's data, given how to look a key up:
/// the one reader of both the live ConfigMap and a saved copy of it.
pub(crate) fn from_data<'a>(get: impl FnOnce(&str) -> Option<&'a str>) -> Result<Ledger, String> {
    let text = get(DATA_KEY).ok_or_else(|| format!("it has no data key {DATA_KEY:?}"))?;
    serde_json::from_str(text).map_err(|e| format!("{DATA_KEY}: {e}"))
}

#[cfg(test)]
mod tests;
