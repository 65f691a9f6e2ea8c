//! The on-disk shape of the configuration file. Kept separate from the
//! runtime [`super::Config`] so the file format can stay stable while the
//! runtime form is shaped for the hot path.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ConfigFile {
    #[serde(default)]
    pub generation: Option<GenerationFile>,
    #[serde(default)]
    pub rotation: Option<RotationFile>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub rules: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub exempt_namespaces: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct GenerationFile {
    #[serde(default, rename = "static")]
    pub static_: Option<StaticGenerationFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct StaticGenerationFile {
    #[serde(default)]
    pub number: Option<u64>,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub key_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RotationFile {
    #[serde(default)]
    pub retiring_issuers: Vec<String>,
    #[serde(default)]
    pub retiring_key_ids: Vec<String>,
    #[serde(default)]
    pub grace_seconds: Option<u64>,
    #[serde(default)]
    pub api_audiences: Vec<String>,
    #[serde(default)]
    pub trusted_audiences: Vec<String>,
    #[serde(default)]
    pub federated_audiences: Vec<String>,
    #[serde(default)]
    pub new_key_published: bool,
    #[serde(default)]
    pub next_issuer: Option<String>,
    #[serde(default)]
    pub retired_issuers: Vec<String>,
}
