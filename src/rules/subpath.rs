//! `token-subpath`: kubelet never updates files mounted with `subPath` or
//! `subPathExpr`, so a token mounted that way is frozen at container start.

use super::{Context, Finding, RuleId, legacy, legacy::legacy_token_files};
use crate::object::{MountView, PodSpecRef, VolumeView};

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
            let mut carried = tokens_under_mount(v, m, ctx, ns);
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
