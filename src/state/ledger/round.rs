//! Recording one probe round: what every API server reached signed with,
//! which keys it lists, and which issuers it accepts, at one time of the
//! API server's clock.

use jiff::Timestamp;
use serde_json::Map;

use super::{
    GenerationEntry, KeyEntry, Ledger, RetiredKind, Retirement, SCHEMA, Source, Unordered, Window,
};

/// An (issuer, key id) pair, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pair<'a> {
    pub issuer: &'a str,
    pub key_id: &'a str,
}

/// What one API server showed in a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerSeen {
    /// The `iss` and `kid` of a verified token it just minted.
    pub issuer: String,
    pub key_id: String,
    /// Every key id its own JWKS lists: the keys it verifies.
    pub verifying: Vec<String>,
    /// The audiences of a token it minted with none asked for: its API
    /// audiences, which are its issuers unless `--api-audiences` is set.
    /// `None` when they are not its issuers (they do not include the one it
    /// signs with).
    pub accepted_issuers: Option<Vec<String>>,
}

impl ServerSeen {
    fn pair(&self) -> Pair<'_> {
        Pair {
            issuer: &self.issuer,
            key_id: &self.key_id,
        }
    }
}

/// One round of probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Round {
    /// The API server's clock: the newest `iat` of the round's tokens.
    pub at: Timestamp,
    pub servers: Vec<ServerSeen>,
    pub coverage: Coverage,
    /// What the canaries of earlier generations met at every server.
    pub canaries: Vec<CanaryReview>,
}

/// The canary token of an earlier generation, sent to TokenReview on every
/// API server in a round in which the current generation's own canary was
/// accepted by all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CanaryReview {
    pub issuer: String,
    pub key_id: String,
    pub verdict: CanaryVerdict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CanaryVerdict {
    /// Every server authenticated it: its issuer and key are trusted.
    Accepted,
    /// Every server refused it for its issuer or key, with expiry, damage
    /// and a recreated account ruled out.
    Refused,
}

/// How much of the control plane a round saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coverage {
    /// Every API server of a known list answered: "every server signs with
    /// it" is read from this round alone.
    Every,
    /// Some server of a known list did not answer: what the others showed
    /// is recorded, and nothing is concluded about all of them.
    Partial,
    /// One address in front of the servers: a switch completes, and a key
    /// retires, once the other pair or the key has been unseen for a window.
    OneAddress,
}

/// What the operator declared, which orders pairs a new ledger sees at once
/// and retires issuers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Declared {
    /// `generation.static.number`: the first number of a new ledger.
    pub first_number: u64,
    pub next_issuer: Option<String>,
    pub retiring_key_ids: Vec<String>,
    pub retired_issuers: Vec<String>,
}

/// What a round changed that an operator should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    SwitchStarted {
        number: u64,
        issuer: String,
        key_id: String,
    },
    SwitchCompleted {
        number: u64,
        issuer: String,
        key_id: String,
    },
    /// A pair that signed before signs again after the switch away from
    /// it completed: a rollback, under a new number.
    SignsAgain { number: u64, was: u64 },
    Retired {
        kind: RetiredKind,
        name: String,
        source: Source,
    },
    /// The operator declared an issuer retired that the API servers still
    /// accept.
    DeclaredButAccepted { issuer: String },
    /// A new ledger saw several pairs at once and nothing declared which
    /// is new.
    OrderUnknown { pairs: usize },
}

impl Ledger {
    /// Records `round`. Returns what it changed that is worth telling, and
    /// whether anything changed at all (an unchanged ledger is not written).
    pub(crate) fn observe_round(
        &mut self,
        round: &Round,
        declared: &Declared,
        window: Window,
    ) -> (bool, Vec<Event>) {
        let mut events = Vec::new();
        let before = self.clone();
        self.schema = self.schema.max(SCHEMA);
        let pairs = distinct_pairs(round);
        if self.generations.is_empty() {
            self.first_generations(round, &pairs, declared, window, &mut events);
        } else {
            // A round older than the last completion (another replica's,
            // in flight while the switch completed) is not a rollback.
            let stale = self
                .in_force()
                .and_then(|g| g.completed)
                .is_some_and(|c| round.at <= c);
            for pair in &pairs {
                self.record_pair(*pair, round.at, window, stale, &mut events);
            }
        }
        self.complete(round, &pairs, window, &mut events);
        self.record_keys(round, window, &mut events);
        self.record_issuers(round, declared, &mut events);
        self.retired_issuers = self
            .retirements
            .iter()
            .filter(|r| r.kind == RetiredKind::Issuer)
            .map(|r| r.name.clone())
            .collect();
        self.trim();
        (*self != before, events)
    }

