//! What /readyz reports: the webhook answers correctly only with a
//! certificate, a config, and (with a cluster) a synced Secret cache, and it
//! must stop receiving traffic as soon as it starts shutting down.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use crate::cluster::LegacyTokenCache;

pub struct Readiness {
    certificate: AtomicBool,
    config: AtomicBool,
    shutting_down: AtomicBool,
    secrets: Arc<LegacyTokenCache>,
}

impl Readiness {
    pub fn new(secrets: Arc<LegacyTokenCache>) -> Self {
        Self {
            certificate: AtomicBool::new(false),
            config: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            secrets,
        }
    }

    pub fn certificate_loaded(&self) {
        self.certificate.store(true, Ordering::Release);
    }

    pub fn config_loaded(&self) {
        self.config.store(true, Ordering::Release);
    }

    pub fn shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// `Ok` when ready, otherwise every reason it is not.
    pub fn check(&self) -> Result<(), Vec<&'static str>> {
        let mut missing = Vec::new();
        if self.shutting_down.load(Ordering::Acquire) {
            missing.push("shutting down");
        }
        if !self.certificate.load(Ordering::Acquire) {
            missing.push("serving certificate not loaded");
        }
        if !self.config.load(Ordering::Acquire) {
            missing.push("config not loaded");
        }
        if !self.secrets.is_synced() {
            missing.push("Secret cache not synced with the API server");
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing)
        }
    }
}
