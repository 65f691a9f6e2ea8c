//! HTTP routes: the two webhooks on the TLS listener, and health, readiness
//! and metrics on the plain listener.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt as _;

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Request, State, rejection::BytesRejection},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};

use super::{
    ReviewState,
    budget::{self, Budget},
    readiness::Readiness,
};
use crate::{
    admission::{Endpoint, Reply, Reviewed},
    metrics::{FindingLabels, Metrics, RequestLabels, WebhookLabels},
};

const JSON: &str = "application/json";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The product's `/mutate` and `/validate` handlers, before [`webhooks`]
/// wraps them in the limits every webhook route gets.
pub(super) fn review_router(state: ReviewState) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .with_state(state)
}

/// Wraps the webhook handlers in the body limit, the memory budget and the
/// request deadline, and closes connections once shutting down.
pub(super) fn webhooks(
    handlers: Router,
    max_body_bytes: usize,
    deadline: Duration,
    budget: Budget,
    readiness: Arc<Readiness>,
) -> Router {
    // Outermost last: the declared length is checked first, then the
    // deadline starts, and waiting for the memory budget counts against it.
    handlers
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(budget, budget::reserve))
        .layer(middleware::from_fn_with_state(deadline, with_deadline))
        .layer(middleware::from_fn_with_state(
            max_body_bytes,
            declared_length,
        ))
        // Outermost, so that every answer, refusals included, carries it.
        .layer(middleware::from_fn_with_state(
            readiness,
            close_when_draining,
        ))
}

/// Once shutting down, every answer asks the client to close its
/// connection. The drain must close idle keep-alive connections, and a
/// client that sends a review on one just as it is closed sees EOF: Go's
/// HTTP client, the API server's, does not retry a POST it has written, so
/// with `failurePolicy: Fail` that admission fails. A connection the client
/// closes itself after its last answer cannot race so. Through the shutdown
/// delay, the connections in use are closed this way, one answer at a time.
async fn close_when_draining(
    State(readiness): State<Arc<Readiness>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    if readiness.is_shutting_down() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Closing a connection with unread bytes in it makes the kernel reset it,
/// and a client still writing its body then sees the reset, not the 413.
/// So a body at most this much over the limit is read and thrown away
/// first, for at most [`DRAIN_TIME`]; a far larger one is refused at once.
const DRAIN_BYTES: u64 = 1 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// Refuses a body whose declared length is over the limit without keeping
/// any of it: otherwise the request would wait for a body that is never
/// read in full, and get 504 at the deadline instead of 413 at once.
async fn declared_length(State(max): State<usize>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > max as u64 => {
            if n - max as u64 <= DRAIN_BYTES {
                let mut body = request.into_body().into_data_stream();
                let _ = tokio::time::timeout(DRAIN_TIME, async {
                    while let Some(Ok(_)) = body.next().await {}
                })
                .await;
            }
            let mut refused = json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("a body of {n} bytes is over the limit of {max} bytes (--max-body-bytes)"),
            );
            refused
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            refused
        }
        _ => next.run(request).await,
    }
}

async fn mutate(State(r): State<ReviewState>, body: Result<Bytes, BytesRejection>) -> Response {
    answer(&r, Endpoint::Mutate, body)
}

async fn validate(State(r): State<ReviewState>, body: Result<Bytes, BytesRejection>) -> Response {
    answer(&r, Endpoint::Validate, body)
}

/// The review runs on the async worker: it is microseconds of CPU with no
/// I/O, so moving it to a blocking thread would cost more than it saves.
fn answer(r: &ReviewState, endpoint: Endpoint, body: Result<Bytes, BytesRejection>) -> Response {
    match body {
        Ok(body) => {
            let started = Instant::now();
            let reviewed = r.webhook.review(endpoint, &body);
            record(&r.metrics, endpoint, &reviewed, started.elapsed());
            match reviewed.reply {
                Reply::Review(json) => {
                    (StatusCode::OK, [(header::CONTENT_TYPE, JSON)], json).into_response()
                }
                Reply::Unusable(why) => json_error(StatusCode::BAD_REQUEST, &why),
            }
        }
        // Too large (413), or the client failed mid-body.
        Err(rejection) => json_error(rejection.status(), &rejection.body_text()),
    }
}

