//! The generation ledger: a timeline of the signing pairs the API servers
//! have used. Each (issuer, key id) pair that starts to sign opens a switch
//! with a number given once and never reused; the switch *starts* when the
//! first server signs with the pair and *completes* when every server does.
//! Retirements of issuers and keys are recorded with their source (observed
//! or declared). Kept in a ConfigMap so that replicas agree and a restart
//! keeps the history.
//!
//! This module is the pure part, shared by discovery (which probes and
//! writes it) and `check` (which reads a saved copy). No I/O and no clock:
//! every time comes in with an observation, on the API server's clock.

mod conclude;
mod round;
mod validate;

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub(crate) use round::{
    CanaryReview, CanaryVerdict, Coverage, Declared, Event, Pair, Round, ServerSeen,
};
pub(crate) use validate::Relation;

/// The ConfigMap key that holds the ledger as JSON.
pub(crate) const DATA_KEY: &str = "ledger.json";

/// The schema this build writes. 1 had no `schema` field, no switch
/// completions and only declared retirements (`retiredIssuers`).
pub(crate) const SCHEMA: u32 = 2;

/// Bounds on history, so the ConfigMap stays far below its 1 MiB limit even
/// after years of rotations. The oldest entries go first.
const MAX_GENERATIONS: usize = 100;
const MAX_KEYS: usize = 100;
const MAX_RETIREMENTS: usize = 200;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Ledger {
    #[serde(default)]
    pub schema: u32,
    #[serde(default)]
    pub generations: Vec<GenerationEntry>,
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
    #[serde(default)]
    pub retirements: Vec<Retirement>,
    /// Pairs a new ledger saw at once, before any one of them signed on
    /// every server: their order is unknown, so none is numbered yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unordered: Vec<Unordered>,
    /// The issuers the API servers accept, where they show them (their API
    /// audiences are then their issuers); `None` where they do not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_issuers: Option<Vec<String>>,
    /// Schema 1's declared retirements, still written so that a replica of
    /// the previous release, during a rolling upgrade, keeps them.
    #[serde(default)]
    pub retired_issuers: Vec<String>,
    /// Fields of a later schema, kept as they are on every rewrite.
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
    /// Read from schema 1, which recorded no key retirements: until a round
    /// of every server records them, a key that signed and has been out of
    /// the JWKS for a window reads as retired, as schema 1 read it. (A saved
    /// copy read by `check --snapshot` never sees a round.)
    #[serde(skip)]
    pub keys_as_schema_1: bool,
}

/// One switch: from the pair of the number before to this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerationEntry {
    pub number: u64,
    pub issuer: String,
    pub key_id: String,
    /// When the first server was seen signing with the pair: the switch's
    /// start.
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// When every server signed with it: the switch's completion. Stamps
    /// move to a generation only then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<Timestamp>,
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

impl GenerationEntry {
    pub(crate) fn pair(&self) -> Pair<'_> {
        Pair {
            issuer: &self.issuer,
            key_id: &self.key_id,
        }
    }
}

/// A key a JWKS listed: it verifies while it is listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeyEntry {
    pub key_id: String,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum RetiredKind {
    Issuer,
    Key,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Source {
    /// Seen from the API servers: no server accepts it any more.
    Observed,
    /// The operator's word (`rotation.retiredIssuers`).
    Declared,
}

impl Source {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Source::Observed => "observed",
            Source::Declared => "declared",
        }
    }
}

