//! The incoming admission.k8s.io/v1 AdmissionReview, read without copying.
//!
//! kube's `AdmissionReview<DynamicObject>` buffers the whole review through
//! serde's `flatten` and builds a typed `ObjectMeta`, which costs several
//! times the rest of a review. The envelope is read borrowed instead, and
//! generic over how the objects are read: straight into the rules' view in
//! one pass on the hot path, or as raw JSON to explain a failure. Dry runs
//! are judged like any other review, so `dryRun` is not read.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::object::Text;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

#[derive(Debug, Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(deserialize = "'de: 'a, O: Deserialize<'de>")
)]
pub struct ReviewIn<'a, O> {
    #[serde(default)]
    pub api_version: Option<Text<'a>>,
    #[serde(default)]
    pub kind: Option<Text<'a>>,
    #[serde(default)]
    pub request: Option<RequestIn<'a, O>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(deserialize = "'de: 'a, O: Deserialize<'de>")
)]
pub struct RequestIn<'a, O> {
    #[serde(default)]
    pub uid: Option<Text<'a>>,
    #[serde(default)]
    pub kind: Option<GroupKind<'a>>,
    #[serde(default)]
    pub sub_resource: Option<Text<'a>>,
    #[serde(default)]
    pub namespace: Option<Text<'a>>,
    #[serde(default)]
    pub operation: Option<Text<'a>>,
    #[serde(default)]
    pub object: Option<O>,
    #[serde(default)]
    pub old_object: Option<O>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "'de: 'a"))]
pub struct GroupKind<'a> {
    #[serde(default)]
    pub group: Text<'a>,
    #[serde(default)]
    pub kind: Text<'a>,
}

/// Reads only `request.uid`, tolerating anything else, so that a review the
/// full parse rejects can still be answered under its uid.
pub fn salvage_uid(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Probe {
        request: Option<ProbeRequest>,
    }
    #[derive(Deserialize)]
    struct ProbeRequest {
        uid: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(body).ok()?;
    match probe.request?.uid? {
        serde_json::Value::String(uid) if !uid.is_empty() => Some(uid),
        _ => None,
    }
}

/// The envelope with the objects left as raw JSON, for explaining failures.
pub type RawReview<'a> = ReviewIn<'a, &'a RawValue>;
