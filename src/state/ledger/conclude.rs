//! What a ledger says now: the generation in force, the switch in
//! progress, and where every issuer and key stands.

use super::{Ledger, RetiredKind, Window};
use crate::state::{Discovered, Generation, KeyState, Retired, SwitchTimes};

impl Ledger {
    /// `None` while no switch has completed (a new ledger before its first
    /// round of every server, or pairs whose order is unknown): the static
    /// generation is stamped until then.
    pub(crate) fn conclude(&self, window: Window) -> Option<Discovered> {
        let latest = self.latest()?;
        let current = self.in_force()?;
        let progress = self.in_progress();
        let retired = |kind, name: &str| self.retired(kind, name).is_some();

        // Issuers that signed before the one in force, oldest first; and the
        // one in force too while a switch to another issuer is under way.
        let mut retiring_issuers = Vec::new();
        let mut retired_issuers = Vec::new();
        let mut by_number: Vec<_> = self.generations.iter().collect();
        by_number.sort_by_key(|g| g.number);
        for g in &by_number {
            if g.number >= current.number || g.issuer == current.issuer {
                continue;
            }
            if progress.is_some_and(|p| p.issuer == g.issuer) {
                continue;
            }
            let list = if retired(RetiredKind::Issuer, &g.issuer) {
                &mut retired_issuers
            } else {
                &mut retiring_issuers
            };
            if !list.contains(&g.issuer) {
                list.push(g.issuer.clone());
            }
        }
        let next_issuer = progress
            .filter(|p| p.issuer != current.issuer)
            .map(|p| p.issuer.clone());

        let recent = |last: jiff::Timestamp| latest.duration_since(last) <= window.signed();
        let mut keys: Vec<(String, KeyState)> = self
            .keys
            .iter()
            .filter_map(|k| {
                let signed = self.generations.iter().any(|g| g.key_id == k.key_id);
                let state = if k.key_id == current.key_id {
                    KeyState::Signing
                } else if progress.is_some_and(|p| p.key_id == k.key_id) || !signed {
                    // Listed once, never signed, gone: nothing to follow.
                    if !recent(k.last_seen) {
                        return None;
                    }
                    KeyState::Staged
                } else if retired(RetiredKind::Key, &k.key_id)
                    || (self.keys_as_schema_1 && !recent(k.last_seen))
                {
                    KeyState::Retired
                } else {
                    KeyState::Retiring
                };
                Some((k.key_id.clone(), state))
            })
            .collect();
        keys.sort();

        let switches = by_number
            .iter()
            .map(|g| SwitchTimes {
                number: g.number,
                issuer: g.issuer.clone(),
                key_id: g.key_id.clone(),
                started: g.first_seen.as_second(),
                completed: g.completed.map(|c| c.as_second()),
            })
            .collect();
        let retirements = self
            .retirements
            .iter()
            .map(|r| Retired {
                kind: r.kind.as_str(),
                name: r.name.clone(),
                at: r.at.as_second(),
                source: r.source.as_str(),
            })
            .collect();
        let candidate_issuers = self
            .accepted_issuers
            .iter()
            .flatten()
            .filter(|a| !self.generations.iter().any(|g| g.issuer == **a))
            .cloned()
            .collect();
        Some(Discovered {
            generation: Generation::new(current.number, &current.issuer, &current.key_id),
            retiring_issuers,
            retired_issuers,
            next_issuer,
            keys,
            switches,
            retirements,
            candidate_issuers,
            observed_at: latest.as_second(),
        })
    }
}
