//! Configuration: parses and validates the YAML file into what the rules
//! judge against (`crate::state`) and the policy that decides
//! (`crate::policy::Policy`). Owns loading the file and watching it.

#[cfg(any(test, feature = "test-support"))]
pub mod fields;
mod file;

use std::path::{Path, PathBuf};

use crate::{
    policy::{Action, Mode, Policy},
    rules::{Context, CredentialIndex, NO_CREDENTIALS, RuleId, SecretIndex},
    state::{Discovered, Generation, KeyState, Pattern, Rotation},
};
use file::{ConfigFile, RotationFile};

/// The configuration used when no file is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.yaml");

const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const DEFAULT_GRACE_SECONDS: u64 = 86_400;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "config file has no YAML document (it is empty or only comments); write `{{}}` for the defaults, or remove --config to run on the embedded default"
    )]
    Empty,
    #[error("config is not UTF-8 text: {0}")]
    NotUtf8(std::str::Utf8Error),
    #[error("config is not valid YAML: {0}")]
    Yaml(String),
    #[error("config field `{field}`: {message}")]
    Field { field: String, message: String },
}

impl ConfigError {
    fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Field {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A configuration file as read: what it says, and its bytes.
#[derive(Debug)]
pub struct LoadedFile {
    pub config: Config,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// What new pods are stamped with: discovered, or else the static block.
    pub generation: Generation,
    /// The rotation the rules judge against: the operator's declaration
    /// combined with what discovery has seen.
    pub rotation: Rotation,
    pub policy: Policy,
    /// The rotation as the file declares it, kept to combine again with
    /// each new discovery.
    pub declared: Declared,
}

/// The parts of `rotation` that combine with discovery, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declared {
    /// `generation.static`: the generation when nothing is discovered, and
    /// the first number of a new ledger.
    pub generation: Generation,
    pub retiring_issuers: Vec<String>,
    pub retiring_key_ids: Vec<String>,
    pub next_issuer: Option<String>,
    pub retired_issuers: Vec<String>,
}

impl Declared {
    /// Sets what retires, and the planned issuer, from this declaration
    /// and what discovery found (nothing, for static configuration) while
    /// `signing` signs. The operator's word retires an issuer; nothing that
    /// signs is retiring unless a switch away from it is planned.
    fn resolve(&self, signing: &Generation, found: Option<&Discovered>, rotation: &mut Rotation) {
        // A switch under way that discovery sees (some servers sign with
        // another issuer) plans it as surely as a declaration does.
        let planned = self
            .next_issuer
            .as_ref()
            .or(found.and_then(|f| f.next_issuer.as_ref()))
            .filter(|n| **n != signing.issuer);
        let found_retiring = found.map_or(&[][..], |f| &f.retiring_issuers);
        let found_retired = found.map_or(&[][..], |f| &f.retired_issuers);
        let mut issuers = Vec::new();
        if planned.is_some() {
            issuers.push(signing.issuer.clone());
        }
        for issuer in self.retiring_issuers.iter().chain(found_retiring) {
            let retired = self.retired_issuers.contains(issuer) || found_retired.contains(issuer);
            if *issuer != signing.issuer && !retired && !issuers.contains(issuer) {
                issuers.push(issuer.clone());
            }
        }
        let mut keys: Vec<String> = Vec::new();
        let found_keys = found
            .into_iter()
            .flat_map(|f| f.key_ids(KeyState::Retiring));
        for key in self
            .retiring_key_ids
            .iter()
            .map(String::as_str)
            .chain(found_keys)
        {
            if key != signing.key_id && !keys.iter().any(|k| k == key) {
                keys.push(key.to_owned());
            }
        }
        rotation.retiring_issuers = issuers;
        rotation.retiring_key_ids = keys;
        rotation.next_issuer = planned.cloned();
    }
}

impl Config {
    pub fn embedded_default() -> Self {
        // The embedded file is part of the binary and covered by tests, so a
        // failure here is a build defect, not an operator error.
        Self::parse(EMBEDDED_DEFAULT).expect("embedded default config is valid")
    }

    /// Reads and parses the file at `path`, keeping the bytes so that a
    /// watch can tell when they change.
    pub fn load(path: &Path) -> Result<LoadedFile, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Self::from_bytes(&bytes)?;
        Ok(LoadedFile { config, bytes })
    }

