//! The `--config` file in a running webhook: swapped in whenever its content
//! changes. A file that does not parse is reported and the previous
//! configuration stays in force, so that a typo in a ConfigMap never takes
//! the webhook down.

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::task::JoinHandle;

use super::{Config, ConfigError, live::Live};
use crate::{
    metrics::{Metrics, ResultLabels},
    reload,
};

/// Polls `path` every `interval` and hands each good new configuration to
/// `live`, which combines it with what discovery found and says what the
/// change does to stamps and enforcement. `seen` is the content already in
/// force.
pub fn watch(
    path: PathBuf,
    seen: Vec<u8>,
    interval: Duration,
    live: Arc<Live>,
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
                tracing::info!(
                    config = %path.display(),
                    static_generation = next.declared.generation.number,
                    mode = ?next.policy.mode,
                    rotation_declared = next.rotation.declared(),
                    "config reloaded"
                );
                live.set_file(next);
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
