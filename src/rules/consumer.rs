//! Federation recognised by its consumer rather than its audience. IRSA and
//! Azure workload identity accept custom audiences; what makes a projected
//! token federated is a cloud SDK in the same container reading it, which
//! it does from the file an environment variable names.

use super::FederatedParty;
use crate::object::{MountView, PodSpecRef};

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
    volume: &str,
    token_path: &str,
) -> Option<(FederatedParty<'static>, String)> {
    for (_, _, c) in pod.containers() {
        for m in c.volume_mounts.iter().filter(|m| *m.name == *volume) {
            let Some(file) = token_file(m, token_path) else {
                continue;
            };
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
