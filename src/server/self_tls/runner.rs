//! The loop every replica runs (see the module's doc for its five steps):
//! woken by the Secret's watch and a timer, it reads, decides with
//! [`plan`](super::plan), writes, serves and publishes.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use kube::runtime::watcher;

use super::{
    SelfTlsError, Settings, Status, Wiring,
    pki::{self, Cert, Pki},
    plan::{self, Context, Step},
};
use crate::{
    cluster::{self, Caller, Registered, Stored, TlsSecret, WebhookConfigurations},
    metrics::{ResultLabels, StageLabels, StepLabels},
    server::tls,
};

/// Each API request gets this long; a stuck API server must not stop the
/// loop.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Conflicting writes in one pass before giving up until the next.
const ATTEMPTS: usize = 5;
/// Steps taken in one pass at most.
const MAX_STEPS: usize = 8;

pub(super) struct Runner {
    settings: Settings,
    secret: TlsSecret,
    configurations: WebhookConfigurations,
    wiring: Wiring,
    status: Arc<Status>,
    /// Every webhook's caBundle as last read; None when unknown.
    bundles: Option<Vec<Vec<u8>>>,
    /// The certificate being served, once it is the Secret's.
    served: Option<Cert>,
    /// The Secret's PKI as last served from: a deleted Secret is written
    /// back from it, so that the CA every caBundle trusts stays the one
    /// that signs.
    last: Option<Pki>,
    /// The stage of the error last logged, so a streak is logged once.
    failing: Option<String>,
}

/// The Secret as the watch knows it: None until its first list is done.
type Watched = Option<Option<Stored>>;

impl Runner {
    pub(super) fn new(settings: Settings, wiring: Wiring, status: Arc<Status>) -> Self {
        let secret = TlsSecret::new(wiring.client.clone(), &settings.namespace, &settings.secret);
        let configurations =
            WebhookConfigurations::new(wiring.client.clone(), &settings.configurations);
        Runner {
            settings,
            secret,
            configurations,
            wiring,
            status,
            bundles: None,
            served: None,
            last: None,
            failing: None,
        }
    }

    pub(super) async fn run(mut self) {
        tracing::info!(
            secret = %self.settings.secret_ref(),
            webhook_configurations = %self.settings.configurations,
            names = ?self.settings.names,
            timing = ?self.settings.timing,
            "issuing and rotating the serving certificate in the TLS Secret"
        );
        let events = self.secret.watch();
        let mut events = std::pin::pin!(events);
        let mut tick = tokio::time::interval(self.settings.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watched: Watched = None;
        let mut listing: Option<Stored> = None;
        loop {
            tokio::select! {
                event = events.next() => match event {
                    None => {
                        tracing::error!("TLS Secret watch ended; the certificate is no longer rotated");
                        return;
                    }
                    Some(Ok(event)) => {
                        if !matches!(event, watcher::Event::Init) {
                            self.wiring.reach.answered(Caller::TlsSecret);
                        }
                        match event {
                            watcher::Event::Init => listing = None,
                            watcher::Event::InitApply(s) => listing = Some(Stored::of(s)),
                            watcher::Event::InitDone => watched = Some(listing.take()),
                            watcher::Event::Apply(s) => watched = Some(Some(Stored::of(s))),
                            watcher::Event::Delete(_) => watched = Some(None),
                        }
                    }
                    Some(Err(error)) => {
                        if cluster::watch_no_answer(&error) {
                            self.wiring.reach.no_answer(Caller::TlsSecret, &error);
                        } else {
                            tracing::debug!(%error, "TLS Secret watch failed; retrying");
                        }
                        continue;
                    }
                },
                _ = tick.tick() => {}
            }
            match self.pass(&mut watched).await {
                Ok(()) => {
                    if let Some(stage) = self.failing.take() {
                        tracing::info!(stage, "TLS Secret and caBundle in order again");
                    }
                }
                Err(error) => self.failed(&error),
            }
        }
    }

    fn failed(&mut self, error: &SelfTlsError) {
        self.wiring
            .metrics
            .tls_self_errors
            .get_or_create(&StageLabels {
                stage: error.stage(),
            })
            .inc();
        if error.no_answer() {
            self.wiring.reach.no_answer(Caller::TlsSecret, error);
            return;
        }
        let message = error.to_string();
        if self.failing.as_deref() == Some(message.as_str()) {
            tracing::debug!(%error, "TLS Secret or caBundle: failed again");
        } else {
            tracing::warn!(%error, "TLS Secret or caBundle: failed; serving what was last loaded, retrying");
            self.failing = Some(message);
        }
    }

    /// One pass over the five steps of the module's doc.
    async fn pass(&mut self, watched: &mut Watched) -> Result<(), SelfTlsError> {
        let Some(current) = watched.as_ref() else {
            return Ok(());
        };
        let read_bundles = self.read_bundles().await;
        let pki = self.parse(current.as_ref())?;
        // Planned on the watch's copy first, so that a pass with nothing to
        // do makes no request for the Secret.
        if plan::due(pki.as_ref(), &self.context()).is_some()
            && let Some(written) = self.step().await?
        {
            *watched = Some(Some(written));
        }
        let Some(Some(stored)) = watched.as_ref() else {
            return read_bundles;
        };
        let Some(pki) = self.parse(Some(stored))? else {
            return read_bundles;
        };
        self.serve(&pki)?;
        self.last = Some(pki.clone());
        read_bundles?;
        self.publish(&pki).await?;
        self.set_readiness();
        Ok(())
    }

    fn context(&self) -> Context<'_> {
        Context {
            now: tls::unix_now(),
            names: &self.settings.names,
            timing: self.settings.timing,
            bundles: self.bundles.as_deref(),
        }
    }

