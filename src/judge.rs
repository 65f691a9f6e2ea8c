//! Judging one object against the configuration in force: the single call
//! the webhook, `check` and (to come) `status` make, so that admission, CI
//! and the cluster's verdict can never disagree about an object. Pure: no
//! I/O, no clock; what the rules may know of the cluster (legacy token
//! Secrets, cloud credential configurations) comes in as [`Known`].

use serde::Deserialize;
use serde_json::Value;

use crate::{
    config::Config,
    object::{Kind, ObjectView},
    policy::{self, Origin, Subject, Verdict},
    rules::{CredentialIndex, NO_CREDENTIALS, SecretIndex},
};

/// What the rules may know beyond the object itself.
#[derive(Clone, Copy)]
pub struct Known<'a> {
    pub secrets: &'a dyn SecretIndex,
    pub credentials: &'a dyn CredentialIndex,
}

impl<'a> Known<'a> {
    /// Only legacy token Secrets: what the webhook's watch knows.
    pub fn secrets(secrets: &'a dyn SecretIndex) -> Self {
        Known {
            secrets,
            credentials: &NO_CREDENTIALS,
        }
    }
}

/// Judges `subject`: the meeting point of every path.
#[must_use]
pub fn subject(config: &Config, known: Known<'_>, subject: Subject<'_, '_>) -> Verdict {
    policy::assess(
        &config.policy,
        &config.context_with(known.secrets, known.credentials),
        subject,
    )
}

/// One object read as JSON (from a file, or live from the API server),
/// judged as a submitted CREATE would be.
#[derive(Debug)]
pub struct Judgement {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// The controlling owner, as `Kind/name`, when a controller made it.
    pub owner: Option<String>,
    pub verdict: Verdict,
}

/// Judges `value` if it is of a judged kind (`Ok(None)` otherwise);
/// `default_namespace` stands in for a namespace the object does not name.
/// An object of a judged kind that cannot be read is an error naming why.
pub fn value(
    config: &Config,
    known: Known<'_>,
    value: &Value,
    default_namespace: &str,
) -> Result<Option<Judgement>, String> {
    let field = |key| value.get(key).and_then(Value::as_str).unwrap_or_default();
    let (api_version, kind_name) = (field("apiVersion"), field("kind"));
    let Some(kind) = Kind::from_api_version(api_version, kind_name) else {
        return Ok(None);
    };
    let obj = <ObjectView as Deserialize>::deserialize(value)
        .map_err(|e| format!("not a readable {kind_name}: {e}"))?;
    Ok(Some(view(config, known, kind, &obj, default_namespace)))
}

/// Judges an object already read into its view, as a submitted CREATE
/// would be: what [`value`] does once it has read one, and what `status`
/// does with a list's items read straight from the page's text.
pub fn view(
    config: &Config,
    known: Known<'_>,
    kind: Kind,
    obj: &ObjectView<'_>,
    default_namespace: &str,
) -> Judgement {
    let namespace = obj.namespace_or(default_namespace);
    let origin = Origin::of(obj);
    let owner = match &origin {
        Origin::Controller(owner) => Some(owner.clone()),
        Origin::Submitted => None,
    };
    let verdict = subject(
        config,
        known,
        Subject {
            kind,
            namespace,
            obj,
            old: None,
            origin,
        },
    );
    Judgement {
        kind,
        namespace: namespace.to_owned(),
        name: obj.meta().display_name(),
        owner,
        verdict,
    }
}