    /// A new ledger: one pair is numbered at once; several pairs are
    /// ordered by what the operator declared, or left unnumbered until one
    /// of them signs alone.
    fn first_generations(
        &mut self,
        round: &Round,
        pairs: &[Pair<'_>],
        declared: &Declared,
        window: Window,
        events: &mut Vec<Event>,
    ) {
        let first = declared.first_number.max(1);
        let before_unordered = self.unordered.len();
        for pair in pairs {
            match self
                .unordered
                .iter_mut()
                .find(|u| u.issuer == pair.issuer && u.key_id == pair.key_id)
            {
                Some(u) => u.last_seen = round.at,
                None => self.unordered.push(Unordered {
                    issuer: pair.issuer.to_owned(),
                    key_id: pair.key_id.to_owned(),
                    first_seen: round.at,
                    last_seen: round.at,
                }),
            }
        }
        let newer = |u: &Unordered| {
            declared.next_issuer.as_deref() == Some(u.issuer.as_str())
                || (!declared.retiring_key_ids.is_empty()
                    && !declared.retiring_key_ids.contains(&u.key_id))
        };
        let alone = (pairs.len() == 1).then(|| pairs[0]);
        let settled = match alone {
            Some(p) if round.coverage == Coverage::Every => Some(p),
            Some(_) if round.coverage == Coverage::Partial => None,
            Some(p) => {
                // Through one address: alone for a window.
                let others_quiet = self.unordered.iter().all(|u| {
                    (u.issuer == p.issuer && u.key_id == p.key_id)
                        || round.at.duration_since(u.last_seen) >= window.signed()
                });
                others_quiet.then_some(p)
            }
            None => None,
        };
        let mut order: Vec<Unordered> = std::mem::take(&mut self.unordered);
        let declared_new = order.iter().filter(|u| newer(u)).count() == 1;
        if let Some(p) = settled {
            // The pair on every server is the newest; the others came before
            // it, in the order they were first seen.
            order.sort_by_key(|u| (u.issuer == p.issuer && u.key_id == p.key_id, u.first_seen));
        } else if order.len() > 1 && declared_new {
            order.sort_by_key(|u| (newer(u), u.first_seen));
        } else {
            if order.len() > 1 && before_unordered < order.len() {
                events.push(Event::OrderUnknown { pairs: order.len() });
            }
            self.unordered = order;
            return;
        }
        let n = order.len();
        for (i, u) in order.into_iter().enumerate() {
            let number = first + i as u64;
            let newest = i + 1 == n;
            // The older pairs of an install mid-roll were in force before
            // it; their completion is unknown, and taken as their first
            // sighting.
            let completed = if newest { None } else { Some(u.first_seen) };
            events.push(Event::SwitchStarted {
                number,
                issuer: u.issuer.clone(),
                key_id: u.key_id.clone(),
            });
            self.generations.push(GenerationEntry {
                number,
                issuer: u.issuer,
                key_id: u.key_id,
                first_seen: u.first_seen,
                last_seen: u.last_seen,
                completed,
                unknown: Map::new(),
            });
        }
    }

    /// One pair seen signing: the pair in force or the switch in progress
    /// is seen again; any other pair starts a switch with the next number,
    /// even one that signed before (a rollback).
    fn record_pair(
        &mut self,
        pair: Pair<'_>,
        at: Timestamp,
        window: Window,
        stale: bool,
        events: &mut Vec<Event>,
    ) {
        let refresh = jiff::SignedDuration::try_from(window.refresh()).unwrap_or_default();
        let in_force = self.in_force().map(|g| g.number);
        let in_progress = self.in_progress().map(|g| g.number);
        // While a switch is under way every sighting counts (through one
        // address the switch completes on the old pair's last sighting), so
        // the write throttle is off.
        let refresh = if in_progress.is_some() {
            jiff::SignedDuration::ZERO
        } else {
            refresh
        };
        let known = self.generations.iter_mut().find(|g| {
            g.pair() == pair && (Some(g.number) == in_force || Some(g.number) == in_progress)
        });
        if let Some(entry) = known {
            let due = if refresh.is_zero() {
                at > entry.last_seen
            } else {
                at.duration_since(entry.last_seen) >= refresh
            };
            if due {
                entry.last_seen = at;
            }
            return;
        }
        if stale {
            return;
        }
        let number = self.highest_number().map_or(1, |n| n + 1);
        if let Some(was) = self
            .generations
            .iter()
            .filter(|g| g.pair() == pair)
            .map(|g| g.number)
            .max()
        {
            events.push(Event::SignsAgain { number, was });
        }
        events.push(Event::SwitchStarted {
            number,
            issuer: pair.issuer.to_owned(),
            key_id: pair.key_id.to_owned(),
        });
        self.generations.push(GenerationEntry {
            number,
            issuer: pair.issuer.to_owned(),
            key_id: pair.key_id.to_owned(),
            first_seen: at,
            last_seen: at,
            completed: None,
            unknown: Map::new(),
        });
    }

    /// Completes the switch in progress when every server signs with it:
    /// seen so in one round of every server, or, through one address, with
    /// no other pair seen for a window (its completion is then the round
    /// that shows it, later than the truth by at most a window, which errs
    /// on the safe side for anything timed from it).
    fn complete(
        &mut self,
        round: &Round,
        pairs: &[Pair<'_>],
        window: Window,
        events: &mut Vec<Event>,
    ) {
        let Some(progress) = self.in_progress().map(|g| g.number) else {
            return;
        };
        let Some(entry) = self.generations.iter().find(|g| g.number == progress) else {
            return;
        };
        let only_it = pairs.len() == 1 && pairs[0] == entry.pair() && round.at >= entry.first_seen;
        let done = match round.coverage {
            Coverage::Every => only_it,
            Coverage::Partial => false,
            Coverage::OneAddress => {
                only_it
                    && self.generations.iter().all(|g| {
                        g.number == progress
                            || round.at.duration_since(g.last_seen) >= window.signed()
                    })
            }
        };
        if !done {
            return;
        }
        if let Some(entry) = self.generations.iter_mut().find(|g| g.number == progress) {
            entry.completed = Some(round.at);
            entry.last_seen = round.at;
            events.push(Event::SwitchCompleted {
                number: entry.number,
                issuer: entry.issuer.clone(),
                key_id: entry.key_id.clone(),
            });
        }
    }

    /// Keys: every key listed is recorded; a key that signed and that no
    /// server lists any more (in a round of every server, or for a window
    /// through one address) is retired, observed.
    fn record_keys(&mut self, round: &Round, window: Window, events: &mut Vec<Event>) {
        let refresh = jiff::SignedDuration::try_from(window.refresh()).unwrap_or_default();
        let mut listed: Vec<&str> = round
            .servers
            .iter()
            .flat_map(|s| s.verifying.iter().map(String::as_str))
            .collect();
        listed.sort_unstable();
        listed.dedup();
        for kid in &listed {
            match self.keys.iter_mut().find(|k| k.key_id == *kid) {
                Some(k) => {
                    if round.at.duration_since(k.last_seen) >= refresh {
                        k.last_seen = round.at;
                    }
                }
                None => self.keys.push(KeyEntry {
                    key_id: (*kid).to_owned(),
                    first_seen: round.at,
                    last_seen: round.at,
                    unknown: Map::new(),
                }),
            }
        }
        let Some(signing) = self.in_force().map(|g| g.key_id.clone()) else {
            return;
        };
        let quiet = window
            .signed()
            .saturating_add(jiff::SignedDuration::try_from(window.refresh()).unwrap_or_default());
        let progress = self.in_progress().map(|g| g.key_id.clone());
        let gone: Vec<String> = self
            .keys
            .iter()
            .filter(|k| {
                let signed = self.generations.iter().any(|g| g.key_id == k.key_id);
                // Through one address: unlisted for a window, counted from
                // a last sighting that the write throttle may have left up
                // to a refresh behind, so never early.
                let unlisted = match round.coverage {
                    Coverage::Every => !listed.contains(&k.key_id.as_str()),
                    Coverage::Partial => false,
                    Coverage::OneAddress => round.at.duration_since(k.last_seen) >= quiet,
                };
                signed
                    && unlisted
                    && k.key_id != signing
                    && progress.as_ref() != Some(&k.key_id)
                    && self.retired(RetiredKind::Key, &k.key_id).is_none()
            })
            .map(|k| k.key_id.clone())
            .collect();
        for kid in gone {
            self.retire(RetiredKind::Key, kid, round.at, Source::Observed, events);
        }
    }

    /// Issuers: where every server shows the issuers it accepts, an issuer
    /// that signed and that none accepts any more is retired, observed.
    /// Then the operator's declared retirements, noting any the servers
    /// contradict.
    fn record_issuers(&mut self, round: &Round, declared: &Declared, events: &mut Vec<Event>) {
        let shown: Option<Vec<&Vec<String>>> = round
            .servers
            .iter()
            .map(|s| s.accepted_issuers.as_ref())
            .collect();
        let accepted: Option<Vec<String>> = shown
            .filter(|_| round.coverage == Coverage::Every)
            .map(|lists| {
                let mut all: Vec<String> = lists.into_iter().flatten().cloned().collect();
                all.sort();
                all.dedup();
                all
            });
        if accepted.is_some() && self.accepted_issuers != accepted {
            self.accepted_issuers.clone_from(&accepted);
        }
        let Some(in_force) = self.in_force().map(|g| g.issuer.clone()) else {
            return;
        };
        let progress = self.in_progress().map(|g| g.issuer.clone());
        let mut signed: Vec<String> = self.generations.iter().map(|g| g.issuer.clone()).collect();
        signed.sort();
        signed.dedup();
        for issuer in signed {
            if issuer == in_force
                || progress.as_ref() == Some(&issuer)
                || self.retired(RetiredKind::Issuer, &issuer).is_some()
            {
                continue;
            }
            // The canary speaks where the API audiences do not: refused, its
            // issuer is gone if its key is still listed (so the key is not
            // what was refused).
            let canary = round.canaries.iter().find(|c| c.issuer == issuer).map(|c| {
                let key_listed = round
                    .servers
                    .iter()
                    .any(|s| s.verifying.contains(&c.key_id));
                match c.verdict {
                    CanaryVerdict::Accepted => true,
                    CanaryVerdict::Refused => !key_listed,
                }
            });
            let still_accepted = accepted.as_ref().map(|a| a.contains(&issuer)).or(canary);
            if still_accepted == Some(false) {
                self.retire(
                    RetiredKind::Issuer,
                    issuer,
                    round.at,
                    Source::Observed,
                    events,
                );
            } else if declared.retired_issuers.contains(&issuer) {
                if still_accepted == Some(true) {
                    events.push(Event::DeclaredButAccepted {
                        issuer: issuer.clone(),
                    });
                }
                self.retire(
                    RetiredKind::Issuer,
                    issuer,
                    round.at,
                    Source::Declared,
                    events,
                );
            }
        }
    }

    fn retire(
        &mut self,
        kind: RetiredKind,
        name: String,
        at: Timestamp,
        source: Source,
        events: &mut Vec<Event>,
    ) {
        events.push(Event::Retired {
            kind,
            name: name.clone(),
            source,
        });
        self.retirements.push(Retirement {
            kind,
            name,
            at,
            source,
            unknown: Map::new(),
        });
    }
}

/// The pairs of a round, each once, in the order the servers were probed.
fn distinct_pairs(round: &Round) -> Vec<Pair<'_>> {
    let mut pairs: Vec<Pair<'_>> = Vec::new();
    for s in &round.servers {
        if !pairs.contains(&s.pair()) {
            pairs.push(s.pair());
        }
    }
    pairs
}