    /// Parses the content of a configuration file. A file with no YAML
    /// document is an error, not the default: it is what a truncated write or
    /// a broken edit leaves behind, and taking it as "no rotation declared"
    /// would silently stop enforcing one. `{}` asks for the defaults.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        let text = std::str::from_utf8(bytes).map_err(ConfigError::NotUtf8)?;
        Self::from_value(Self::yaml(text)?.ok_or(ConfigError::Empty)?)
    }

    /// Parses configuration text. Text with no YAML content (nothing, or only
    /// comments) is the embedded default here; a *file* like that is an
    /// error, see [`Config::from_bytes`].
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Self::from_value(Self::yaml(text)?.unwrap_or_default())
    }

    /// The YAML document as JSON, `None` when the text holds no document
    /// (empty, whitespace, comments, or an explicit null).
    fn yaml(text: &str) -> Result<Option<serde_json::Value>, ConfigError> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        // YAML goes through a JSON value first so that serde_path_to_error can
        // name the exact field of a type error or an unknown key.
        let value: serde_json::Value =
            crate::yaml::from_str(text).map_err(|e| ConfigError::Yaml(e.to_string()))?;
        Ok((!value.is_null()).then_some(value))
    }

    fn from_value(value: serde_json::Value) -> Result<Self, ConfigError> {
        let value = match value {
            serde_json::Value::Null => serde_json::Value::Object(Default::default()),
            v => v,
        };
        let file: ConfigFile = serde_path_to_error::deserialize(&value).map_err(|e| {
            let field = e.path().to_string();
            ConfigError::field(
                if field == "." {
                    "(top level)".into()
                } else {
                    field
                },
                e.into_inner().to_string(),
            )
        })?;
        Self::from_file(file)
    }

    fn from_file(file: ConfigFile) -> Result<Self, ConfigError> {
        let generation = {
            let s = file.generation.and_then(|g| g.static_).unwrap_or_default();
            let number = s.number.unwrap_or(1);
            if number == 0 {
                return Err(ConfigError::field(
                    "generation.static.number",
                    "must be 1 or more",
                ));
            }
            let issuer = s.issuer.unwrap_or_else(|| DEFAULT_ISSUER.to_owned());
            if issuer.trim().is_empty() {
                return Err(ConfigError::field(
                    "generation.static.issuer",
                    "must not be empty",
                ));
            }
            Generation::new(number, issuer, s.key_id.unwrap_or_default())
        };

        let (rotation, declared) = rotation_from(file.rotation.unwrap_or_default(), &generation)?;

        let mode = match file.mode.as_deref() {
            None | Some("enforce") => Mode::Enforce,
            Some("audit") => Mode::Audit,
            Some(other) => {
                return Err(ConfigError::field(
                    "mode",
                    format!("unknown mode {other:?}; expected enforce or audit"),
                ));
            }
        };

        let mut overrides = [None; RuleId::ALL.len()];
        for (rule, action) in file.rules.unwrap_or_default() {
            let id = RuleId::parse(&rule).ok_or_else(|| {
                ConfigError::field(
                    format!("rules.{rule}"),
                    format!("unknown rule; known rules are {}", known_rules()),
                )
            })?;
            let action = Action::parse(&action).ok_or_else(|| {
                ConfigError::field(
                    format!("rules.{rule}"),
                    format!("unknown action {action:?}; expected deny, warn, label or off"),
                )
            })?;
            overrides[id.index()] = Some(action);
        }

        let exempt_namespaces = file
            .exempt_namespaces
            .unwrap_or_else(|| vec!["kube-system".to_owned()]);
        if let Some(i) = exempt_namespaces.iter().position(|n| n.is_empty()) {
            return Err(ConfigError::field(
                format!("exemptNamespaces[{i}]"),
                "must not be empty",
            ));
        }

        Ok(Config {
            generation,
            rotation,
            policy: Policy {
                mode,
                overrides,
                exempt_namespaces,
            },
            declared,
        })
    }

    /// This configuration with what discovery found: the discovered
    /// generation replaces the static one, and the rotation is the union of
    /// the declared one and the discovered one. The operator's word retires
    /// an issuer; nothing the signer uses now can be retiring unless a
    /// switch away from it is planned.
    pub fn with_discovered(&self, found: &Discovered) -> Config {
        let mut next = self.clone();
        next.generation = found.generation.clone();
        self.declared
            .resolve(&next.generation, Some(found), &mut next.rotation);
        next
    }

    /// What the rules may know, with `secrets` as the legacy token index.
    pub fn context<'a>(&'a self, secrets: &'a dyn SecretIndex) -> Context<'a> {
        self.context_with(secrets, &NO_CREDENTIALS)
    }

    /// [`Config::context`], knowing cloud credential configurations too.
    pub fn context_with<'a>(
        &'a self,
        secrets: &'a dyn SecretIndex,
        credentials: &'a dyn CredentialIndex,
    ) -> Context<'a> {
        Context {
            rotation: &self.rotation,
            new_issuer: self.rotation.new_issuer(&self.generation.issuer),
            secrets,
            credentials,
        }
    }
}

