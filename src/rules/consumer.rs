//! Federation recognised by its consumer rather than its audience. IRSA and
//! Azure workload identity accept custom audiences; what makes a projected
//! token federated is a cloud SDK in the same container reading it, which
//! it does from the file an environment variable names, or, for Google,
//! from the file an `external_account` credential configuration names.

use std::collections::HashMap;

use super::{Context, FederatedParty};
use crate::object::{ContainerView, MountView, PodSpecRef};

/// Google's SDKs read the credential configuration this names.
const GOOGLE_CREDENTIALS: &str = "GOOGLE_APPLICATION_CREDENTIALS";

/// `external_account` credential configurations kept in ConfigMaps: the
/// token file each reads (`credential_source.file`).
pub trait CredentialIndex: Send + Sync {
    fn token_file(&self, namespace: &str, config_map: &str, key: &str) -> Option<&str>;
}

/// For the webhook, which keeps no ConfigMaps.
pub struct NoCredentials;

pub static NO_CREDENTIALS: NoCredentials = NoCredentials;

impl CredentialIndex for NoCredentials {
    fn token_file(&self, _: &str, _: &str, _: &str) -> Option<&str> {
        None
    }
}

/// The credential configurations of `check`'s input.
#[derive(Debug, Default)]
pub struct CredentialConfigs {
    files: HashMap<(String, String, String), String>,
}

impl CredentialConfigs {
    /// Records `value` of ConfigMap key `key` if it is an `external_account`
    /// configuration that reads its subject token from a file.
    pub fn insert(&mut self, namespace: &str, config_map: &str, key: &str, value: &str) {
        let Ok(config) = serde_json::from_str::<serde_json::Value>(value) else {
            return;
        };
        if config["type"] != "external_account" {
            return;
        }
        if let Some(file) = config["credential_source"]["file"].as_str() {
            self.files.insert(
                (namespace.to_owned(), config_map.to_owned(), key.to_owned()),
                file.to_owned(),
            );
        }
    }
}

impl CredentialIndex for CredentialConfigs {
    fn token_file(&self, namespace: &str, config_map: &str, key: &str) -> Option<&str> {
        self.files
            .get(&(namespace.to_owned(), config_map.to_owned(), key.to_owned()))
            .map(String::as_str)
    }
}

/// The variables the SDKs read a web-identity token file from.
const READERS: [(&str, FederatedParty<'static>); 2] = [
    ("AWS_WEB_IDENTITY_TOKEN_FILE", FederatedParty::AwsIrsa),
    (
        "AZURE_FEDERATED_TOKEN_FILE",
        FederatedParty::AzureWorkloadIdentity,
    ),
];

/// The party whose SDK reads the token projected at `token_path` of
/// `volume`, and how that was seen: the variable and its container.
pub(super) fn reader(
    pod: &PodSpecRef<'_, '_>,
    ctx: &Context<'_>,
    ns: &str,
    volume: &str,
    token_path: &str,
) -> Option<(FederatedParty<'static>, String)> {
    for (_, _, c) in pod.containers() {
        for m in c.volume_mounts.iter().filter(|m| *m.name == *volume) {
            let Some(file) = token_file(m, token_path) else {
                continue;
            };
            if let Some(how) = google_reader(pod, ctx, ns, c, &file) {
                return Some((FederatedParty::GcpWorkloadIdentityFederation, how));
            }
            for e in &c.env {
                let Some((_, party)) = READERS.iter().find(|(name, _)| **name == *e.name) else {
                    continue;
                };
                if e.value.as_deref().map(|v| v.trim_end_matches('/')) == Some(file.as_str()) {
                    return Some((
                        *party,
                        format!("{} in container \"{}\"", &*e.name, &*c.name),
                    ));
                }
            }
        }
    }
    None
}

/// Where the token file appears in the container: under the mount, or the
/// mount itself when it mounts just that file by subPath.
fn token_file(m: &MountView<'_>, token_path: &str) -> Option<String> {
    let mount = m.mount_path.trim_end_matches('/');
    match m.sub_path.as_deref() {
        None if m.sub_path_expr.is_none() => {
            Some(format!("{mount}/{}", token_path.trim_start_matches('/')))
        }
        Some(sub) if sub.trim_matches('/') == token_path.trim_matches('/') => {
            Some(mount.to_owned())
        }
        _ => None,
    }
}

/// Whether `GOOGLE_APPLICATION_CREDENTIALS` in `c` names a credential
/// configuration, mounted from a ConfigMap, that reads `file`.
fn google_reader(
    pod: &PodSpecRef<'_, '_>,
    ctx: &Context<'_>,
    ns: &str,
    c: &ContainerView<'_>,
    file: &str,
) -> Option<String> {
    let config_path = c
        .env
        .iter()
        .find(|e| *e.name == *GOOGLE_CREDENTIALS)?
        .value
        .as_deref()?;
    for m in &c.volume_mounts {
        let Some(cm) = pod.volume(&m.name).and_then(|v| v.config_map.as_ref()) else {
            continue;
        };
        let Some(name) = cm.name.as_deref() else {
            continue;
        };
        let mount = m.mount_path.trim_end_matches('/');
        // The key the config was read from: the mount itself by subPath,
        // or a file under it, renamed by `items` or named as its key.
        let key = match m.sub_path.as_deref() {
            Some(sub) if config_path == mount => sub,
            Some(_) => continue,
            None => match config_path
                .strip_prefix(mount)
                .and_then(|r| r.strip_prefix('/'))
            {
                Some(rest) => rest,
                None => continue,
            },
        };
        // With `items`, only the listed paths exist in the volume.
        let key = if cm.items.is_empty() {
            key
        } else {
            match cm.items.iter().find(|i| *i.path == *key) {
                Some(item) => &*item.key,
                None => continue,
            }
        };
        if ctx.credentials.token_file(ns, name, key) == Some(file) {
            return Some(format!(
                "{GOOGLE_CREDENTIALS} in container \"{}\", an external_account configuration in ConfigMap \"{name}\"",
                &*c.name
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::SDK_FILE_VARS;

    /// The view keeps only the env vars named there: a reader missing from
    /// it would never be seen.
    #[test]
    fn the_view_keeps_every_variable_read_here() {
        for name in READERS
            .iter()
            .map(|(name, _)| *name)
            .chain([GOOGLE_CREDENTIALS])
        {
            assert!(SDK_FILE_VARS.contains(&name), "{name}");
        }
    }
}
