//! HTTP routes: the two webhooks on the TLS listener, and health, readiness
//! and metrics on the plain listener.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Request, State, rejection::BytesRejection},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};

use super::readiness::Readiness;
use crate::{
    admission::{Endpoint, Webhook},
    metrics::Metrics,
};

const JSON: &str = "application/json";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The product's `/mutate` and `/validate` handlers, before [`webhooks`]
/// wraps them in the limits every webhook route gets.
pub fn reviews(webhook: Arc<Webhook>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .with_state(webhook)
}

/// Wraps the webhook handlers in the body limit and the request deadline.
pub fn webhooks(handlers: Router, max_body_bytes: usize, deadline: Duration) -> Router {
    handlers
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(deadline, with_deadline))
}

async fn mutate(
    State(webhook): State<Arc<Webhook>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    review(&webhook, Endpoint::Mutate, body)
}

async fn validate(
    State(webhook): State<Arc<Webhook>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    review(&webhook, Endpoint::Validate, body)
}

/// The review runs on the async worker: it is microseconds of CPU with no
/// I/O, so moving it to a blocking thread would cost more than it saves.
fn review(webhook: &Webhook, endpoint: Endpoint, body: Result<Bytes, BytesRejection>) -> Response {
    match body {
        Ok(body) => {
            let reply = webhook.review(endpoint, &body);
            let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_REQUEST);
            (status, [(header::CONTENT_TYPE, JSON)], reply.body).into_response()
        }
        // Too large (413), or the client failed mid-body.
        Err(rejection) => json_error(rejection.status(), &rejection.body_text()),
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

pub fn health(readiness: Arc<Readiness>, metrics: Arc<Metrics>) -> Router {
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
