//! The runtime's state: the configuration in force, which is the file's
//! combined with what discovery has found. Reviews read only the combined
//! value, one atomic load; the file watch ([`config_watch`]) and discovery
//! each replace their half and the combination is worked out again off the
//! hot path. `config` is the grammar of the file; this room is what a
//! running webhook does with it.

mod config_watch;

pub(crate) use config_watch::watch as watch_config_file;

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::{
    config::Config,
    metrics::{
        GenerationLabels, IssuerLabels, KeyLabels, Metrics, NumberLabels, RetirementLabels,
        Timeline,
    },
    state::{Discovered, KeyState},
};

pub(crate) struct Live {
    file: ArcSwap<Config>,
    discovered: ArcSwapOption<Discovered>,
    effective: Arc<ArcSwap<Config>>,
    /// Serialises recombination, so that a slow writer never stores a
    /// combination older than one already stored.
    combine: Mutex<()>,
    /// Whether a discovery has been combined yet.
    combined_once: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Live {
    pub(crate) fn new(file: Config, metrics: Arc<Metrics>) -> Arc<Self> {
        let live = Arc::new(Self {
            effective: Arc::new(ArcSwap::from_pointee(file.clone())),
            file: ArcSwap::from_pointee(file),
            discovered: ArcSwapOption::empty(),
            combine: Mutex::new(()),
            combined_once: AtomicBool::new(false),
            metrics,
        });
        live.record(&live.effective.load(), None);
        live
    }

    /// What reviews read.
    pub(crate) fn effective(&self) -> Arc<ArcSwap<Config>> {
        self.effective.clone()
    }

    pub(crate) fn file(&self) -> Arc<Config> {
        self.file.load_full()
    }

    pub(crate) fn set_file(&self, file: Config) {
        self.file.store(Arc::new(file));
        self.recombine();
    }

    pub(crate) fn set_discovered(&self, found: Discovered) {
        if self.discovered.load().as_deref() == Some(&found) {
            return;
        }
        self.discovered.store(Some(Arc::new(found)));
        self.recombine();
    }

    fn recombine(&self) {
        // A poisoned lock only means another recombination panicked; the
        // values it guards are atomics, so going on is safe.
        let _one_at_a_time = self.combine.lock().unwrap_or_else(|e| e.into_inner());
        let file = self.file.load();
        let found = self.discovered.load();
        let next = match found.as_deref() {
            Some(found) => file.with_discovered(found),
            None => Config::clone(&file),
        };
        // Staged and retired keys change no rule's input, only the metrics.
        self.record(&next, found.as_deref());
        let first_discovery = found.is_some() && !self.combined_once.swap(true, Ordering::AcqRel);
        let before = self.effective.load();
        if **before == next {
            return;
        }
        let changes = enforcement_changes(&before, &next);
        if first_discovery {
            // Replacing the static generation at start-up is the plan, not
            // news; later changes are.
            tracing::info!(
                changes = %changes.join("; "),
                "generation discovered"
            );
        } else if !changes.is_empty() {
            tracing::warn!(
                changes = %changes.join("; "),
                discovered = found.is_some(),
                "what is stamped or enforced changed"
            );
        }
        self.effective.store(Arc::new(next));
    }

    fn record(&self, config: &Config, found: Option<&Discovered>) {
        let m = &self.metrics;
        let g = &config.generation;
        m.generation
            .set(i64::try_from(g.number).unwrap_or(i64::MAX));
        m.generation_info.clear();
        m.generation_info
            .get_or_create(&GenerationLabels {
                issuer: g.issuer.clone(),
                key_id: g.key_id.clone(),
            })
            .set(1);
        m.rotation_issuers.clear();
        let r = &config.rotation;
        let issuer = |state: &'static str, issuer: &str| {
            m.rotation_issuers
                .get_or_create(&IssuerLabels {
                    state,
                    issuer: issuer.to_owned(),
                })
                .set(1);
        };
        if let Some(next) = &r.next_issuer {
            issuer("planned", next);
        }
        for i in &r.retiring_issuers {
            issuer("retiring", i);
        }
        let retired = found
            .map(|f| f.retired_issuers.as_slice())
            .unwrap_or_default();
        for i in config.declared.retired_issuers.iter().chain(retired) {
            issuer("retired", i);
        }
        m.rotation_keys.clear();
        let key = |state: KeyState, key_id: &str| {
            m.rotation_keys
                .get_or_create(&KeyLabels {
                    state: state.as_str(),
                    key_id: key_id.to_owned(),
                })
                .set(1);
        };
        if !g.key_id.is_empty() {
            key(KeyState::Signing, &g.key_id);
        }
        for k in &r.retiring_key_ids {
            key(KeyState::Retiring, k);
        }
        for (k, state) in found.map(|f| f.keys.as_slice()).unwrap_or_default() {
            if matches!(state, KeyState::Staged | KeyState::Retired) {
                key(*state, k);
            }
        }
        for candidate in found
            .map(|f| f.candidate_issuers.as_slice())
            .unwrap_or_default()
        {
            // A candidate that is planned (declared, or a switch under way)
            // is shown as planned only.
            if r.next_issuer.as_ref() != Some(candidate) {
                issuer("candidate", candidate);
            }
        }
        if let Some(found) = found {
            record_timeline(&m.timeline, found);
        }
    }
}

