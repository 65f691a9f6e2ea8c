//! What /readyz reports. The certificate and config are loaded before any
//! listener opens, so what remains is whether the Secret cache has synced
//! (with a cluster), whether the generation ledger has been read (with
//! discovery), whether the TLS Secret's certificate is served and every
//! caBundle verifies it (with `--tls-secret`, where the listener opens with
//! a placeholder) and whether the process is shutting down, when it must
//! stop receiving traffic at once.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use super::self_tls;
use crate::cluster::LegacyTokenCache;

pub(super) struct Readiness {
    shutting_down: AtomicBool,
    secrets: Arc<LegacyTokenCache>,
    /// With discovery, whether the ledger has been read once: until then
    /// the stamp would be the static generation, which may be long gone.
    ledger_read: Option<Arc<AtomicBool>>,
    /// With --tls-secret: whether the Secret's pair is served and verified
    /// by the webhook configurations.
    self_tls: Option<Arc<self_tls::Status>>,
}

impl Readiness {
    pub(super) fn new(
        secrets: Arc<LegacyTokenCache>,
        ledger_read: Option<Arc<AtomicBool>>,
        self_tls: Option<Arc<self_tls::Status>>,
    ) -> Self {
        Self {
            shutting_down: AtomicBool::new(false),
            secrets,
            ledger_read,
            self_tls,
        }
    }

    pub(super) fn shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    pub(super) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// `Ok` when ready, otherwise every reason it is not.
    pub(super) fn check(&self) -> Result<(), Vec<&'static str>> {
        let mut missing = Vec::new();
        if self.shutting_down.load(Ordering::Acquire) {
            missing.push("shutting down");
        }
        if !self.secrets.is_synced() {
            missing.push("Secret cache not synced with the API server");
        }
        if self
            .ledger_read
            .as_ref()
            .is_some_and(|r| !r.load(Ordering::Acquire))
        {
            missing.push("generation ledger not read from the API server yet");
        }
        if let Some(tls) = &self.self_tls {
            missing.extend(tls.missing());
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing)
        }
    }
}
