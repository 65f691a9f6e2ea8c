//! The `--config` file in a running webhook: swapped in whenever its content
//! changes. A file that does not parse is reported and the previous
//! configuration stays in force, so that a typo in a ConfigMap never takes
//! the webhook down.

use std::{path::PathBuf, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;

use super::{Config, ConfigError};
use crate::{
    metrics::{Metrics, ResultLabels},
    reload,
};

/// Polls `path` every `interval` and stores each good new configuration in
/// `config`. `seen` is the content already in force.
pub fn watch(
    path: PathBuf,
    seen: Vec<u8>,
    interval: Duration,
    config: Arc<ArcSwap<Config>>,
    metrics: Arc<Metrics>,
) -> JoinHandle<()> {
    reload::spawn(vec![path.clone()], vec![seen], interval, move |read| {
        let parsed = match read {
            Ok(contents) => match contents.first() {
                Some(bytes) => Config::from_bytes(bytes),
                None => Err(ConfigError::Yaml("no content read".to_owned())),
            },
            Err(e) => Err(ConfigError::Read {
                path: e.path,
                source: e.source,
            }),
        };
        let result = match parsed {
            Ok(next) => {
                let before = config.load();
                let changes = enforcement_changes(&before, &next);
                if changes.is_empty() {
                    tracing::info!(
                        config = %path.display(),
                        generation = next.generation.number,
                        mode = ?next.policy.mode,
                        rotation_declared = next.rotation.declared(),
                        "config reloaded"
                    );
                } else {
                    tracing::warn!(
                        config = %path.display(),
                        changes = %changes.join("; "),
                        "config reloaded with a change to what is stamped or enforced"
                    );
                }
                config.store(Arc::new(next));
                "success"
            }
            Err(error) => {
                tracing::error!(config = %path.display(), %error, "config not reloaded; the previous one stays in force");
                "error"
            }
        };
        metrics
            .config_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    })
}

/// What a reload changes about the stamp or the enforcement, in words: an
/// operator must never learn from a denied deploy that a rotation vanished.
fn enforcement_changes(before: &Config, next: &Config) -> Vec<String> {
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
            "rotation dropped (was retiring issuers {:?}, keys {:?})",
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
            changes[1].contains("rotation dropped") && changes[1].contains("k1"),
            "{changes:?}"
        );
        assert!(changes[2].contains("Enforce -> Audit"), "{changes:?}");
    }
}
