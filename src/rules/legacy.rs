//! `legacy-token-env` and `legacy-token-volume`: pods that read a legacy
//! service-account token Secret. Such tokens never expire and are signed by
//! the controller-manager's key, so they die when that key is retired.

use super::{Context, Finding, RuleId, facts::LEGACY_TOKEN_KEY};
use crate::object::{KeyToPathView, PodSpecRef, SecretSource, VolumeView};

pub(super) fn check(pod: &PodSpecRef<'_, '_>, ctx: &Context<'_>, ns: &str, out: &mut Vec<Finding>) {
    if !at_risk(ctx) {
        return;
    }
    env(pod, ctx, ns, out);
    volumes(pod, ctx, ns, out);
}

/// Whether a Secret volume or projection with these `items` exposes the
/// token: all keys when `items` is empty, otherwise only the listed ones.
pub(super) fn token_path<'v>(items: &'v [KeyToPathView<'_>]) -> Option<&'v str> {
    if items.is_empty() {
        return Some(LEGACY_TOKEN_KEY);
    }
    items
        .iter()
        .find(|i| &*i.key == LEGACY_TOKEN_KEY)
        .map(|i| &*i.path)
}

/// The legacy token Secrets whose token the volume exposes, each with the
/// file the token lands in: the one judgement both the volume and the
/// subPath rules rest on.
pub(super) fn legacy_token_files<'v, 'a>(
    v: &'v VolumeView<'a>,
    ctx: &Context<'_>,
    ns: &str,
) -> impl Iterator<Item = (SecretSource<'v, 'a>, &'v str)> {
    v.secret_sources().filter_map(move |s| {
        let file = token_path(s.items)?;
        ctx.secrets.is_legacy_token(ns, s.name).then_some((s, file))
    })
}

/// Whether a legacy token is at risk under what is declared. Legacy tokens
/// carry the issuer `kubernetes/serviceaccount`, which the legacy
/// authenticator never compares with `--service-account-issuer`: a rotation
/// that retires only issuers leaves them working, so they are no risk of
/// it (and must not hold up its retirement). With nothing declared they
/// stay hazards of the next key rotation.
pub(super) fn at_risk(ctx: &Context<'_>) -> bool {
    !ctx.rotation.issuer_retiring() || ctx.rotation.key_retiring()
}

fn retiring_keys(ctx: &Context<'_>) -> String {
    ctx.rotation.retiring_key_ids.join(", ")
}

fn env(pod: &PodSpecRef<'_, '_>, ctx: &Context<'_>, ns: &str, out: &mut Vec<Finding>) {
    for (field, ci, c) in pod.containers() {
        for e in &c.env {
            let Some(r) = e
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
            else {
                continue;
            };
            let (Some(name), Some(key)) = (r.name.as_deref(), r.key.as_deref()) else {
                continue;
            };
            if key != LEGACY_TOKEN_KEY || !ctx.secrets.is_legacy_token(ns, name) {
                continue;
            }
            out.push(env_finding(
                ctx,
                format!("{}.{field}[{ci}].env[{}]", pod.path, e.index),
                format!("container \"{}\"", c.name),
                name,
                &format!("env var {}", e.name),
            ));
        }
        for (fi, f) in c.env_from.iter().enumerate() {
            let Some(name) = f.secret_ref.as_ref().and_then(|r| r.name.as_deref()) else {
                continue;
            };
            if !ctx.secrets.is_legacy_token(ns, name) {
                continue;
            }
            out.push(env_finding(
                ctx,
                format!("{}.{field}[{ci}].envFrom[{fi}]", pod.path),
                format!("container \"{}\"", c.name),
                name,
                "envFrom",
            ));
        }
    }
}

fn env_finding(
    ctx: &Context<'_>,
    path: String,
    subject: String,
    secret: &str,
    how: &str,
) -> Finding {
    let certain = ctx.rotation.key_retiring();
    let when = if certain {
        format!(
            "it stops verifying when signing key {} is retired, and a regenerated Secret never reaches a running container",
            retiring_keys(ctx)
        )
    } else {
        "it stops verifying as soon as its signing key is retired, and a regenerated Secret never reaches a running container".to_owned()
    };
    Finding {
        rule: RuleId::LegacyTokenEnv,
        certain,
        path,
        subject,
        detail: secret.to_owned(),
        message: format!(
            "{how} reads legacy service-account token Secret \"{secret}\". Env vars are set once at container start, so the token is frozen for the pod's life; {when}. Fix: mount a projected serviceAccountToken volume and read the token file on each use. Pods already running keep the old token until they are recreated after the Secret is regenerated."
        ),
        short: "frozen in env; use a projected token",
    }
}

fn volumes(pod: &PodSpecRef<'_, '_>, ctx: &Context<'_>, ns: &str, out: &mut Vec<Finding>) {
    for (vi, v) in pod.spec.volumes.iter().enumerate() {
        for (source, _) in legacy_token_files(v, ctx, ns) {
            let path = match source.projected {
                None => format!("{}.volumes[{vi}]", pod.path),
                Some(si) => format!("{}.volumes[{vi}].projected.sources[{si}].secret", pod.path),
            };
            out.push(volume_finding(ctx, path, &v.name, source.name));
        }
    }
}

fn volume_finding(ctx: &Context<'_>, path: String, volume: &str, secret: &str) -> Finding {
    let when = if ctx.rotation.key_retiring() {
        format!(
            "it stops verifying when signing key {} is retired, and keeps working only if the Secret is regenerated and the application re-reads the file",
            retiring_keys(ctx)
        )
    } else {
        "it stops verifying when its signing key is retired, and keeps working only if the Secret is regenerated and the application re-reads the file".to_owned()
    };
    Finding {
        rule: RuleId::LegacyTokenVolume,
        certain: false,
        path,
        subject: format!("volume \"{volume}\""),
        detail: secret.to_owned(),
        message: format!(
            "mounts legacy service-account token Secret \"{secret}\", a token that never expires and that kubelet never refreshes; {when}. Fix: use a projected serviceAccountToken volume (the auto-mounted kube-api-access volume is one) instead of the Secret."
        ),
        short: "use a projected token instead",
    }
}
