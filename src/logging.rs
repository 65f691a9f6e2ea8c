//! Logging to stderr, as human-readable text or one JSON object a line.
//! `RUST_LOG` refines the level; the default is `info`.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

pub fn init(format: Format) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
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
