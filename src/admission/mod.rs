//! Answers admission reviews: `/mutate` stamps and marks, `/validate` denies
//! and warns. Both read only the request and in-memory state; nothing here
//! calls the API server.

pub mod patch;
pub mod review;

use std::{sync::Arc, time::Instant};

use arc_swap::ArcSwap;
use json_patch::Patch;
use kube::core::{Status, admission::AdmissionResponse};

use crate::{
    config::Config,
    metrics::{FindingLabels, Metrics, RequestLabels, WebhookLabels},
    object::{self, Kind, ObjectView, Text},
    policy::{self, Origin, Verdict},
    rules::{self, SecretIndex},
};
use review::{API_VERSION, KIND, RawReview, RequestIn, ReviewIn, salvage_uid};

/// The metrics decision for an object a controller made that is at risk:
/// marked, never denied or warned about. Counted apart so an operator sees
/// how many at-risk objects controllers keep making.
pub const CONTROLLER_AT_RISK: &str = "controller-at-risk";

/// The name of the validating webhook's match condition.
pub const MATCH_CONDITION_NAME: &str = "not-controller-made";

/// The validating webhook's `matchConditions` expression (CEL): only what a
/// person submits reaches the fail-closed webhook. It mirrors
/// [`Origin::of`], and like it lets ephemeral containers through, which a
/// person adds even to a controller-made Pod. An expression that fails to
/// evaluate fails the request closed, so every optional field is tested with
/// `has()` before it is read: the API server leaves `request.subResource` out
/// when there is none.
pub const MATCH_CONDITION_NOT_CONTROLLER_MADE: &str = "(has(request.subResource) && request.subResource == 'ephemeralcontainers') \
|| !has(object.metadata.ownerReferences) \
|| !object.metadata.ownerReferences.exists(r, has(r.controller) && r.controller)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Mutate,
    Validate,
}

impl Endpoint {
    pub const fn as_str(self) -> &'static str {
        match self {
            Endpoint::Mutate => "mutate",
            Endpoint::Validate => "validate",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("body is not UTF-8 JSON: {0}")]
    NotUtf8(std::str::Utf8Error),
    #[error("body is not a JSON AdmissionReview: {0}")]
    Malformed(serde_json::Error),
    #[error(
        "expected apiVersion {API_VERSION} kind {KIND}, got apiVersion {api_version:?} kind {kind:?}"
    )]
    WrongType { api_version: String, kind: String },
    #[error("AdmissionReview has no request")]
    MissingRequest,
    #[error("request.uid is missing or empty")]
    MissingUid,
    #[error("request.object is missing")]
    MissingObject,
    #[error("request.{field} is not a readable {kind}: {source}")]
    BadObject {
        field: &'static str,
        kind: &'static str,
        source: serde_json::Error,
    },
    #[error("cannot encode the response: {0}")]
    Encode(String),
}

/// An HTTP answer: status and JSON body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

pub struct Webhook {
    config: Arc<ArcSwap<Config>>,
    secrets: Arc<dyn SecretIndex>,
    metrics: Arc<Metrics>,
}

struct Outcome {
    response: AdmissionResponse,
    kind: &'static str,
    decision: &'static str,
}