/// The switches and retirements of the ledger, as timestamps.
fn record_timeline(t: &Timeline, found: &Discovered) {
    t.switch_started.clear();
    t.switch_completed.clear();
    for s in &found.switches {
        let labels = NumberLabels {
            generation: s.number.to_string(),
        };
        t.switch_started.get_or_create(&labels).set(s.started);
        if let Some(done) = s.completed {
            t.switch_completed.get_or_create(&labels).set(done);
        }
    }
    t.retirement.clear();
    for r in &found.retirements {
        t.retirement
            .get_or_create(&RetirementLabels {
                kind: r.kind,
                name: r.name.clone(),
                source: r.source,
            })
            .set(r.at);
    }
}

/// What a change does to the stamp or the enforcement, in words: an
/// operator must never learn from a denied deploy that a rotation vanished.
pub(crate) fn enforcement_changes(before: &Config, next: &Config) -> Vec<String> {
    let mut changes = Vec::new();
    let (b, n) = (&before.generation, &next.generation);
    if (b.number, &b.issuer, &b.key_id) != (n.number, &n.issuer, &n.key_id) {
        changes.push(format!(
            "generation {} ({}, key {:?}) -> {} ({}, key {:?})",
            b.number, b.issuer, b.key_id, n.number, n.issuer, n.key_id
        ));
    }
    let (b, n) = (&before.rotation, &next.rotation);
    if b.declared() && !n.declared() {
        changes.push(format!(
            "rotation over (was retiring issuers {:?}, keys {:?})",
            b.retiring_issuers, b.retiring_key_ids
        ));
    } else if (&b.retiring_issuers, &b.retiring_key_ids)
        != (&n.retiring_issuers, &n.retiring_key_ids)
    {
        changes.push(format!(
            "retiring issuers {:?} -> {:?}, keys {:?} -> {:?}",
            b.retiring_issuers, n.retiring_issuers, b.retiring_key_ids, n.retiring_key_ids
        ));
    }
    if b.next_issuer != n.next_issuer {
        changes.push(format!(
            "planned issuer {:?} -> {:?}",
            b.next_issuer, n.next_issuer
        ));
    }
    if before.policy.mode != next.policy.mode {
        changes.push(format!(
            "mode {:?} -> {:?}",
            before.policy.mode, next.policy.mode
        ));
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_to_the_stamp_or_enforcement_are_named() {
        let rotating = Config::parse(
            "generation: {static: {number: 2, issuer: https://a, keyId: k2}}\nrotation: {retiringKeyIds: [k1]}\n",
        )
        .unwrap();
        let same_but_grace = Config::parse(
            "generation: {static: {number: 2, issuer: https://a, keyId: k2}}\nrotation: {retiringKeyIds: [k1], graceSeconds: 60}\n",
        )
        .unwrap();
        assert!(enforcement_changes(&rotating, &same_but_grace).is_empty());
        let dropped = Config::parse(
            "generation: {static: {number: 1, issuer: https://a, keyId: k2}}\nmode: audit\n",
        )
        .unwrap();
        let changes = enforcement_changes(&rotating, &dropped);
        assert_eq!(changes.len(), 3, "{changes:?}");
        assert!(changes[0].starts_with("generation 2"), "{changes:?}");
        assert!(
            changes[1].contains("rotation over") && changes[1].contains("k1"),
            "{changes:?}"
        );
        assert!(changes[2].contains("Enforce -> Audit"), "{changes:?}");
    }
}
