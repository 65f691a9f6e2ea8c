//! `--tls-secret`: issuer-guard makes, rotates and serves its own CA and
//! serving certificate, kept in a Secret, and keeps the caBundle of its two
//! webhook configurations current, so that the chart renders no certificate
//! and no caBundle (a `helm template` render is the same every time, as a
//! GitOps tool needs).
//!
//! Every replica runs the same loop, with no leader: on every change of the
//! Secret (a watch by name) and every [`Settings::interval`] it
//!
//! 1. reads both webhook configurations;
//! 2. takes the step of the rotation that is due ([`plan`]) as a
//!    read-modify-write of the Secret carrying its resourceVersion: of
//!    replicas writing at once one wins, the others get 409, read the
//!    winner's Secret and find the step taken;
//! 3. serves the Secret's pair, published into the TLS resolver
//!    ([`ReloadingCert`]): no file is written, and reviews never wait on
//!    any of this;
//! 4. sets the caBundle of every webhook that does not carry the Secret's
//!    bundle, from a fresh read of the Secret, so that a replica whose
//!    watch lags never writes an older bundle back;
//! 5. is ready only while it serves the Secret's pair and every caBundle
//!    verifies that pair (`/readyz`), so the Service never sends the API
//!    server to a backend it cannot verify.
//!
//! When the API server cannot be reached the replica keeps serving what it
//! has and keeps its readiness: nothing changes the certificates meanwhile.

mod error;
mod pki;
mod plan;
mod runner;
mod settings;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use kube::Client;
use rustls::crypto::CryptoProvider;
use tokio::task::JoinHandle;

pub use error::SelfTlsError;
pub(crate) use settings::Settings;

use super::{
    issue,
    tls::{self, ReloadingCert},
};
use crate::{cluster::Reachability, metrics::Metrics};

/// What `/readyz` reads.
#[derive(Debug, Default)]
pub(crate) struct Status {
    serving_secret_pair: AtomicBool,
    bundle_verifies: AtomicBool,
}

impl Status {
    pub(super) fn set_serving(&self, serving: bool) {
        self.serving_secret_pair.store(serving, Ordering::Release);
    }

    /// Sets whether every caBundle verifies the served pair; returns what
    /// it was.
    pub(super) fn set_verified(&self, verified: bool) -> bool {
        self.bundle_verifies.swap(verified, Ordering::AcqRel)
    }
}

impl Status {
    /// Why the replica is not ready, if it is not.
    pub(super) fn missing(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if !self.serving_secret_pair.load(Ordering::Acquire) {
            missing.push("not serving the certificate of the TLS Secret yet");
        }
        if !self.bundle_verifies.load(Ordering::Acquire) {
            missing.push(
                "the webhook configurations' caBundle does not verify the served certificate",
            );
        }
        missing
    }
}

/// A throwaway certificate for the listener's first handshakes, until the
/// Secret's pair is served; nothing trusts it, and the replica is unready.
pub(crate) fn placeholder(
    settings: &Settings,
    provider: &CryptoProvider,
) -> Result<rustls::sign::CertifiedKey, SelfTlsError> {
    let issued = issue::placeholder(&settings.names, tls::unix_now()).map_err(|source| {
        SelfTlsError::Issue {
            what: "a placeholder certificate",
            source,
        }
    })?;
    let path = std::path::Path::new("(placeholder)");
    tls::certified_key(
        path,
        issued.cert_pem.as_bytes(),
        path,
        issued.key_pem.as_bytes(),
        provider,
    )
    .map_err(|source| SelfTlsError::Pair {
        secret: settings.secret_ref(),
        source: Box::new(source),
    })
}

/// What the loop needs beside its settings.
pub(crate) struct Wiring {
    pub client: Client,
    pub cert: Arc<ReloadingCert>,
    pub provider: Arc<CryptoProvider>,
    pub metrics: Arc<Metrics>,
    pub reach: Arc<Reachability>,
    pub expiry_warning: Duration,
}

/// Starts the loop; the returned status is what readiness reads.
pub(crate) fn spawn(settings: Settings, wiring: Wiring) -> (Arc<Status>, JoinHandle<()>) {
    let status = Arc::new(Status::default());
    let runner = runner::Runner::new(settings, wiring, status.clone());
    (status, tokio::spawn(runner.run()))
}