impl Webhook {
    pub fn new(
        config: Arc<ArcSwap<Config>>,
        secrets: Arc<dyn SecretIndex>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            config,
            secrets,
            metrics,
        }
    }

    /// Answers one review. Never panics on any input; a review that cannot
    /// be read is answered under its uid when one can be found, and with
    /// HTTP 400 otherwise.
    pub fn review(&self, endpoint: Endpoint, body: &[u8]) -> Reply {
        let started = Instant::now();
        let (reply, kind, decision) = match self.handle(endpoint, body) {
            Ok(o) => match encode(o.response) {
                Ok(body) => (Reply { status: 200, body }, o.kind, o.decision),
                Err(e) => (bad_request(&e), o.kind, "error"),
            },
            Err(e) => {
                tracing::warn!(webhook = endpoint.as_str(), error = %e, "unusable admission review");
                let reply = match salvage_uid(body) {
                    Some(uid) => {
                        let mut r = AdmissionResponse::invalid(e.to_string());
                        r.uid = uid;
                        r.result.code = 400;
                        encode(r)
                            .map_or_else(|e| bad_request(&e), |body| Reply { status: 200, body })
                    }
                    None => bad_request(&e),
                };
                (reply, "unknown", "error")
            }
        };
        let webhook = endpoint.as_str();
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                webhook,
                kind,
                decision,
            })
            .inc();
        self.metrics
            .duration
            .get_or_create(&WebhookLabels { webhook })
            .observe(started.elapsed().as_secs_f64());
        reply
    }

    fn handle(&self, endpoint: Endpoint, body: &[u8]) -> Result<Outcome, AdmissionError> {
        // One validation of the whole body is cheaper than serde_json's
        // per-string validation when reading from bytes.
        let text = std::str::from_utf8(body).map_err(AdmissionError::NotUtf8)?;
        let review: ReviewIn<ObjectView> = match serde_json::from_str(text) {
            Ok(review) => review,
            Err(e) => return diagnose(text, e),
        };
        let (req, uid) = envelope(review)?;
        let mut response = allowed(&uid);
        let kind = match judged_kind(&req) {
            Ok(kind) => kind,
            Err((known, decision)) => return Ok(unjudged(response, &req, known, decision)),
        };
        let outcome = |response, decision| Outcome {
            response,
            kind: kind.as_str(),
            decision,
        };
        let update = req.operation.as_deref() == Some("UPDATE");
        let obj = req.object.as_ref().ok_or(AdmissionError::MissingObject)?;
        let namespace = req
            .namespace
            .as_deref()
            .or(obj.meta().namespace.as_deref())
            .unwrap_or_default();
        let config = self.config.load();
        if config.is_exempt(namespace) {
            return Ok(outcome(response, "exempt"));
        }
        let old = req.old_object.as_ref().filter(|_| update);
        // Ephemeral containers are added by a person (`kubectl debug`), even
        // to a Pod a controller made.
        let origin = if req.sub_resource.as_deref() == Some("ephemeralcontainers") {
            Origin::Submitted
        } else {
            Origin::of(obj)
        };
        let verdict = policy::assess(&config, &*self.secrets, kind, namespace, obj, old, origin);

        match endpoint {
            Endpoint::Mutate => {
                let ops = mutation(kind, update, obj, &config, &verdict);
                let decision = if verdict.controller_at_risk() {
                    CONTROLLER_AT_RISK
                } else if ops.is_empty() {
                    "allowed"
                } else {
                    "patched"
                };
                if ops.is_empty() {
                    return Ok(outcome(response, decision));
                }
                let response = response
                    .with_patch(Patch(ops))
                    .map_err(|e| AdmissionError::Encode(e.to_string()))?;
                Ok(outcome(response, decision))
            }
            Endpoint::Validate => {
                self.count_findings(&verdict);
                let warnings = verdict.warnings();
                if let Some(risks) = verdict.risks_value() {
                    response.audit_annotations.insert("risks".to_owned(), risks);
                }
                let decision = if verdict.is_denied() {
                    let meta = obj.meta();
                    let name = meta
                        .name
                        .as_deref()
                        .or(req.name.as_deref())
                        .filter(|n| !n.is_empty())
                        .map_or_else(
                            || format!("{}*", meta.generate_name.as_deref().unwrap_or_default()),
                            str::to_owned,
                        );
                    response = response.deny(verdict.deny_message(kind.as_str(), &name));
                    response.result.code = 403;
                    response.result.reason = "Forbidden".to_owned();
                    "denied"
                } else if verdict.controller_at_risk() {
                    CONTROLLER_AT_RISK
                } else if warnings.is_empty() {
                    "allowed"
                } else {
                    "warned"
                };
                if !warnings.is_empty() {
                    response.warnings = Some(warnings);
                }
                Ok(outcome(response, decision))
            }
        }
    }

    fn count_findings(&self, verdict: &Verdict) {
        for d in &verdict.decided {
            self.metrics
                .findings
                .get_or_create(&FindingLabels {
                    rule: d.finding.rule.as_str(),
                    action: d.action.as_str(),
                })
                .inc();
        }
    }
}

/// Checks the envelope and returns the request and its uid.
fn envelope<'a, O>(
    review: ReviewIn<'a, O>,
) -> Result<(RequestIn<'a, O>, Text<'a>), AdmissionError> {
    let (api_version, kind) = (review.api_version.as_deref(), review.kind.as_deref());
    if api_version != Some(API_VERSION) || kind != Some(KIND) {
        return Err(AdmissionError::WrongType {
            api_version: api_version.unwrap_or_default().to_owned(),
            kind: kind.unwrap_or_default().to_owned(),
        });
    }
    let mut req = review.request.ok_or(AdmissionError::MissingRequest)?;
    match req.uid.take() {
        Some(uid) if !uid.is_empty() => Ok((req, uid)),
        _ => Err(AdmissionError::MissingUid),
    }
}