    fn parse(&self, stored: Option<&Stored>) -> Result<Option<Pki>, SelfTlsError> {
        match stored {
            None => Ok(None),
            Some(s) => Pki::read(s).map_err(|message| SelfTlsError::Unusable {
                secret: self.settings.secret_ref(),
                message,
            }),
        }
    }

    /// Reads both configurations into `self.bundles`. On failure the last
    /// view is kept (and readiness with it).
    async fn read_bundles(&mut self) -> Result<(), SelfTlsError> {
        let name = self.configurations.name.clone();
        let read = timed("webhooks", self.configurations.read())
            .await?
            .map_err(|source| SelfTlsError::Configurations {
                name: name.clone(),
                source,
            })?;
        self.wiring.reach.answered(Caller::TlsSecret);
        let mut bundles = Vec::new();
        for (registered, kind) in read.iter().zip([
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        ]) {
            let Some(registered) = registered else {
                self.bundles = None;
                self.status.set_verified(false);
                return Err(SelfTlsError::Missing { kind, name });
            };
            bundles.extend(registered.webhooks.iter().map(|(_, b)| b.clone()));
        }
        self.bundles = Some(bundles);
        Ok(())
    }

    /// Takes the steps due, as read-modify-writes of the Secret, until none
    /// is. Returns the Secret as last read or written.
    async fn step(&mut self) -> Result<Option<Stored>, SelfTlsError> {
        let secret = self.settings.secret_ref();
        let mut conflicts = 0;
        let mut fresh = self.get_secret().await?;
        if fresh.is_none() {
            fresh = self.restore().await?;
        }
        // A rotation takes one step per pass at most, bar a renewal or a
        // reissue beside it; more would be a decision that never settles.
        for _ in 0..MAX_STEPS {
            let pki = self.parse(fresh.as_ref())?;
            let ctx = self.context();
            let Some(step) = plan::due(pki.as_ref(), &ctx) else {
                return Ok(fresh);
            };
            let next = plan::apply(step, pki.as_ref(), &ctx)?;
            let (data, annotations) = next.contents();
            let written = timed(
                "secret",
                self.secret.write(fresh.as_ref(), data, annotations),
            )
            .await?
            .map_err(|source| SelfTlsError::Secret {
                secret: secret.clone(),
                source,
            })?;
            match written {
                cluster::Written::Stored(stored) => {
                    self.wiring
                        .metrics
                        .tls_rotation_steps
                        .get_or_create(&StepLabels {
                            step: step.as_str(),
                        })
                        .inc();
                    log_step(step, &next, &secret);
                    fresh = Some(stored);
                }
                cluster::Written::Conflict => {
                    tracing::debug!(
                        step = step.as_str(),
                        "TLS Secret changed under this replica; reading it again"
                    );
                    conflicts += 1;
                    if conflicts >= ATTEMPTS {
                        return Err(SelfTlsError::Contended {
                            secret,
                            attempts: ATTEMPTS,
                        });
                    }
                    fresh = self.get_secret().await?;
                }
            }
        }
        Ok(fresh)
    }

    /// Writes the PKI last served back into a Secret that is gone. A new
    /// CA would be served at once and trusted only once the caBundles carry
    /// it; the remembered one is trusted already. Returns the Secret as
    /// then read.
    async fn restore(&mut self) -> Result<Option<Stored>, SelfTlsError> {
        let Some(last) = &self.last else {
            return Ok(None);
        };
        let secret = self.settings.secret_ref();
        let (data, annotations) = last.contents();
        let written = timed("secret", self.secret.write(None, data, annotations))
            .await?
            .map_err(|source| SelfTlsError::Secret {
                secret: secret.clone(),
                source,
            })?;
        match written {
            cluster::Written::Stored(stored) => {
                self.wiring
                    .metrics
                    .tls_rotation_steps
                    .get_or_create(&StepLabels { step: "restore" })
                    .inc();
                tracing::warn!(%secret, "TLS Secret was deleted; written back from what this replica serves");
                Ok(Some(stored))
            }
            // Another replica wrote it back first.
            cluster::Written::Conflict => self.get_secret().await,
        }
    }

    async fn get_secret(&self) -> Result<Option<Stored>, SelfTlsError> {
        timed("secret", self.secret.get())
            .await?
            .map_err(|source| SelfTlsError::Secret {
                secret: self.settings.secret_ref(),
                source,
            })
    }