impl RetiredKind {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            RetiredKind::Issuer => "issuer",
            RetiredKind::Key => "key",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Retirement {
    pub kind: RetiredKind,
    pub name: String,
    pub at: Timestamp,
    pub source: Source,
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Unordered {
    pub issuer: String,
    pub key_id: String,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

/// What was seen within this long of the newest observation counts as
/// seen now. Where the API servers cannot be told apart (one address), a
/// switch completes once the old pair has not been seen for this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window(pub Duration);

impl Window {
    /// A `last_seen` is only moved forward once it is this old: every
    /// replica probes every interval, and writing each probe would turn
    /// the ledger into a hot object.
    pub(crate) fn refresh(&self) -> Duration {
        self.0 / 5
    }

    fn signed(&self) -> jiff::SignedDuration {
        jiff::SignedDuration::try_from(self.0).unwrap_or_default()
    }
}

impl Ledger {
    /// The generation stamps follow: the newest completed switch.
    pub(crate) fn in_force(&self) -> Option<&GenerationEntry> {
        self.generations
            .iter()
            .filter(|g| g.completed.is_some())
            .max_by_key(|g| g.number)
    }

    /// The newest switch, when it has started and not completed.
    pub(crate) fn in_progress(&self) -> Option<&GenerationEntry> {
        let newest = self.generations.iter().max_by_key(|g| g.number)?;
        newest.completed.is_none().then_some(newest)
    }

    pub(crate) fn highest_number(&self) -> Option<u64> {
        self.generations.iter().map(|g| g.number).max()
    }

    /// The newest time the ledger records: what "recently" is measured
    /// from, so that a ledger read back after an outage, or a saved copy
    /// read by `check`, concludes what it concluded when it was written.
    pub(crate) fn latest(&self) -> Option<Timestamp> {
        let generations = self
            .generations
            .iter()
            .flat_map(|g| [Some(g.last_seen), g.completed]);
        let keys = self.keys.iter().map(|k| Some(k.last_seen));
        let retirements = self.retirements.iter().map(|r| Some(r.at));
        let unordered = self.unordered.iter().map(|u| Some(u.last_seen));
        generations
            .chain(keys)
            .chain(retirements)
            .chain(unordered)
            .flatten()
            .max()
    }

    pub(crate) fn retired(&self, kind: RetiredKind, name: &str) -> Option<&Retirement> {
        self.retirements
            .iter()
            .find(|r| r.kind == kind && r.name == name)
    }

    /// Brings a ledger of an earlier schema to this one. Schema 1 recorded
    /// no completions: its stamp followed the newest pair seen, so every
    /// entry is taken as completed when first seen; its declared
    /// retirements become retirements with the newest time it recorded.
    fn upgrade(&mut self) {
        if self.schema >= SCHEMA {
            return;
        }
        self.keys_as_schema_1 = true;
        for g in &mut self.generations {
            g.completed.get_or_insert(g.first_seen);
        }
        let at = self.latest();
        for issuer in &self.retired_issuers {
            if self.retired(RetiredKind::Issuer, issuer).is_none()
                && let Some(at) = at
            {
                self.retirements.push(Retirement {
                    kind: RetiredKind::Issuer,
                    name: issuer.clone(),
                    at,
                    source: Source::Declared,
                    unknown: Map::new(),
                });
            }
        }
        self.schema = SCHEMA;
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
        if trimmed {
            // A retirement names what a generation signed with; one whose
            // generations are all trimmed goes with them.
            let (generations, before) = (&self.generations, self.retirements.len());
            self.retirements.retain(|r| match r.kind {
                RetiredKind::Issuer => generations.iter().any(|g| g.issuer == r.name),
                RetiredKind::Key => generations.iter().any(|g| g.key_id == r.name),
            });
            trimmed |= self.retirements.len() != before;
        }
        if self.retirements.len() > MAX_RETIREMENTS {
            self.retirements.sort_by_key(|r| r.at);
            let excess = self.retirements.len() - MAX_RETIREMENTS;
            self.retirements.drain(..excess);
            trimmed = true;
        }
        trimmed
    }
}

/// Reads the ledger from a ConfigMap's data, given how to look a key up:
/// the one reader of both the live ConfigMap and a saved copy of it. The
/// ledger comes back in this build's schema and checked on its own (not
/// against a clock or another ledger: see [`Ledger::check`]).
pub(crate) fn from_data<'a>(get: impl FnOnce(&str) -> Option<&'a str>) -> Result<Ledger, String> {
    let text = get(DATA_KEY).ok_or_else(|| format!("it has no data key {DATA_KEY:?}"))?;
    from_json(text)
}

/// Reads the JSON of a ledger.
pub(crate) fn from_json(text: &str) -> Result<Ledger, String> {
    let mut ledger: Ledger = serde_json::from_str(text).map_err(|e| format!("{DATA_KEY}: {e}"))?;
    ledger.upgrade();
    ledger.check(None).map_err(|e| format!("{DATA_KEY}: {e}"))?;
    Ok(ledger)
}

#[cfg(test)]
mod tests;
