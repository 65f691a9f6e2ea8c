//! The serving certificate: loaded from PEM files, swapped in place when the
//! files change, so that new handshakes get the new pair while established
//! connections keep the session they negotiated.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::task::JoinHandle;

use crate::{
    metrics::{Metrics, ResultLabels},
    reload,
};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("give both --tls-cert and --tls-key, or neither to use development certificates")]
    PartialFlags,
    #[error(transparent)]
    Read(#[from] reload::ReadError),
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: not a PEM certificate chain: {source}")]
    Certificate {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path}: not a PEM private key: {source}")]
    Key {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{key} does not fit {cert}: {source}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot build the TLS configuration: {0}")]
    Config(rustls::Error),
    #[error("development certificates in {dir}: {message}")]
    DevCert { dir: PathBuf, message: String },
}

/// The crypto provider of every TLS endpoint of the process.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a certificate chain and its key, and checks that they belong
/// together: a mismatched pair would fail every handshake.
pub fn certified_key(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Certificate {
            path: cert_path.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| TlsError::Key {
        path: key_path.to_owned(),
        source,
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Pair {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        source,
    })
}

/// Hands every handshake the pair current at that moment.
#[derive(Debug)]
pub struct ReloadingCert {
    current: ArcSwap<CertifiedKey>,
}

impl ReloadingCert {
    pub fn new(initial: CertifiedKey) -> Self {
        Self {
            current: ArcSwap::from_pointee(initial),
        }
    }

    pub fn replace(&self, next: CertifiedKey) {
        self.current.store(Arc::new(next));
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// TLS 1.2 and 1.3 with ring. Only HTTP/1.1 is offered: kube-apiserver
/// talks HTTP/1.1 to webhooks, and one protocol keeps draining simple.
pub fn server_config(
    provider: Arc<CryptoProvider>,
    cert: Arc<ReloadingCert>,
) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The certificate and key files, read once at start-up.
pub struct PairFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl PairFiles {
    /// Reads and parses the pair; returns it with the bytes read, which seed
    /// the watcher so that it reloads only what changes after this read.
    pub fn load(
        &self,
        provider: &CryptoProvider,
    ) -> Result<(CertifiedKey, Vec<Vec<u8>>), TlsError> {
        let contents = reload::read_all(&[self.cert.clone(), self.key.clone()])?;
        let key = self.parse(&contents, provider)?;
        Ok((key, contents))
    }

    fn parse(
        &self,
        contents: &[Vec<u8>],
        provider: &CryptoProvider,
    ) -> Result<CertifiedKey, TlsError> {
        match contents {
            [cert, key] => certified_key(&self.cert, cert, &self.key, key, provider),
            _ => Err(TlsError::NoCertificate {
                path: self.cert.clone(),
            }),
        }
    }

    /// Swaps in the pair whenever the files change; a bad pair is logged and
    /// counted, and the previous pair keeps serving.
    pub fn watch(
        self,
        seen: Vec<Vec<u8>>,
        interval: Duration,
        provider: Arc<CryptoProvider>,
        cert: Arc<ReloadingCert>,
        metrics: Arc<Metrics>,
    ) -> JoinHandle<()> {
        let paths = vec![self.cert.clone(), self.key.clone()];
        reload::spawn(paths, seen, interval, move |read| {
            let loaded = read
                .map_err(TlsError::from)
                .and_then(|contents| self.parse(&contents, &provider));
            let result = match loaded {
                Ok(next) => {
                    cert.replace(next);
                    tracing::info!(cert = %self.cert.display(), "serving certificate reloaded");
                    "success"
                }
                Err(error) => {
                    tracing::error!(%error, "serving certificate not reloaded; the previous one stays in use");
                    "error"
                }
            };
            metrics
                .tls_reloads
                .get_or_create(&ResultLabels { result })
                .inc();
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (String, String) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        (cert.pem(), signing_key.serialize_pem())
    }

    fn load(cert: &str, key: &str) -> Result<CertifiedKey, TlsError> {
        certified_key(
            Path::new("tls.crt"),
            cert.as_bytes(),
            Path::new("tls.key"),
            key.as_bytes(),
            &provider(),
        )
    }

    #[test]
    fn accepts_a_matching_pair() {
        let (cert, key) = pair();
        assert!(load(&cert, &key).is_ok());
    }

    #[test]
    fn rejects_a_key_of_another_certificate() {
        let (cert, _) = pair();
        let (_, other_key) = pair();
        let err = load(&cert, &other_key).expect_err("mismatch");
        assert!(matches!(err, TlsError::Pair { .. }), "{err}");
    }

    #[test]
    fn rejects_garbage() {
        let (cert, key) = pair();
        assert!(matches!(
            load("", &key),
            Err(TlsError::NoCertificate { .. })
        ));
        assert!(matches!(
            load(&cert, "not a key"),
            Err(TlsError::Key { .. })
        ));
        let truncated = &cert[..cert.len() / 2];
        assert!(load(truncated, &key).is_err());
    }

    #[test]
    fn builds_a_config_offering_http1_only() {
        let (cert, key) = pair();
        let resolver = Arc::new(ReloadingCert::new(load(&cert, &key).expect("pair")));
        let config = server_config(provider(), resolver).expect("config");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
