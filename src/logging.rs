//! Logging to stderr, as human-readable text or one JSON object a line.
//! `RUST_LOG` refines the level; the default is `info`.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// The client library logs every failed request at ERROR, about ten a
/// second while the API server is unreachable. issuer-guard says once that
/// it is unreachable and once that it is back, so these are off unless
/// `RUST_LOG` names the library itself.
const CLIENT_REQUESTS: &str = "kube_client::client::builder=off";

fn filter(rust_log: Option<&str>) -> EnvFilter {
    let base = rust_log.filter(|s| !s.trim().is_empty()).unwrap_or("info");
    let directives = if base.contains("kube_client") {
        base.to_owned()
    } else {
        format!("{base},{CLIENT_REQUESTS}")
    };
    EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{CLIENT_REQUESTS}")))
}

pub fn init(format: Format) {
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref());
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only help a person at a terminal; in a pod's log
        // they are noise.
        .with_ansi(std::io::stderr().is_terminal());
    // try_init: a second initialisation (tests, embedding) keeps the first.
    let _ = match format {
        Format::Text => builder.try_init(),
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_request_errors_are_off_unless_asked_for() {
        assert_eq!(
            filter(None).to_string(),
            "kube_client::client::builder=off,info"
        );
        assert_eq!(
            filter(Some("debug")).to_string(),
            "kube_client::client::builder=off,debug"
        );
        assert_eq!(
            filter(Some("kube_client=trace")).to_string(),
            "kube_client=trace"
        );
    }
}