fn rotation_from(
    r: RotationFile,
    generation: &Generation,
) -> Result<(Rotation, Declared), ConfigError> {
    non_empty_entries("rotation.retiringIssuers", &r.retiring_issuers)?;
    non_empty_entries("rotation.retiredIssuers", &r.retired_issuers)?;
    non_empty_entries("rotation.retiringKeyIds", &r.retiring_key_ids)?;
    non_empty_entries("rotation.apiAudiences", &r.api_audiences)?;
    non_empty_entries("rotation.trustedAudiences", &r.trusted_audiences)?;
    non_empty_entries("rotation.federatedAudiences", &r.federated_audiences)?;
    if r.next_issuer
        .as_deref()
        .is_some_and(|n| n.trim().is_empty())
    {
        return Err(ConfigError::field(
            "rotation.nextIssuer",
            "must not be empty; remove it when no switch is planned",
        ));
    }
    let planned = r.next_issuer.as_ref().filter(|n| **n != generation.issuer);
    if let Some(next) = &r.next_issuer
        && let Some(i) = r.retiring_issuers.iter().position(|i| i == next)
    {
        return Err(ConfigError::field(
            format!("rotation.retiringIssuers[{i}]"),
            "is rotation.nextIssuer; the issuer a switch goes to cannot retire",
        ));
    }
    // Retiring the issuer that signs, with no switch planned, would make
    // every stamp a lie, so it is caught here rather than at review time.
    if planned.is_none()
        && let Some(i) = r
            .retiring_issuers
            .iter()
            .position(|i| *i == generation.issuer)
    {
        return Err(ConfigError::field(
            format!("rotation.retiringIssuers[{i}]"),
            "is the current issuer (generation.static.issuer, default https://kubernetes.default.svc.cluster.local); to declare a switch before it happens, set rotation.nextIssuer instead, and if it no longer signs, set generation.static.issuer to the issuer that does",
        ));
    }
    if !generation.key_id.is_empty()
        && let Some(i) = r
            .retiring_key_ids
            .iter()
            .position(|k| *k == generation.key_id)
    {
        return Err(ConfigError::field(
            format!("rotation.retiringKeyIds[{i}]"),
            "is the current signing key (generation.static.keyId); the current key cannot retire",
        ));
    }
    let grace_seconds = r.grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
    if grace_seconds == 0 {
        return Err(ConfigError::field(
            "rotation.graceSeconds",
            "must be 1 or more",
        ));
    }
    let declared = Declared {
        generation: generation.clone(),
        retiring_issuers: r.retiring_issuers,
        retiring_key_ids: r.retiring_key_ids,
        next_issuer: r.next_issuer,
        retired_issuers: r.retired_issuers,
    };
    let mut rotation = Rotation {
        grace_seconds,
        api_audiences: r.api_audiences,
        trusted_audiences: r.trusted_audiences.into_iter().map(Pattern::new).collect(),
        federated_audiences: r
            .federated_audiences
            .into_iter()
            .map(Pattern::new)
            .collect(),
        new_key_published: r.new_key_published,
        ..Rotation::default()
    };
    declared.resolve(generation, None, &mut rotation);
    Ok((rotation, declared))
}

fn non_empty_entries(field: &str, values: &[String]) -> Result<(), ConfigError> {
    match values.iter().position(|v| v.trim().is_empty()) {
        Some(i) => Err(ConfigError::field(
            format!("{field}[{i}]"),
            "must not be empty",
        )),
        None => Ok(()),
    }
}

fn known_rules() -> String {
    RuleId::ALL.map(RuleId::as_str).join(", ")
}

#[cfg(test)]
mod tests;
