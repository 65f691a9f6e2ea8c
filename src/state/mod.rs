//! What the rules judge against: the issuer generation new pods are stamped
//! with and the rotation in progress. Knows neither configuration files nor
//! rules; the configuration and discovery produce these values.

mod discovered;
pub(crate) mod ledger;
mod pattern;

pub(crate) use discovered::{Discovered, KeyState, Retired, SwitchTimes};
pub(crate) use pattern::{Pattern, glob_match};

/// The issuer generation new pods are stamped with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Generation {
    pub number: u64,
    pub issuer: String,
    pub key_id: String,
    /// `number` as a label value, formatted once instead of per review.
    pub label_value: String,
}

impl Generation {
    pub fn new(number: u64, issuer: impl Into<String>, key_id: impl Into<String>) -> Self {
        Self {
            number,
            issuer: issuer.into(),
            key_id: key_id.into(),
            label_value: number.to_string(),
        }
    }
}

/// The rotation in progress. A rotation is declared when something is
/// retiring; everything else only refines it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rotation {
    pub retiring_issuers: Vec<String>,
    pub retiring_key_ids: Vec<String>,
    pub grace_seconds: u64,
    pub api_audiences: Vec<String>,
    pub trusted_audiences: Vec<Pattern>,
    pub federated_audiences: Vec<Pattern>,
    /// The operator's word that the new signing key is in the JWKS that
    /// federated parties fetch (it may be published statically, as kOps
    /// publishes it to a bucket, and then lags the API server's own).
    pub new_key_published: bool,
    /// The issuer the operator plans to switch signing to, while the
    /// current one still signs (the kOps `[old, new]` step). Set only while
    /// it differs from the signing issuer, which is then among
    /// `retiring_issuers`.
    pub next_issuer: Option<String>,
}

impl Rotation {
    pub fn declared(&self) -> bool {
        self.issuer_retiring() || self.key_retiring()
    }

    pub fn issuer_retiring(&self) -> bool {
        !self.retiring_issuers.is_empty()
    }

    pub fn key_retiring(&self) -> bool {
        !self.retiring_key_ids.is_empty()
    }

    /// The issuer new tokens carry once the rotation is through: the planned
    /// one before the switch, the signing one after it.
    pub fn new_issuer<'a>(&'a self, signing: &'a str) -> &'a str {
        self.next_issuer.as_deref().unwrap_or(signing)
    }

    /// Whether an explicit token audience dies when the retiring issuers go.
    /// With `--api-audiences` unset the API server accepts exactly its
    /// issuers as audiences, so a retiring issuer URL stops being one; when
    /// it is set explicitly, only what it lists is accepted.
    pub fn audience_retires(&self, audience: &str) -> bool {
        self.retiring_issuers.iter().any(|i| i == audience)
            && !self.api_audiences.iter().any(|a| a == audience)
    }
}