/// Counts one review: by webhook, kind and decision, its duration, and the
/// findings the validating webhook decided.
fn record(metrics: &Metrics, endpoint: Endpoint, reviewed: &Reviewed, took: Duration) {
    let webhook = endpoint.as_str();
    metrics
        .requests
        .get_or_create(&RequestLabels {
            webhook,
            kind: reviewed.kind.as_str(),
            decision: reviewed.decision.as_str(),
        })
        .inc();
    metrics
        .duration
        .get_or_create(&WebhookLabels { webhook })
        .observe(took.as_secs_f64());
    for (rule, action) in &reviewed.findings {
        metrics
            .findings
            .get_or_create(&FindingLabels {
                rule: rule.as_str(),
                action: action.as_str(),
            })
            .inc();
    }
}

/// Bounds the whole request, body upload included, so that a client that
/// stalls mid-body cannot hold a connection until the API server gives up.
async fn with_deadline(State(deadline): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(?deadline, "request not answered within the deadline");
            json_error(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("request not completed within {}ms", deadline.as_millis()),
            )
        }
    }
}

fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(header::CONTENT_TYPE, JSON)], body).into_response()
}

#[derive(Clone)]
struct Health {
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
}

pub(super) fn health(readiness: Arc<Readiness>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Health { readiness, metrics })
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(h): State<Health>) -> Response {
    match h.readiness.check() {
        Ok(()) => "ok\n".into_response(),
        Err(reasons) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", reasons.join("; ")),
        )
            .into_response(),
    }
}

async fn metrics_text(State(h): State<Health>) -> Response {
    ([(header::CONTENT_TYPE, OPENMETRICS)], h.metrics.encode()).into_response()
}

#[cfg(test)]
mod tests {
    use arc_swap::ArcSwap;

    use super::*;
    use crate::{admission::Webhook, config::Config, rules::LegacySecrets};

    const SMALL_POD: &str = include_str!("../../tests/fixtures/reviews/pod-small.json");
    const DEPLOYMENT: &str = include_str!("../../tests/fixtures/reviews/deployment-denied.json");
    const KEY_ROTATION: &str = "generation: {static: {number: 2, issuer: 'https://kubernetes.default.svc.cluster.local', keyId: kid-b}}\nrotation: {retiringKeyIds: [kid-a]}\n";

    #[test]
    fn requests_and_findings_are_counted() {
        let config = Arc::new(ArcSwap::from_pointee(Config::parse(KEY_ROTATION).unwrap()));
        let webhook = Webhook::new(config, Arc::new(LegacySecrets::default()));
        let metrics = Metrics::new();
        for (endpoint, body) in [
            (Endpoint::Validate, DEPLOYMENT),
            (Endpoint::Mutate, SMALL_POD),
            (Endpoint::Mutate, "garbage"),
        ] {
            let reviewed = webhook.review(endpoint, body.as_bytes());
            record(&metrics, endpoint, &reviewed, Duration::from_micros(50));
        }
        let text = metrics.encode();
        for line in [
            r#"issuer_guard_admission_requests_total{webhook="validate",kind="Deployment",decision="denied"} 1"#,
            r#"issuer_guard_admission_requests_total{webhook="mutate",kind="Pod",decision="patched"} 1"#,
            r#"issuer_guard_admission_requests_total{webhook="mutate",kind="unknown",decision="error"} 1"#,
            r#"issuer_guard_findings_total{rule="token-subpath",action="deny"} 1"#,
            r#"issuer_guard_admission_duration_seconds_count{webhook="validate"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