    /// Serves the Secret's pair if it is not served yet.
    fn serve(&mut self, pki: &Pki) -> Result<(), SelfTlsError> {
        if self.served.as_ref() == Some(&pki.serving.cert) {
            return Ok(());
        }
        let metrics = &self.wiring.metrics;
        let secret = self.settings.secret_ref();
        let path = std::path::PathBuf::from(format!("Secret {secret}"));
        let loaded = tls::certified_key(
            &path,
            pki.serving.cert.pem.as_bytes(),
            &path,
            pki.serving.key_pem.as_bytes(),
            &self.wiring.provider,
        );
        let key = match loaded {
            Ok(key) => key,
            Err(source) => {
                metrics
                    .tls_reloads
                    .get_or_create(&ResultLabels { result: "error" })
                    .inc();
                self.status.set_serving(false);
                return Err(SelfTlsError::Pair {
                    secret,
                    source: Box::new(source),
                });
            }
        };
        self.wiring.cert.replace(key);
        let not_after = pki.serving.cert.not_after;
        metrics.tls_cert_not_after.set(not_after);
        metrics.tls_cert_expiring.set(i64::from(tls::expires_within(
            not_after,
            self.wiring.expiry_warning,
        )));
        metrics.tls_ca_not_after.set(pki.active.cert.not_after);
        metrics
            .tls_reloads
            .get_or_create(&ResultLabels { result: "success" })
            .inc();
        tracing::info!(%secret, not_after, ca_not_after = pki.active.cert.not_after, "serving the certificate of the TLS Secret");
        self.served = Some(pki.serving.cert.clone());
        self.status.set_serving(true);
        Ok(())
    }

    /// Sets the caBundle of every webhook that does not carry the Secret's
    /// bundle, from a fresh read of the Secret, then reads them again.
    async fn publish(&mut self, watched: &Pki) -> Result<(), SelfTlsError> {
        let Some(bundles) = &self.bundles else {
            return Ok(());
        };
        let wanted = watched.bundle();
        if bundles.iter().all(|b| *b == wanted) {
            return Ok(());
        }
        // The watch may lag behind another replica's write: never publish
        // an older bundle over a newer one.
        let fresh = self.get_secret().await?;
        let Some(pki) = self.parse(fresh.as_ref())? else {
            return Ok(());
        };
        let bundle = pki.bundle();
        let name = self.configurations.name.clone();
        let read = timed("webhooks", self.configurations.read())
            .await?
            .map_err(|source| SelfTlsError::Configurations {
                name: name.clone(),
                source,
            })?;
        let stale: Vec<&Registered> = read
            .iter()
            .flatten()
            .filter(|r| !r.carries(&bundle))
            .collect();
        for registered in stale {
            let set = timed(
                "webhooks",
                self.configurations.set_bundle(registered, &bundle),
            )
            .await?
            .map_err(|source| SelfTlsError::Configurations {
                name: name.clone(),
                source,
            })?;
            if set {
                self.wiring.metrics.tls_ca_bundle_updates.inc();
                tracing::info!(
                    kind = registered.kind.as_str(),
                    name = %name,
                    cas = pem_count(&bundle),
                    "caBundle set to the TLS Secret's bundle"
                );
            }
        }
        self.read_bundles().await
    }

    /// Ready while the Secret's pair is served and every caBundle
    /// verifies it.
    fn set_readiness(&self) {
        // The first name is the one the API server calls (the Service's).
        let verifies = match (&self.served, &self.bundles, self.settings.names.first()) {
            (Some(served), Some(bundles), Some(name)) => {
                !bundles.is_empty()
                    && bundles
                        .iter()
                        .all(|b| pki::verifies(b, served, name, &self.wiring.provider))
            }
            _ => false,
        };
        let was = self.status.set_verified(verifies);
        if was != verifies {
            if verifies {
                tracing::info!("every caBundle verifies the served certificate; ready");
            } else {
                tracing::warn!(
                    "a caBundle does not verify the served certificate; unready until it does"
                );
            }
        }
    }
}

fn log_step(step: Step, pki: &Pki, secret: &str) {
    tracing::info!(
        step = step.as_str(),
        %secret,
        ca_not_after = pki.active.cert.not_after,
        cert_not_after = pki.serving.cert.not_after,
        next_ca = pki.next.is_some(),
        previous_ca = pki.previous.is_some(),
        "TLS Secret written"
    );
}

fn pem_count(bundle: &[u8]) -> usize {
    String::from_utf8_lossy(bundle)
        .matches("-----BEGIN CERTIFICATE-----")
        .count()
}

/// `request`, given [`REQUEST_TIMEOUT`].
async fn timed<T>(
    what: &'static str,
    request: impl std::future::Future<Output = T>,
) -> Result<T, SelfTlsError> {
    tokio::time::timeout(REQUEST_TIMEOUT, request)
        .await
        .map_err(|_| SelfTlsError::Timeout {
            what,
            timeout: REQUEST_TIMEOUT,
        })
}
