//! Test support for the end-to-end tests: a real control plane (etcd,
//! kube-apiserver, kube-controller-manager) on loopback ports, issuer-guard
//! running as a local process and registered with it, and a stand-in IRSA
//! injector webhook; and `issuer-guard serve` run on its own for the TLS
//! and HTTP tests. Every test gets its own processes, ports and
//! directories, and every process dies with the fixture that started it.

// Each test file compiles this module on its own and uses a part of it.
#![allow(dead_code, unused_imports)]

pub mod alternating;
pub mod api;
pub mod binaries;
pub mod chart;
pub mod controlplane;
pub mod injector;
pub mod objects;
pub mod pki;
pub mod process;
pub mod relay;
pub mod rotation;
pub mod serve;
pub mod webhook;

use std::{future::Future, time::Duration};

pub use controlplane::{ControlPlane, ServiceAccountFlags};
pub use injector::Injector;
pub use pki::SaKey;
pub use webhook::IssuerGuard;

/// The `issuer-guard` binary the tests start: the release build of the
/// binary alone that scripts/test builds and names in `ISSUER_GUARD_BIN`,
/// which has only the product's dependency features. cargo's test build of
/// it has the dev-dependencies' features unified in (serde_json
/// `preserve_order`), so it is not what ships and is never a fallback: a
/// missing variable fails the test, saying how to set it.
pub fn issuer_guard_bin() -> std::path::PathBuf {
    const RUN: &str = "run scripts/test, which builds the release binary and sets it \
(or: cargo build --release --bin issuer-guard && export ISSUER_GUARD_BIN=$PWD/target/release/issuer-guard)";
    let Some(path) = std::env::var_os("ISSUER_GUARD_BIN").filter(|p| !p.is_empty()) else {
        panic!("ISSUER_GUARD_BIN is not set: {RUN}");
    };
    let path = std::path::PathBuf::from(path);
    assert!(
        path.is_file(),
        "ISSUER_GUARD_BIN={} is not a file: {RUN}",
        path.display()
    );
    path
}

/// The namespace every scenario works in.
pub const NS: &str = "e2e";

/// A time limit for waiting on something, failing the test naming what
/// was awaited when it passes.
pub struct Deadline {
    what: String,
    timeout: Duration,
    until: tokio::time::Instant,
}

impl Deadline {
    pub fn new(what: impl Into<String>, timeout: Duration) -> Self {
        Self {
            what: what.into(),
            timeout,
            until: tokio::time::Instant::now() + timeout,
        }
    }

    /// Sleeps before the next try, or fails the test if time is up.
    pub async fn tick(&self) {
        assert!(
            tokio::time::Instant::now() < self.until,
            "timed out after {:?} waiting for {}",
            self.timeout,
            self.what
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `check` until it returns `Some`, and fails the test naming `what`
/// when `timeout` passes first.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Deadline::new(what, timeout);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        deadline.tick().await;
    }
}