/// The kind to judge, or why the request is let through unjudged: not a
/// kind with a pod spec, a subresource that cannot change how a pod gets its
/// token (status, scale; ephemeral containers can), or an operation other
/// than CREATE and UPDATE. A let-through carries the kind when it is known.
fn judged_kind<O>(req: &RequestIn<'_, O>) -> Result<Kind, (Option<Kind>, &'static str)> {
    let kind = req
        .kind
        .as_ref()
        .and_then(|gk| Kind::from_group_kind(&gk.group, &gk.kind))
        .ok_or((None, "unjudged"))?;
    let subresource = matches!(
        req.sub_resource.as_deref(),
        None | Some("") | Some("ephemeralcontainers")
    );
    let operation = matches!(req.operation.as_deref(), Some("CREATE" | "UPDATE"));
    if subresource && operation {
        Ok(kind)
    } else {
        Err((Some(kind), "allowed"))
    }
}

fn unjudged<O>(
    mut response: AdmissionResponse,
    req: &RequestIn<'_, O>,
    known: Option<Kind>,
    decision: &'static str,
) -> Outcome {
    if known.is_none() {
        let (group, name) = req
            .kind
            .as_ref()
            .map_or(("", ""), |gk| (&*gk.group, &*gk.kind));
        response.warnings = Some(vec![rules::truncate_chars(
            format!(
                "issuer-guard does not judge {group}/{name}; check the webhook registration's rules"
            ),
            rules::MAX_WARNING_CHARS,
        )]);
    }
    Outcome {
        response,
        kind: known.map_or("other", Kind::as_str),
        decision,
    }
}

/// Explains a review the one-pass read rejected: reads the envelope again
/// with the objects as raw JSON to tell a broken envelope from a broken
/// object, and lets kinds issuer-guard does not judge through as usual.
fn diagnose(body: &str, error: serde_json::Error) -> Result<Outcome, AdmissionError> {
    let raw: RawReview = match serde_json::from_str(body) {
        Ok(raw) => raw,
        Err(_) => return Err(AdmissionError::Malformed(error)),
    };
    let (req, uid) = envelope(raw)?;
    let kind = match judged_kind(&req) {
        Ok(kind) => kind,
        Err((known, decision)) => return Ok(unjudged(allowed(&uid), &req, known, decision)),
    };
    for (field, object) in [("object", req.object), ("oldObject", req.old_object)] {
        if let Some(object) = object
            && let Err(source) = serde_json::from_str::<ObjectView>(object.get())
        {
            return Err(AdmissionError::BadObject {
                field,
                kind: kind.as_str(),
                source,
            });
        }
    }
    Err(AdmissionError::Malformed(error))
}

/// New Pods get the generation stamp; every judged object gets the at-risk
/// marks set or cleared. Pods are not re-stamped on UPDATE: the stamp records
/// the generation they were created under.
fn mutation(
    kind: Kind,
    update: bool,
    obj: &ObjectView<'_>,
    config: &Config,
    verdict: &Verdict,
) -> Vec<json_patch::PatchOperation> {
    if kind == Kind::Pod && update {
        return Vec::new();
    }
    let risks = verdict.risks_value();
    let at_risk = risks.as_ref().map(|_| "true");
    let g = &config.generation;
    if kind == Kind::Pod {
        patch::marks(
            obj.metadata.as_ref(),
            &[
                (object::GENERATION_LABEL, Some(&g.label_value)),
                (object::AT_RISK_LABEL, at_risk),
            ],
            &[
                (object::ISSUER_ANNOTATION, Some(&g.issuer)),
                (object::KEY_ID_ANNOTATION, Some(&g.key_id)),
                (object::RISKS_ANNOTATION, risks.as_deref()),
            ],
        )
    } else {
        patch::marks(
            obj.metadata.as_ref(),
            &[(object::AT_RISK_LABEL, at_risk)],
            &[(object::RISKS_ANNOTATION, risks.as_deref())],
        )
    }
}

fn allowed(uid: &str) -> AdmissionResponse {
    let mut r = AdmissionResponse::invalid("");
    r.uid = uid.to_owned();
    r.allowed = true;
    r.result = Status::success();
    r
}

fn encode(response: AdmissionResponse) -> Result<Vec<u8>, AdmissionError> {
    serde_json::to_vec(&response.into_review()).map_err(|e| AdmissionError::Encode(e.to_string()))
}

fn bad_request(e: &AdmissionError) -> Reply {
    let body = serde_json::json!({ "error": e.to_string() })
        .to_string()
        .into_bytes();
    Reply { status: 400, body }
}

#[cfg(test)]
mod tests;
