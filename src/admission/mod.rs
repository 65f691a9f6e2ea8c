//! Answers admission reviews: `/mutate` stamps and marks, `/validate` denies
//! and warns. Both read only the request and in-memory state; nothing here
//! calls the API server, records metrics or speaks HTTP: a review returns
//! what happened, and the server turns that into a status and counters.

mod patch;
pub mod response;
// Public to the tests and benches through test-support; its items stay
// `pub` so that one source serves both builds.
#[cfg(not(feature = "test-support"))]
#[allow(unreachable_pub)]
mod review;
#[cfg(feature = "test-support")]
pub mod review;

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::{
    config::Config,
    judge::{self, Known},
    object::{self, Kind, ObjectView, Text},
    policy::{Action, Origin, Subject, Verdict},
    rules::{self, RuleId, SecretIndex},
};
use response::{Response, Status};
use review::{API_VERSION, KIND, RawReview, RequestIn, ReviewIn, salvage_uid};

/// The most of an error message, and so of the input it quotes, that an
/// answer or a log line carries.
pub const MAX_ECHO_CHARS: usize = 300;

/// The name of the validating webhook's match condition.
pub const MATCH_CONDITION_NAME: &str = "not-controller-made";

/// The validating webhook's `matchConditions` expression (CEL): only what a
/// person submits reaches the fail-closed webhook. It mirrors
/// `Origin::of`, and like it lets ephemeral containers through, which a
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

/// What a review came to, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Patched,
    Warned,
    Denied,
    /// An object a controller made that is at risk: marked, never denied
    /// or warned about. Counted apart so an operator sees how many at-risk
    /// objects controllers keep making.
    ControllerAtRisk,
    Exempt,
    /// A kind issuer-guard does not judge (a registration mistake).
    Unjudged,
    Error,
}

impl Decision {
    pub const fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Patched => "patched",
            Decision::Warned => "warned",
            Decision::Denied => "denied",
            Decision::ControllerAtRisk => "controller-at-risk",
            Decision::Exempt => "exempt",
            Decision::Unjudged => "unjudged",
            Decision::Error => "error",
        }
    }
}

/// What a review was about, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subjected {
    /// A kind issuer-guard judges.
    Judged(Kind),
    /// A kind it does not judge.
    Other,
    /// The review could not be read that far.
    Unknown,
}

impl Subjected {
    pub const fn as_str(self) -> &'static str {
        match self {
            Subjected::Judged(kind) => kind.as_str(),
            Subjected::Other => "other",
            Subjected::Unknown => "unknown",
        }
    }
}

/// The request's operation; only CREATE and UPDATE are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Create,
    Update,
    /// DELETE, CONNECT or anything else.
    Other,
}

