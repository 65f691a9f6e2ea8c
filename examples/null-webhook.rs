//! The benchmark's null webhook: `issuer-guard serve` with the review
//! replaced by a fixed allowed AdmissionReview.
//!
//! It takes the same flags as `serve` and runs the product's own server
//! (`issuer_guard::server::run_with_routes`): the same certificate handling,
//! rustls configuration, accept loop, hyper HTTP/1.1 keep-alive server, body
//! limit and deadline layers. The handlers receive the whole body, as the
//! real ones do, but never parse it, so the difference between the two is
//! what the review itself costs (decode, judge, patch, encode, metrics).
//! scripts/bench runs both.

use std::process::ExitCode;

use axum::{
    Router,
    body::Bytes,
    extract::rejection::BytesRejection,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use clap::Parser;
use issuer_guard::{cli::ServeArgs, logging, server};

/// What an allowed review returns, minus the request's uid: the null
/// webhook does not read the body, so it cannot echo it.
const ALLOWED: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"00000000-0000-0000-0000-000000000000","allowed":true,"status":{"metadata":{},"code":200}}}"#;

#[derive(Debug, Parser)]
#[command(
    name = "null-webhook",
    about = "issuer-guard's server answering every review with a fixed allowed response (benchmark baseline)"
)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.serve.log_format.into());
    // The same runtime as `issuer-guard serve` (src/main.rs).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("null-webhook: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(server::run_with_routes(cli.serve.settings(), |_state| {
        Router::new()
            .route("/mutate", post(null))
            .route("/validate", post(null))
    }));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("null-webhook: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Takes the body like the real handlers (so the body limit applies and the
/// upload is read), and answers without looking at it.
async fn null(body: Result<Bytes, BytesRejection>) -> Response {
    match body {
        Ok(_) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            ALLOWED,
        )
            .into_response(),
        Err(rejection) => rejection.into_response(),
    }
}
