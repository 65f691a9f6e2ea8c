//! The outgoing admission.k8s.io/v1 AdmissionReview, encoded by hand in the
//! documented wire format: `patch` is a Go `[]byte`, so it travels as a
//! base64 string with `patchType: JSONPatch`, as every webhook sends it.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use json_patch::PatchOperation;
use serde::Serialize;

use super::review::{API_VERSION, KIND};

/// One answer to one review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    uid: String,
    allowed: bool,
    status: Option<Status>,
    /// The JSON Patch, already serialised.
    patch: Option<Vec<u8>>,
    pub warnings: Vec<String>,
    pub audit_annotations: Vec<(&'static str, String)>,
}

/// The `status` of a refusal: what the API server shows the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl Response {
    /// Admitted, unchanged.
    pub fn allow(uid: &str) -> Self {
        Self {
            uid: uid.to_owned(),
            allowed: true,
            status: None,
            patch: None,
            warnings: Vec::new(),
            audit_annotations: Vec::new(),
        }
    }

    /// Refused with `status`.
    pub fn refuse(uid: &str, status: Status) -> Self {
        Self::allow(uid).deny(status)
    }

    /// The same answer, refused with `status`.
    pub fn deny(mut self, status: Status) -> Self {
        self.allowed = false;
        self.status = Some(status);
        self
    }

    /// Admitted with the changes in `ops`; none means unchanged.
    pub fn with_patch(mut self, ops: &[PatchOperation]) -> Result<Self, serde_json::Error> {
        self.patch = if ops.is_empty() {
            None
        } else {
            Some(serde_json::to_vec(ops)?)
        };
        Ok(self)
    }

    pub fn allowed(&self) -> bool {
        self.allowed
    }

    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        let patch = self.patch.as_deref().map(|p| STANDARD.encode(p));
        let review = ReviewOut {
            api_version: API_VERSION,
            kind: KIND,
            response: ResponseOut {
                uid: &self.uid,
                allowed: self.allowed,
                status: self.status.as_ref(),
                patch_type: patch.as_ref().map(|_| "JSONPatch"),
                patch,
                warnings: &self.warnings,
                audit_annotations: AuditAnnotations(&self.audit_annotations),
            },
        };
        // Most answers are a few hundred bytes; one allocation covers them.
        let mut out = Vec::with_capacity(256);
        serde_json::to_writer(&mut out, &review)?;
        Ok(out)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
    #[serde(skip_serializing_if = "AuditAnnotations::is_empty")]
    audit_annotations: AuditAnnotations<'a>,
}

/// A map in the JSON, kept as a short list in memory.
struct AuditAnnotations<'a>(&'a [(&'static str, String)]);

impl AuditAnnotations<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for AuditAnnotations<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn encoded(r: &Response) -> Value {
        serde_json::from_slice(&r.encode().unwrap()).unwrap()
    }

    #[test]
    fn allowed_answer_is_minimal() {
        assert_eq!(
            encoded(&Response::allow("u-1")),
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                   "response": {"uid": "u-1", "allowed": true}})
        );
    }

    #[test]
    fn patch_is_base64_with_its_type() {
        let ops: Vec<PatchOperation> = serde_json::from_value(
            json!([{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}]),
        )
        .unwrap();
        let r = Response::allow("u").with_patch(&ops).unwrap();
        let v = encoded(&r);
        assert_eq!(v["response"]["patchType"], "JSONPatch");
        let bytes = STANDARD
            .decode(v["response"]["patch"].as_str().expect("a base64 string"))
            .unwrap();
        let back: Vec<PatchOperation> = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, ops);
        let none = Response::allow("u").with_patch(&[]).unwrap();
        assert!(encoded(&none)["response"].get("patchType").is_none());
    }

    #[test]
    fn refusal_carries_status_warnings_and_audit_annotations() {
        let mut r = Response::refuse(
            "u",
            Status {
                code: 403,
                reason: "Forbidden",
                message: "no".into(),
            },
        );
        r.warnings.push("w".into());
        r.audit_annotations.push(("risks", "token-subpath".into()));
        assert_eq!(
            encoded(&r)["response"],
            json!({"uid": "u", "allowed": false,
                   "status": {"code": 403, "reason": "Forbidden", "message": "no"},
                   "warnings": ["w"], "auditAnnotations": {"risks": "token-subpath"}})
        );
    }
}