impl Operation {
    fn of(operation: Option<&str>) -> Self {
        match operation {
            Some("CREATE") => Operation::Create,
            Some("UPDATE") => Operation::Update,
            _ => Operation::Other,
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
    Encode(#[from] serde_json::Error),
}

/// What one review came to.
#[derive(Debug)]
#[must_use]
pub struct Reviewed {
    pub kind: Subjected,
    pub decision: Decision,
    /// Every decided finding, from the validating webhook only, so that a
    /// finding is counted once although both webhooks judge the object.
    pub findings: Vec<(RuleId, Action)>,
    pub reply: Reply,
}

/// The answer to send.
#[derive(Debug)]
pub enum Reply {
    /// An AdmissionReview (JSON), for HTTP 200.
    Review(Vec<u8>),
    /// No uid could be read, so no AdmissionReview can answer: why, for
    /// HTTP 400.
    Unusable(String),
}

pub struct Webhook {
    config: Arc<ArcSwap<Config>>,
    secrets: Arc<dyn SecretIndex>,
}

/// A review's answer before encoding.
struct Outcome {
    response: Response,
    kind: Subjected,
    decision: Decision,
    findings: Vec<(RuleId, Action)>,
}

impl Webhook {
    pub fn new(config: Arc<ArcSwap<Config>>, secrets: Arc<dyn SecretIndex>) -> Self {
        Self { config, secrets }
    }

    /// Answers one review. Never panics on any input; a review that cannot
    /// be read is answered under its uid when one can be found.
    pub fn review(&self, endpoint: Endpoint, body: &[u8]) -> Reviewed {
        match self.handle(endpoint, body) {
            Ok(o) => match o.response.encode() {
                Ok(bytes) => Reviewed {
                    kind: o.kind,
                    decision: o.decision,
                    findings: o.findings,
                    reply: Reply::Review(bytes),
                },
                Err(e) => unusable(o.kind, &AdmissionError::Encode(e)),
            },
            Err(e) => {
                // serde's messages quote the offending input, which an
                // attacker controls: a 2 MB string would be echoed whole.
                let why = rules::truncate_chars(e.to_string(), MAX_ECHO_CHARS);
                tracing::warn!(webhook = endpoint.as_str(), error = %why, "unusable admission review");
                match salvage_uid(body) {
                    Some(uid) => {
                        let response = Response::refuse(
                            &uid,
                            Status {
                                code: 400,
                                reason: "BadRequest",
                                message: why,
                            },
                        );
                        match response.encode() {
                            Ok(bytes) => Reviewed {
                                kind: Subjected::Unknown,
                                decision: Decision::Error,
                                findings: Vec::new(),
                                reply: Reply::Review(bytes),
                            },
                            Err(e) => unusable(Subjected::Unknown, &AdmissionError::Encode(e)),
                        }
                    }
                    None => unusable(Subjected::Unknown, &e),
                }
            }
        }
    }

    fn handle(&self, endpoint: Endpoint, body: &[u8]) -> Result<Outcome, AdmissionError> {
        // One validation of the whole body is cheaper than serde_json's
        // per-string validation when reading from bytes.
        let text = std::str::from_utf8(body).map_err(AdmissionError::NotUtf8)?;
        // serde_json reads what the fast reader declines, and is the one
        // that explains a review that cannot be read.
        let review: ReviewIn<ObjectView> = match object::from_json(text) {
            Ok(review) => review,
            Err(object::ReadError::Declined) => match serde_json::from_str(text) {
                Ok(review) => review,
                Err(e) => return diagnose(text, e),
            },
        };
        let (req, uid) = envelope(review)?;
        let response = Response::allow(&uid);
        let kind = match judged_kind(&req) {
            Ok(kind) => kind,
            Err((known, decision)) => return Ok(unjudged(response, &req, known, decision)),
        };
        let update = Operation::of(req.operation.as_deref()) == Operation::Update;
        let obj = req.object.as_ref().ok_or(AdmissionError::MissingObject)?;
        let namespace = req
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| obj.namespace_or(""));
        // Ephemeral containers are added by a person (`kubectl debug`), even
        // to a Pod a controller made.
        let origin = if req.sub_resource.as_deref() == Some("ephemeralcontainers") {
            Origin::Submitted
        } else {
            Origin::of(obj)
        };
        let config = self.config.load();
        let verdict = judge::subject(
            &config,
            Known::secrets(&*self.secrets),
            Subject {
                kind,
                namespace,
                obj,
                old: req.old_object.as_ref().filter(|_| update),
                origin,
            },
        );
        let outcome = |response, decision, findings| Outcome {
            response,
            kind: Subjected::Judged(kind),
            decision,
            findings,
        };
        if verdict.exempt {
            return Ok(outcome(response, Decision::Exempt, Vec::new()));
        }

        match endpoint {
            Endpoint::Mutate => {
                let ops = mutation(kind, update, obj, &config, &verdict);
                let decision = if verdict.controller_at_risk() {
                    Decision::ControllerAtRisk
                } else if ops.is_empty() {
                    Decision::Allowed
                } else {
                    Decision::Patched
                };
                Ok(outcome(response.with_patch(&ops)?, decision, Vec::new()))
            }
            Endpoint::Validate => Ok(validation(response, kind, obj, verdict)),
        }
    }
}

/// The validating webhook's answer: denied, warned or allowed, with the
/// risks for the audit log.
fn validation(
    mut response: Response,
    kind: Kind,
    obj: &ObjectView<'_>,
    verdict: Verdict,
) -> Outcome {
    let findings = verdict
        .decided
        .iter()
        .map(|d| (d.finding.rule, d.action))
        .collect();
    if let Some(risks) = verdict.risks_value() {
        response.audit_annotations.push(("risks", risks));
    }
    let warnings = verdict.warnings();
    let decision = if verdict.is_denied() {
        let message = verdict.deny_message(kind.as_str(), &obj.meta().display_name());
        response = response.deny(Status {
            code: 403,
            reason: "Forbidden",
            message,
        });
        Decision::Denied
    } else if verdict.controller_at_risk() {
        Decision::ControllerAtRisk
    } else if warnings.is_empty() {
        Decision::Allowed
    } else {
        Decision::Warned
    };
    response.warnings = warnings;
    Outcome {
        response,
        kind: Subjected::Judged(kind),
        decision,
        findings,
    }
}

fn unusable(kind: Subjected, e: &AdmissionError) -> Reviewed {
    Reviewed {
        kind,
        decision: Decision::Error,
        findings: Vec::new(),
        reply: Reply::Unusable(rules::truncate_chars(e.to_string(), MAX_ECHO_CHARS)),
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
fn judged_kind<O>(req: &RequestIn<'_, O>) -> Result<Kind, (Option<Kind>, Decision)> {
    let kind = req
        .kind
        .as_ref()
        .and_then(|gk| Kind::from_group_kind(&gk.group, &gk.kind))
        .ok_or((None, Decision::Unjudged))?;
    let subresource = matches!(
        req.sub_resource.as_deref(),
        None | Some("") | Some("ephemeralcontainers")
    );
    let operation = Operation::of(req.operation.as_deref()) != Operation::Other;
    if subresource && operation {
        Ok(kind)
    } else {
        Err((Some(kind), Decision::Allowed))
    }
}

fn unjudged<O>(
    mut response: Response,
    req: &RequestIn<'_, O>,
    known: Option<Kind>,
    decision: Decision,
) -> Outcome {
    if known.is_none() {
        let (group, name) = req
            .kind
            .as_ref()
            .map_or(("", ""), |gk| (&*gk.group, &*gk.kind));
        response.warnings = vec![rules::truncate_chars(
            format!(
                "issuer-guard does not judge {group}/{name}; check the webhook registration's rules"
            ),
            rules::MAX_WARNING_CHARS,
        )];
    }
    Outcome {
        response,
        kind: known.map_or(Subjected::Other, Subjected::Judged),
        decision,
        findings: Vec::new(),
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
        Err((known, decision)) => {
            return Ok(unjudged(Response::allow(&uid), &req, known, decision));
        }
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

#[cfg(test)]
mod tests;
