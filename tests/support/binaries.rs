//! Where the control-plane binaries are: the KUBE_APISERVER,
//! KUBE_CONTROLLER_MANAGER, ETCD and HELM environment variables when all are set,
//! otherwise what scripts/build-control-plane prints (it builds once, then
//! answers from its cache).

use std::{path::PathBuf, process::Command, sync::OnceLock};

#[derive(Debug, Clone)]
pub struct Binaries {
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub etcd: PathBuf,
    pub helm: PathBuf,
}

const VARS: [&str; 4] = ["KUBE_APISERVER", "KUBE_CONTROLLER_MANAGER", "ETCD", "HELM"];

/// The binaries, found once per test process. A failure fails every test
/// that needs them, with the build script's own error output: an e2e test
/// that silently skips would hide a broken setup.
pub fn get() -> &'static Binaries {
    static BINARIES: OnceLock<Result<Binaries, String>> = OnceLock::new();
    match BINARIES.get_or_init(find) {
        Ok(b) => b,
        Err(e) => panic!("control-plane binaries are not available:\n{e}"),
    }
}

fn find() -> Result<Binaries, String> {
    let from_env: Vec<Option<PathBuf>> = VARS
        .iter()
        .map(|v| {
            std::env::var_os(v)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        })
        .collect();
    if let [Some(a), Some(c), Some(e), Some(h)] = &from_env[..] {
        return Ok(Binaries {
            kube_apiserver: a.clone(),
            kube_controller_manager: c.clone(),
            etcd: e.clone(),
            helm: h.clone(),
        });
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/build-control-plane");
    let out = Command::new(&script)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}):\n{stderr}",
            script.display(),
            out.status
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = |var: &str| -> Result<PathBuf, String> {
        let value = stdout
            .lines()
            .find_map(|l| l.strip_prefix(var)?.strip_prefix('='))
            .ok_or_else(|| format!("{} printed no {var}=; stderr:\n{stderr}", script.display()))?;
        // The script prints shell-quoted values (printf %q); cache paths
        // need no quoting, and anything else is refused rather than guessed.
        if value.contains(['\\', '\'', '"', '$']) {
            return Err(format!(
                "{var} is shell-quoted, which is not supported: {value}"
            ));
        }
        Ok(PathBuf::from(value))
    };
    Ok(Binaries {
        kube_apiserver: path(VARS[0])?,
        kube_controller_manager: path(VARS[1])?,
        etcd: path(VARS[2])?,
        helm: path(VARS[3])?,
    })
}
