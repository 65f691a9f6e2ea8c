//! Optional mutual TLS: with `--client-ca`, every client must present a
//! certificate signed by that bundle. The API server presents one when its
//! admission configuration gives the webhook a kubeconfig with a client
//! certificate. The bundle is re-read when it changes, like the serving pair;
//! a bundle that does not parse is logged and the previous one kept.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use rustls::{
    DigitallySignedStruct, DistinguishedName, Error, RootCertStore, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, UnixTime, pem::PemObject},
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use tokio::task::JoinHandle;

use super::tls::TlsError;
use crate::{metrics::Metrics, reload};

/// Verifies client certificates against the bundle current at each
/// handshake.
#[derive(Debug)]
pub(super) struct ReloadingClientVerifier {
    current: ArcSwap<Arc<dyn ClientCertVerifier>>,
}

impl ReloadingClientVerifier {
    pub(super) fn new(initial: Arc<dyn ClientCertVerifier>) -> Self {
        Self {
            current: ArcSwap::from_pointee(initial),
        }
    }

    fn now(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::clone(&self.current.load())
    }
}

/// A verifier requiring certificates signed by the PEM bundle `pem`.
pub(super) fn verifier(
    path: &Path,
    pem: &[u8],
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let invalid = |message: String| TlsError::ClientCa {
        path: path.to_owned(),
        message,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| invalid(e.to_string()))?;
        roots.add(cert).map_err(|e| invalid(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(invalid("no PEM certificate in the bundle".into()));
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .build()
        .map_err(|e| invalid(e.to_string()))
}

/// Re-reads the bundle every `interval` and swaps in each good new one.
pub(super) fn watch(
    path: PathBuf,
    seen: Vec<u8>,
    interval: Duration,
    provider: Arc<CryptoProvider>,
    target: Arc<ReloadingClientVerifier>,
    metrics: Arc<Metrics>,
) -> JoinHandle<()> {
    let swap = reload::Swap {
        what: "client CA bundle".to_owned(),
        paths: vec![path.clone()],
        seen: vec![seen],
        interval,
        results: metrics.client_ca_reloads.clone(),
    };
    let build = move |contents: &[Vec<u8>]| {
        let pem = contents.first().map_or(&[][..], Vec::as_slice);
        verifier(&path, pem, &provider).map(|v| (v, path.clone()))
    };
    swap.spawn(build, move |(next, path)| {
        target.current.store(Arc::new(next));
        tracing::info!(client_ca = %path.display(), "client CA bundle reloaded");
    })
}

impl ClientCertVerifier for ReloadingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    // Hints would have to borrow from the bundle of the moment, which can be
    // swapped under them; clients that have one certificate send it anyway.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.now()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.now().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.now().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.now().supported_verify_schemes()
    }
}
