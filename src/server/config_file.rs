//! The `--config` file: read at start-up and swapped into the running
//! webhook whenever its content changes. A file that does not parse is
//! reported and the previous configuration stays in force, so that a typo in
//! a ConfigMap never takes the webhook down.

use std::{path::Path, path::PathBuf, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;

use crate::{
    config::{Config, ConfigError},
    metrics::{Metrics, ResultLabels},
    reload,
};

/// The parsed file and the bytes it was parsed from.
pub fn load(path: &Path) -> Result<(Config, Vec<u8>), ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let config = parse(path, &bytes)?;
    Ok((config, bytes))
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Config, ConfigError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ConfigError::Read {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    Config::parse(text)
}

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
                Some(bytes) => parse(&path, bytes),
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
                    generation = next.generation.number,
                    mode = ?next.mode,
                    rotation_declared = next.rotation.declared(),
                    "config reloaded"
                );
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
