//! The `--config` file in a running webhook: swapped in whenever its content
//! changes. A file that does not parse is reported and the previous
//! configuration stays in force, so that a typo in a ConfigMap never takes
//! the webhook down.

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::task::JoinHandle;

use super::Live;
use crate::{
    config::{Config, ConfigError},
    metrics::Metrics,
    reload,
};

/// Polls `path` every `interval` and hands each good new configuration to
/// `live`, which combines it with what discovery found and says what the
/// change does to stamps and enforcement. `seen` is the content already in
/// force.
pub(crate) fn watch(
    path: PathBuf,
    seen: Vec<u8>,
    interval: Duration,
    live: Arc<Live>,
    metrics: Arc<Metrics>,
) -> JoinHandle<()> {
    let swap = reload::Swap {
        what: format!("config {}", path.display()),
        paths: vec![path.clone()],
        seen: vec![seen],
        interval,
        results: metrics.config_reloads.clone(),
    };
    let build = |contents: &[Vec<u8>]| match contents.first() {
        Some(bytes) => Config::from_bytes(bytes),
        None => Err(ConfigError::Yaml("no content read".to_owned())),
    };
    swap.spawn(build, move |next: Config| {
        tracing::info!(
            config = %path.display(),
            static_generation = next.declared.generation.number,
            mode = ?next.policy.mode,
            rotation_declared = next.rotation.declared(),
            "config reloaded"
        );
        live.set_file(next);
    })
}

// Here rather than in `config`, which is the file's grammar and reads no
// files on its own.
impl From<reload::ReadError> for ConfigError {
    fn from(e: reload::ReadError) -> Self {
        ConfigError::Read {
            path: e.path,
            source: e.source,
        }
    }
}
