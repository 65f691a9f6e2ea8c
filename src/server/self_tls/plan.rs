//! What the rotation does next, decided from the Secret's PKI, the clock,
//! this replica's names and the caBundles the webhook configurations carry.
//! Pure: every replica runs the same decision on what it reads, and the one
//! whose write lands first takes the step; the others read the result and
//! find nothing left to do. No leader is needed because every step is
//! decided from stored facts (the PKI and two timestamps in the Secret), not
//! from what a replica remembers.
//!
//! A CA rotation is three steps, each taken only when the previous one is
//! known to have reached everyone who must see it:
//!
//! 1. **Stage**: the CA expires within `--ca-renew-before`. A new CA joins
//!    the bundle but signs nothing; the replicas publish the bundle to the
//!    webhook configurations. Once every caBundle carries the new CA the
//!    moment is recorded (**Published**).
//! 2. **Switch**: the new CA has been in every caBundle for `--ca-overlap`,
//!    so every API server has loaded it. It signs a new serving
//!    certificate, which every replica serves on its next watch event; the
//!    old CA stays in the bundle.
//! 3. **Drop**: `--ca-overlap` after the switch every replica serves the new
//!    certificate; the old CA leaves the bundle.
//!
//! The serving certificate is renewed by the signing CA before it expires
//! (`--cert-renew-before`), which changes no bundle.

use super::{
    super::issue,
    SelfTlsError,
    pki::{self, Cert, Keyed, Pki},
};

/// The lifetimes and margins, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    pub ca_lifetime: i64,
    pub ca_renew_before: i64,
    pub cert_lifetime: i64,
    pub cert_renew_before: i64,
    pub overlap: i64,
}

/// What a decision is taken on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    pub now: i64,
    /// The names this replica is called by.
    pub names: &'a [String],
    pub timing: Timing,
    /// Every webhook's caBundle, as last read from both configurations;
    /// None when unknown (not read yet, unreadable, or one is missing).
    pub bundles: Option<&'a [Vec<u8>]>,
}

impl Context<'_> {
    /// Whether every caBundle carries `ca`; None when they are unknown.
    fn carried(&self, ca: &Cert) -> Option<bool> {
        self.bundles
            .map(|all| !all.is_empty() && all.iter().all(|b| pki::contains(b, ca)))
    }

    /// When a certificate `ca` signs now expires: after its lifetime, but
    /// never after the CA, whose successor re-issues it anyway.
    fn cert_not_after(&self, ca: &Cert) -> i64 {
        (self.now + self.timing.cert_lifetime).min(ca.not_after)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// No PKI yet: a CA and a serving certificate it signed.
    Create,
    /// The CA has expired (everything was off for longer than
    /// `--ca-renew-before`): a new one at once, since nothing that trusts
    /// only the old one can connect anyway.
    Replace,
    /// The serving certificate does not cover this replica's names, was not
    /// signed by the signing CA, or has expired: a new one.
    Reissue,
    /// The serving certificate expires within `--cert-renew-before`.
    Renew,
    /// Rotation, step 1.
    Stage,
    /// Every caBundle carries the staged CA: the overlap starts.
    Published,
    /// A caBundle was found without the staged CA (the configuration was
    /// replaced): the overlap starts again once it is back.
    Unpublished,
    /// Rotation, step 2.
    Switch,
    /// Rotation, step 3.
    Drop,
}

impl Step {
    /// The metric label and log word.
    pub(super) const fn as_str(self) -> &'static str {
        match self {
            Step::Create => "create",
            Step::Replace => "replace-expired",
            Step::Reissue => "reissue",
            Step::Renew => "renew",
            Step::Stage => "stage",
            Step::Published => "published",
            Step::Unpublished => "unpublished",
            Step::Switch => "switch",
            Step::Drop => "drop",
        }
    }
}

