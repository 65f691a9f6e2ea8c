//! Whether a ledger can be believed: on its own (numbers, order of times,
//! what its retirements name), against the API server's clock, and against
//! the ledger a replica already holds. A ledger that fails is never adopted
//! and never overwritten.

use jiff::{SignedDuration, Timestamp};

use super::{Ledger, RetiredKind};

/// How far ahead of the API server's clock (as a replica knows it) a time
/// may be: API servers of one cluster differ by a little, and tokens carry
/// whole seconds.
const FUTURE_SLACK: SignedDuration = SignedDuration::from_secs(120);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Invalid {
    #[error("generation numbers must rise by one with no gap or reuse: {found} follows {after}")]
    Numbering { after: u64, found: u64 },
    #[error("generation {number}: {what}")]
    Order { number: u64, what: &'static str },
    #[error("{what} is {at}, ahead of the API server's clock ({now})")]
    Future {
        what: String,
        at: Timestamp,
        now: Timestamp,
    },
    #[error("retires {kind} {name:?}, which no generation of the ledger signed with")]
    RetiresUnknown { kind: &'static str, name: String },
    #[error("retires {kind} {name:?}, which signs the generation in force")]
    RetiresSigning { kind: &'static str, name: String },
    #[error("retires {kind} {name:?} twice")]
    RetiredTwice { kind: &'static str, name: String },
}

/// Where a ledger read stands against the one a replica holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Relation {
    /// The same history, as far along.
    Same,
    /// The same history, further along: adopt it.
    Ahead,
    /// The same history, not as far along: a late watch event, or a
    /// restored older copy. Keep the one held.
    Behind,
    /// Another history: someone else wrote it. Refuse it.
    Diverged(String),
}

impl Ledger {
    /// Checks the ledger on its own, and with `now` (the API server's
    /// clock) that no time in it is ahead of that clock.
    pub(crate) fn check(&self, now: Option<Timestamp>) -> Result<(), Invalid> {
        let mut numbers: Vec<&super::GenerationEntry> = self.generations.iter().collect();
        numbers.sort_by_key(|g| g.number);
        for pair in numbers.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if b.number != a.number + 1 {
                return Err(Invalid::Numbering {
                    after: a.number,
                    found: b.number,
                });
            }
            if b.first_seen < a.first_seen {
                return Err(Invalid::Order {
                    number: b.number,
                    what: "started before the generation before it",
                });
            }
            if let (Some(ca), Some(cb)) = (a.completed, b.completed)
                && cb < ca
            {
                return Err(Invalid::Order {
                    number: b.number,
                    what: "completed before the generation before it",
                });
            }
        }
        for g in &self.generations {
            if g.last_seen < g.first_seen {
                return Err(Invalid::Order {
                    number: g.number,
                    what: "last seen before it was first seen",
                });
            }
            if g.completed.is_some_and(|c| c < g.first_seen) {
                return Err(Invalid::Order {
                    number: g.number,
                    what: "completed before it started",
                });
            }
        }
        self.check_retirements()?;
        if let Some(now) = now {
            self.check_clock(now)?;
        }
        Ok(())
    }

    fn check_retirements(&self) -> Result<(), Invalid> {
        let in_force = self.in_force();
        for (i, r) in self.retirements.iter().enumerate() {
            let kind = r.kind.as_str();
            let name = r.name.clone();
            let (signed, signing) = match r.kind {
                RetiredKind::Issuer => (
                    self.generations.iter().any(|g| g.issuer == r.name),
                    in_force.is_some_and(|g| g.issuer == r.name),
                ),
                RetiredKind::Key => (
                    self.generations.iter().any(|g| g.key_id == r.name),
                    in_force.is_some_and(|g| g.key_id == r.name),
                ),
            };
            // A retired pair that signs again is a new generation; its
            // retirement stays in the history, and is only wrong if it is
            // newer than that generation's start.
            let signs_since = in_force.is_some_and(|g| g.first_seen > r.at);
            if !signed {
                return Err(Invalid::RetiresUnknown { kind, name });
            }
            if signing && !signs_since {
                return Err(Invalid::RetiresSigning { kind, name });
            }
            if self.retirements[..i]
                .iter()
                .any(|o| o.kind == r.kind && o.name == r.name)
            {
                return Err(Invalid::RetiredTwice { kind, name });
            }
        }
        Ok(())
    }

    fn check_clock(&self, now: Timestamp) -> Result<(), Invalid> {
        let limit = now.saturating_add(FUTURE_SLACK).unwrap_or(now);
        let future =
            |what: String, at: Timestamp| (at > limit).then_some(Invalid::Future { what, at, now });
        for g in &self.generations {
            let n = g.number;
            let found = future(format!("generation {n}'s lastSeen"), g.last_seen)
                .or_else(|| future(format!("generation {n}'s firstSeen"), g.first_seen))
                .or_else(|| {
                    g.completed
                        .and_then(|c| future(format!("generation {n}'s completion"), c))
                });
            if let Some(e) = found {
                return Err(e);
            }
        }
        for k in &self.keys {
            if let Some(e) = future(format!("key {:?}'s lastSeen", k.key_id), k.last_seen) {
                return Err(e);
            }
        }
        for r in &self.retirements {
            if let Some(e) = future(format!("the retirement of {:?}", r.name), r.at) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Where `self`, just read, stands against `held`.
    pub(crate) fn relation(&self, held: &Ledger) -> Relation {
        if let Err(why) = self.consistent_with(held) {
            return Relation::Diverged(why);
        }
        let progress = |l: &Ledger| {
            (
                l.highest_number(),
                l.generations
                    .iter()
                    .filter(|g| g.completed.is_some())
                    .count(),
                l.retirements.len(),
                l.latest(),
            )
        };
        let (mine, theirs) = (progress(self), progress(held));
        let ahead =
            mine.0 >= theirs.0 && mine.1 >= theirs.1 && mine.2 >= theirs.2 && mine.3 >= theirs.3;
        let behind =
            mine.0 <= theirs.0 && mine.1 <= theirs.1 && mine.2 <= theirs.2 && mine.3 <= theirs.3;
        match (ahead, behind) {
            (true, true) => Relation::Same,
            (true, false) => Relation::Ahead,
            (false, true) => Relation::Behind,
            (false, false) => {
                Relation::Diverged("it is ahead in some ways and behind in others".to_owned())
            }
        }
    }

    /// Whether two ledgers tell one history: every number in both names the
    /// same pair, started at the same time and, once completed, completed
    /// at the same time; neither lost the other's newest generation (a
    /// history is only trimmed at its oldest end); every retirement in both
    /// is the same.
    fn consistent_with(&self, other: &Ledger) -> Result<(), String> {
        for g in &self.generations {
            let Some(o) = other.generations.iter().find(|o| o.number == g.number) else {
                continue;
            };
            if g.pair() != o.pair() || g.first_seen != o.first_seen {
                return Err(format!(
                    "generation {} is {} {:?} first seen {} here and {} {:?} first seen {} in the ledger held",
                    g.number, g.issuer, g.key_id, g.first_seen, o.issuer, o.key_id, o.first_seen
                ));
            }
            if let (Some(a), Some(b)) = (g.completed, o.completed)
                && a != b
            {
                return Err(format!(
                    "generation {} completed at {a} here and at {b} in the ledger held",
                    g.number
                ));
            }
        }
        // Histories are trimmed only at their oldest end, so the later of
        // the two still holds the earlier one's newest generation.
        if let (Some(mine), Some(theirs)) = (self.highest_number(), other.highest_number()) {
            let later = if mine >= theirs { self } else { other };
            let newest_of_earlier = mine.min(theirs);
            if !later
                .generations
                .iter()
                .any(|g| g.number == newest_of_earlier)
            {
                return Err(format!("generation {newest_of_earlier} is missing"));
            }
        }
        for r in &self.retirements {
            if let Some(o) = other
                .retirements
                .iter()
                .find(|o| o.kind == r.kind && o.name == r.name)
                && (o.at != r.at || o.source != r.source)
            {
                return Err(format!(
                    "the retirement of {:?} differs from the ledger held",
                    r.name
                ));
            }
        }
        Ok(())
    }
}
