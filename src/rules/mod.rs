//! The rules: pure functions from a pod spec plus what is known of the
//! cluster (the declared rotation, the legacy token Secrets) to findings.
//! The webhook, `check` and later `status` all call [`judge`]. The token
//! behaviour each rule rests on is written down in docs/tokens.md.

mod audience;
mod consumer;
mod finding;
mod id;
mod legacy;
mod projection;
mod secrets;
mod subpath;

pub use audience::{FederatedParty, federated_party};
pub use consumer::{CredentialConfigs, CredentialIndex, NO_CREDENTIALS};
pub use finding::{Finding, MAX_WARNING_CHARS, truncate_chars};
pub use id::RuleId;
pub use secrets::{
    LegacySecrets, SERVICE_ACCOUNT_TOKEN_TYPE, SecretIndex, is_legacy_token_secret,
    legacy_token_selector,
};

use crate::{object::PodSpecRef, state::Rotation};

/// Token facts the rules share (docs/tokens.md explains each).
pub mod facts {
    /// The API server's default for a projection without `expirationSeconds`.
    pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
    /// Kubelet refreshes a token at 80% of its lifetime but at least daily.
    pub const MAX_REFRESH_SECONDS: i64 = 86_400;
    /// The key under which a legacy token Secret holds the token.
    pub const LEGACY_TOKEN_KEY: &str = "token";

    /// Seconds until kubelet replaces a projected token of this lifetime.
    pub fn refresh_interval_seconds(expiration_seconds: i64) -> i64 {
        (expiration_seconds.saturating_mul(4) / 5).min(MAX_REFRESH_SECONDS)
    }
}

/// What the rules may know besides the object itself.
pub struct Context<'a> {
    pub rotation: &'a Rotation,
    /// The issuer new tokens are minted by, named in fixes.
    pub new_issuer: &'a str,
    pub secrets: &'a dyn SecretIndex,
    /// Cloud credential configurations (`external_account`) in ConfigMaps:
    /// known to `check` from its input, unknown to the webhook.
    pub credentials: &'a dyn CredentialIndex,
}

/// Runs every rule over one pod spec, appending findings to `out` so that a
/// review that finds nothing allocates nothing.
pub fn judge(pod: &PodSpecRef<'_, '_>, ctx: &Context<'_>, namespace: &str, out: &mut Vec<Finding>) {
    legacy::check(pod, ctx, namespace, out);
    subpath::check(pod, ctx, namespace, out);
    projection::check(pod, ctx, namespace, out);
}

#[cfg(test)]
mod tests;