/// The step due now, if any.
pub(crate) fn due(pki: Option<&Pki>, ctx: &Context<'_>) -> Option<Step> {
    let Some(pki) = pki else {
        return Some(Step::Create);
    };
    let now = ctx.now;
    let timing = ctx.timing;
    if pki.active.cert.not_after <= now {
        return Some(Step::Replace);
    }
    let serving = &pki.serving.cert;
    if !serving.covers(ctx.names)
        || !serving.issued_by(&pki.active.cert)
        || serving.not_after <= now
    {
        return Some(Step::Reissue);
    }
    if serving.not_after - now < timing.cert_renew_before
        && ctx.cert_not_after(&pki.active.cert) > serving.not_after
    {
        return Some(Step::Renew);
    }
    if pki.previous.is_some() {
        // Without the moment of the switch (edited by hand) nothing tells
        // how long the new certificate has been served: drop at once.
        let switched = pki.switched_at.unwrap_or(i64::MIN);
        return (now >= switched.saturating_add(timing.overlap)).then_some(Step::Drop);
    }
    if let Some(next) = &pki.next {
        return match (pki.next_published_at, ctx.carried(&next.cert)) {
            (None, Some(true)) => Some(Step::Published),
            (Some(_), Some(false)) => Some(Step::Unpublished),
            (Some(at), Some(true)) if now >= at.saturating_add(timing.overlap) => {
                Some(Step::Switch)
            }
            _ => None,
        };
    }
    (pki.active.cert.not_after - now < timing.ca_renew_before).then_some(Step::Stage)
}

/// The PKI after `step`.
pub(crate) fn apply(step: Step, pki: Option<&Pki>, ctx: &Context<'_>) -> Result<Pki, SelfTlsError> {
    let now = ctx.now;
    let fresh = || -> Result<Pki, SelfTlsError> {
        let ca = new_ca(ctx)?;
        let serving = new_serving(&ca, ctx.names.to_vec(), ctx)?;
        Ok(Pki {
            active: ca,
            serving,
            next: None,
            previous: None,
            next_published_at: None,
            switched_at: None,
        })
    };
    let Some(pki) = pki else {
        return fresh();
    };
    let mut next = pki.clone();
    match step {
        Step::Create | Step::Replace => return fresh(),
        Step::Reissue => {
            // Keep the names of the certificate being replaced: during a
            // rollout that changes the names, replicas of both versions
            // run, and each must find its own names covered.
            let mut names = ctx.names.to_vec();
            if pki.serving.cert.issued_by(&pki.active.cert) {
                for n in &pki.serving.cert.names {
                    if !names.contains(n) {
                        names.push(n.clone());
                    }
                }
            }
            next.serving = new_serving(&pki.active, names, ctx)?;
        }
        Step::Renew => next.serving = new_serving(&pki.active, ctx.names.to_vec(), ctx)?,
        Step::Stage => next.next = Some(new_ca(ctx)?),
        Step::Published => next.next_published_at = Some(now),
        Step::Unpublished => next.next_published_at = None,
        Step::Switch => {
            let Some(incoming) = pki.next.clone() else {
                return Ok(next);
            };
            next.serving = new_serving(&incoming, ctx.names.to_vec(), ctx)?;
            next.previous = Some(pki.active.cert.clone());
            next.active = incoming;
            next.next = None;
            next.next_published_at = None;
            next.switched_at = Some(now);
        }
        Step::Drop => {
            next.previous = None;
            next.switched_at = None;
        }
    }
    Ok(next)
}

fn new_ca(ctx: &Context<'_>) -> Result<Keyed, SelfTlsError> {
    let issued = issue::ca(ctx.now, ctx.now + ctx.timing.ca_lifetime).map_err(|source| {
        SelfTlsError::Issue {
            what: "a CA",
            source,
        }
    })?;
    Keyed::of(&issued).map_err(SelfTlsError::Issued)
}

fn new_serving(ca: &Keyed, names: Vec<String>, ctx: &Context<'_>) -> Result<Keyed, SelfTlsError> {
    let issued = issue::serving(&ca.issued(), &names, ctx.now, ctx.cert_not_after(&ca.cert))
        .map_err(|source| SelfTlsError::Issue {
            what: "a serving certificate",
            source,
        })?;
    Keyed::of(&issued).map_err(SelfTlsError::Issued)
}

#[cfg(test)]
mod tests;
