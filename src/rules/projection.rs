//! Rules about projected serviceAccountToken sources that only matter while
//! a rotation is declared: `refresh-exceeds-grace`,
//! `audience-retiring-issuer` and `federated-audience-untrusted`.

use super::{
    Context, Finding, RuleId, consumer,
    facts::{DEFAULT_EXPIRATION_SECONDS, refresh_interval_seconds},
    federated_party,
};
use crate::object::{PodSpecRef, TokenProjectionView};

pub(super) fn check(pod: &PodSpecRef<'_, '_>, ctx: &Context<'_>, ns: &str, out: &mut Vec<Finding>) {
    if !ctx.rotation.declared() {
        return;
    }
    for (vi, v) in pod.spec.volumes.iter().enumerate() {
        let Some(p) = &v.projected else { continue };
        for (si, src) in p.sources.iter().enumerate() {
            let Some(t) = &src.service_account_token else {
                continue;
            };
            let at = Source {
                path: || {
                    format!(
                        "{}.volumes[{vi}].projected.sources[{si}].serviceAccountToken",
                        pod.path
                    )
                },
                volume: &v.name,
                token: t,
            };
            refresh(&at, ctx, out);
            if let Some(audience) = t.audience.as_deref() {
                retiring_audience(&at, audience, ctx, out);
                federated(pod, &at, audience, ctx, ns, out);
            }
        }
    }
}

struct Source<'s, F> {
    path: F,
    volume: &'s str,
    token: &'s TokenProjectionView<'s>,
}

fn refresh<F: Fn() -> String>(at: &Source<'_, F>, ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let grace = i64::try_from(ctx.rotation.grace_seconds).unwrap_or(i64::MAX);
    let expiration = at
        .token
        .expiration_seconds
        .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
    let interval = refresh_interval_seconds(expiration);
    if interval <= grace {
        return;
    }
    // kubelet refreshes at 80% of the lifetime; the API server's minimum is 600s.
    let longest_fitting = grace.saturating_mul(5) / 4;
    let fix = if longest_fitting >= 600 {
        format!(
            "set expirationSeconds to at most {longest_fitting}, or lengthen rotation.graceSeconds to at least {interval}"
        )
    } else {
        format!("lengthen rotation.graceSeconds to at least {interval}")
    };
    out.push(Finding {
        rule: RuleId::RefreshExceedsGrace,
        certain: false,
        path: (at.path)(),
        subject: format!("volume \"{}\"", at.volume),
        detail: format!("{}/{}", at.volume, &*at.token.path),
        message: format!(
            "projects a token with expirationSeconds {expiration}, which kubelet refreshes only every {interval}s, longer than the declared grace of {grace}s. A token minted just before the switch can still carry the retiring issuer or key when it is retired. Fix: {fix}."
        ),
        short: "refresh slower than rotation grace",
    });
}

fn retiring_audience<F: Fn() -> String>(
    at: &Source<'_, F>,
    audience: &str,
    ctx: &Context<'_>,
    out: &mut Vec<Finding>,
) {
    if !ctx.rotation.audience_retires(audience) {
        return;
    }
    out.push(Finding {
        rule: RuleId::AudienceRetiringIssuer,
        certain: true,
        path: (at.path)(),
        subject: format!("volume \"{}\"", at.volume),
        detail: audience.to_owned(),
        message: format!(
            "requests tokens for audience \"{audience}\", an issuer URL that is retiring. The API server accepts only its --api-audiences, which default to its issuers, so these tokens are rejected once \"{audience}\" is retired. Fix: use the new issuer \"{}\" as the audience, or omit audience to get the API server's own.",
            ctx.new_issuer
        ),
        short: "audience dies with the old issuer",
    });
}

/// A federated party rejects tokens once their issuer is new to it and,
/// during a key rotation, may reject the new key: it fetches the issuer's
/// JWKS from wherever discovery is published, and where that is a static
/// copy (kOps writes it to a bucket) it learns the new key only once the
/// copy is republished. Whether the copy is static cannot be seen from
/// here, so that is a hazard until the operator says the key is published.
fn federated<F: Fn() -> String>(
    pod: &PodSpecRef<'_, '_>,
    at: &Source<'_, F>,
    audience: &str,
    ctx: &Context<'_>,
    ns: &str,
    out: &mut Vec<Finding>,
) {
    let r = ctx.rotation;
    // Nothing for a federated party to reject: no new issuer, and no new
    // key that may be missing from a published JWKS.
    let key_unpublished = r.key_retiring() && !r.new_key_published;
    if !r.issuer_retiring() && !key_unpublished {
        return;
    }
    // The audience names the party, or else a cloud SDK in the pod reads
    // the token: the message says which.
    let (party, read_by) = match federated_party(audience, r) {
        Some(party) => (party.describe(), String::new()),
        None => match consumer::reader(pod, ctx, ns, at.volume, &at.token.path) {
            Some((party, how)) => (party.describe(), format!(" (read through {how})")),
            None => return,
        },
    };
    let party = format!("{party}{read_by}");
    let issuer = ctx.new_issuer;
    let (certain, message, short) = if r.issuer_retiring()
        && !r.trusted_audiences.iter().any(|p| p.matches(audience))
    {
        (
            true,
            format!(
                "requests tokens for audience \"{audience}\", which {party} validates through the issuer's OIDC discovery. It rejects tokens of the new issuer \"{issuer}\" from the moment that issuer signs them, until the issuer is registered there. Fix: register the new issuer with {party}, then list the audience in rotation.trustedAudiences."
            ),
            "party does not trust new issuer yet",
        )
    } else if r.key_retiring() && !r.new_key_published {
        (
            false,
            format!(
                "requests tokens for audience \"{audience}\", which {party} validates against the JWKS published with the issuer \"{issuer}\"'s discovery. Where that is a static copy (kOps publishes it to a bucket), tokens signed with the new key are rejected until the copy is republished with it. Fix: republish the discovery documents and JWKS with the new key, then set rotation.newKeyPublished: true."
            ),
            "new key may not be published yet",
        )
    } else {
        return;
    };
    out.push(Finding {
        rule: RuleId::FederatedAudienceUntrusted,
        certain,
        path: (at.path)(),
        subject: format!("volume \"{}\"", at.volume),
        detail: audience.to_owned(),
        message,
        short,
    });
}
