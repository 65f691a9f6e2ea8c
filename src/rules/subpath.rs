//! `token-subpath`: kubelet never updates files mounted with `subPath` or
//! `subPathExpr`, so a token mounted that way is frozen at container start.

use super::{Context, Finding, RuleId, legacy, legacy::legacy_token_files};
use crate::object::{ContainerView, MountView, PodSpecRef, VolumeView};

#[derive(Default)]
struct Carried {
    bound: bool,
    legacy: bool,
}

pub(super) fn check(pod: &PodSpecRef<'_, '_>, ctx: &Context<'_>, ns: &str, out: &mut Vec<Finding>) {
    for (field, ci, c) in pod.containers() {
        for (mi, m) in c.volume_mounts.iter().enumerate() {
            if m.sub_path.is_none() && m.sub_path_expr.is_none() {
                continue;
            }
            let Some(v) = pod.volume(&m.name) else {
                continue;
            };
            let tokens = tokens_under_mount(v, m, ctx, ns);
            if !tokens.bound && !tokens.legacy {
                if copied_token_path(c, &m.mount_path) {
                    out.push(copied(
                        format!("{}.{field}[{ci}].volumeMounts[{mi}]", pod.path),
                        format!("container \"{}\"", c.name),
                        m,
                    ));
                }
                continue;
            }
            let mut carried = tokens;
            // A frozen legacy token still verifies after an issuer change.
            carried.legacy &= legacy::at_risk(ctx);
            if !carried.bound && !carried.legacy {
                continue;
            }
            out.push(finding(
                ctx,
                &carried,
                format!("{}.{field}[{ci}].volumeMounts[{mi}]", pod.path),
                format!("container \"{}\"", c.name),
                m,
            ));
        }
    }
}

/// Which tokens the mount exposes. A `subPath` that selects another file of
/// the volume (`ca.crt` of kube-api-access, say) exposes none; a
/// `subPathExpr` cannot be resolved before the pod runs, so it counts.
fn tokens_under_mount(
    v: &VolumeView<'_>,
    m: &MountView<'_>,
    ctx: &Context<'_>,
    ns: &str,
) -> Carried {
    let covers = |token_file: &str| match m.sub_path.as_deref() {
        _ if m.sub_path_expr.is_some() => true,
        Some(sub) => {
            let sub = sub.trim_matches('/');
            sub.is_empty()
                || token_file == sub
                || token_file
                    .strip_prefix(sub)
                    .is_some_and(|rest| rest.starts_with('/'))
        }
        None => false,
    };
    Carried {
        bound: v.projected.iter().any(|p| {
            p.sources
                .iter()
                .filter_map(|src| src.service_account_token.as_ref())
                .any(|t| covers(&t.path))
        }),
        legacy: legacy_token_files(v, ctx, ns).any(|(_, file)| covers(file)),
    }
}

fn finding(
    ctx: &Context<'_>,
    carried: &Carried,
    path: String,
    subject: String,
    m: &MountView<'_>,
) -> Finding {
    let r = ctx.rotation;
    let certain = (carried.bound && r.declared()) || (carried.legacy && r.key_retiring());
    let what = match (carried.bound, carried.legacy) {
        (true, true) => "a projected service-account token and a legacy token Secret",
        (true, false) => "a projected service-account token",
        _ => "a legacy service-account token Secret",
    };
    let when = if certain && carried.bound && r.issuer_retiring() {
        format!(
            "it dies when issuer {} is retired",
            r.retiring_issuers.join(", ")
        )
    } else if certain {
        format!(
            "it dies when signing key {} is retired",
            r.retiring_key_ids.join(", ")
        )
    } else if carried.bound {
        "it dies when it expires or when its issuer or signing key is rotated".to_owned()
    } else {
        "it dies when its signing key is rotated".to_owned()
    };
    let how = match (m.sub_path.as_deref(), m.sub_path_expr.as_deref()) {
        (_, Some(expr)) => format!("subPathExpr \"{expr}\""),
        (Some(sub), None) => format!("subPath \"{sub}\""),
        (None, None) => String::new(),
    };
    Finding {
        rule: RuleId::TokenSubpath,
        certain,
        path,
        subject,
        detail: format!("{}:{}", m.name, m.mount_path),
        message: format!(
            "mounts {what} from volume \"{}\" with {how} at {}. Kubelet never updates subPath mounts, so the token is frozen at container start; {when}. Fix: mount the volume without subPath and read the token from that directory.",
            m.name, m.mount_path
        ),
        short: "never refreshed; mount without subPath",
    }
}

/// Where kubelet puts the token of the auto-mounted kube-api-access volume,
/// and so where programs look for one.
const STANDARD_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// Whether `path` is where the container reads a service-account token:
/// the standard path, or one an argument such as `--token-path` names.
fn copied_token_path(c: &ContainerView<'_>, path: &str) -> bool {
    let path = path.trim_end_matches('/');
    if path == STANDARD_TOKEN_PATH {
        return true;
    }
    let mut args = c.command.iter().chain(&c.args).map(|a| &**a);
    while let Some(arg) = args.next() {
        let Some(flag) = arg.strip_prefix('-') else {
            continue;
        };
        let (name, value) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (flag, None),
        };
        let name = name
            .trim_start_matches('-')
            .to_ascii_lowercase()
            .replace('_', "-");
        if !(name.ends_with("token-path") || name.ends_with("token-file")) {
            continue;
        }
        let value = match value {
            Some(v) => Some(v),
            None => args.next(),
        };
        if value.is_some_and(|v| v.trim_end_matches('/') == path) {
            return true;
        }
    }
    false
}

/// A file mounted by subPath where a token is read, from a volume that
/// carries no service-account token (an emptyDir, a hostPath, a ConfigMap,
/// an ordinary Secret): a token copied out of a Secret by hand or by an
/// init container. Nobody refreshes it and it dies with its key, but what
/// it is cannot be seen, so it is a hazard under any rotation.
fn copied(path: String, subject: String, m: &MountView<'_>) -> Finding {
    Finding {
        rule: RuleId::TokenSubpath,
        certain: false,
        path,
        subject,
        detail: format!("{}:{}", m.name, m.mount_path),
        message: format!(
            "mounts a file of volume \"{}\", which carries no service-account token, by subPath at {}, where a token is read: a token copied there is frozen for the pod's life, never refreshed, and dies with its issuer or signing key. Fix: read the token from a projected serviceAccountToken volume (the auto-mounted kube-api-access volume is one) mounted without subPath.",
            m.name, m.mount_path
        ),
        short: "copied token: use a projected token",
    }
}
