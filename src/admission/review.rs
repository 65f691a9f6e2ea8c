//! The incoming admission.k8s.io/v1 AdmissionReview, read without copying.
//!
//! kube's `AdmissionReview<DynamicObject>` buffers the whole review through
//! serde's `flatten` and builds a typed `ObjectMeta`, which costs several
//! times the rest of a review. Reading the envelope borrowed, with the
//! objects as raw JSON, keeps the hot path lean; responses still use kube's
//! `AdmissionResponse`.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::object::Text;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "'de: 'a"))]
pub struct ReviewIn<'a> {
    #[serde(default)]
    pub api_version: Option<Text<'a>>,
    #[serde(default)]
    pub kind: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub request: Option<RequestIn<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "'de: 'a"))]
pub struct RequestIn<'a> {
    #[serde(default)]
    pub uid: Option<Text<'a>>,
    #[serde(default)]
    pub kind: Option<GroupKind<'a>>,
    #[serde(default)]
    pub sub_resource: Option<Text<'a>>,
    #[serde(default)]
    pub name: Option<Text<'a>>,
    #[serde(default)]
    pub namespace: Option<Text<'a>>,
    #[serde(default)]
    pub operation: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub object: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub old_object: Option<&'a RawValue>,
    #[serde(default)]
    pub dry_run: Option<bool>,
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

/// A JSON `null` object is the same as none.
pub fn present(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|r| r.get() != "null")
}
