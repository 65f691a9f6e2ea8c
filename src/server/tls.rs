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

use crate::{metrics::Metrics, reload};

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
    #[error("{path}: cannot read the certificate: {message}")]
    Unreadable { path: PathBuf, message: String },
    #[error("{path}: the certificate is not valid until {not_before} (Unix seconds); now is {now}")]
    NotYetValid {
        path: PathBuf,
        not_before: i64,
        now: i64,
    },
    #[error(
        "{path}: the certificate expired at {not_after} (Unix seconds); now is {now}: renew it"
    )]
    Expired {
        path: PathBuf,
        not_after: i64,
        now: i64,
    },
    #[error(
        "{path}: the new certificate does not cover {missing:?}, which the one in use does; clients that use those names would fail (restart to serve other names)"
    )]
    NamesDropped { path: PathBuf, missing: Vec<String> },
    #[error("{path}: not a usable client CA bundle: {message}")]
    ClientCa { path: PathBuf, message: String },
    #[error("cannot build the TLS configuration: {0}")]
    Config(rustls::Error),
    #[error("development certificates in {dir}: {message}")]
    DevCert { dir: PathBuf, message: String },
}

/// The crypto provider of every TLS endpoint of the process.
pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a certificate chain and its key, and checks that they belong
/// together: a mismatched pair would fail every handshake.
pub(super) fn certified_key(
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

/// What issuer-guard checks of a serving certificate: when it is valid and
/// the names it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CertFacts {
    pub not_before: i64,
    pub not_after: i64,
    /// DNS names and IP addresses of the subject alternative names.
    pub names: Vec<String>,
}

impl CertFacts {
    pub(super) fn of(path: &Path, key: &CertifiedKey) -> Result<CertFacts, TlsError> {
        let unreadable = |message: String| TlsError::Unreadable {
            path: path.to_owned(),
            message,
        };
        let leaf = key
            .cert
            .first()
            .ok_or_else(|| unreadable("empty chain".into()))?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(leaf).map_err(|e| unreadable(e.to_string()))?;
        let validity = cert.validity();
        let names = san_names(&cert);
        Ok(CertFacts {
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            names,
        })
    }

    /// Refuses a certificate that cannot serve now: not yet valid, or
    /// expired. Loading one would fail every handshake, and with a
    /// fail-closed registration every admission.
    pub(super) fn check_valid(&self, path: &Path, now: i64) -> Result<(), TlsError> {
        if now < self.not_before {
            return Err(TlsError::NotYetValid {
                path: path.to_owned(),
                not_before: self.not_before,
                now,
            });
        }
        if now >= self.not_after {
            return Err(TlsError::Expired {
                path: path.to_owned(),
                not_after: self.not_after,
                now,
            });
        }
        Ok(())
    }

    /// Refuses a replacement that drops a name the served certificate covers.
    pub(super) fn check_covers(&self, path: &Path, serving: &CertFacts) -> Result<(), TlsError> {
        let missing: Vec<String> = serving
            .names
            .iter()
            .filter(|n| !self.names.contains(n))
            .cloned()
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(TlsError::NamesDropped {
                path: path.to_owned(),
                missing,
            })
        }
    }
}

/// The DNS names and IP addresses a certificate is for, as text: what
/// the served pair and issuer-guard's own certificates are checked against.
pub(crate) fn san_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(d) => Some((*d).to_owned()),
            GeneralName::IPAddress(ip) => match ip.len() {
                4 => <[u8; 4]>::try_from(*ip)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*ip)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Seconds since the Unix epoch.
pub(super) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Hands every handshake the pair current at that moment.
#[derive(Debug)]
pub(super) struct ReloadingCert {
    current: ArcSwap<CertifiedKey>,
}

impl ReloadingCert {
    pub(super) fn new(initial: CertifiedKey) -> Self {
        Self {
            current: ArcSwap::from_pointee(initial),
        }
    }

    pub(super) fn replace(&self, next: CertifiedKey) {
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
/// With `client_auth`, clients must present a certificate it accepts.
pub(super) fn server_config(
    provider: Arc<CryptoProvider>,
    cert: Arc<ReloadingCert>,
    client_auth: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?;
    let builder = match client_auth {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The certificate and key files, read once at start-up.
pub(super) struct PairFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl PairFiles {
    /// Reads, parses and checks the pair; returns it with what was checked
    /// and the bytes read, which seed the watcher so that it reloads only
    /// what changes after this read.
    pub(super) fn load(&self, provider: &CryptoProvider) -> Result<LoadedPair, TlsError> {
        let contents = reload::read_all(&[self.cert.clone(), self.key.clone()])?;
        let key = self.parse(&contents, provider)?;
        let facts = CertFacts::of(&self.cert, &key)?;
        facts.check_valid(&self.cert, unix_now())?;
        Ok(LoadedPair {
            key,
            facts,
            contents,
        })
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

    /// Swaps in the pair whenever the files change. A pair that does not
    /// parse, does not match, is not valid now, or drops a name the served
    /// one covers is logged and counted, and the previous pair keeps serving.
    pub(super) fn watch(
        self,
        loaded: &LoadedPair,
        interval: Duration,
        provider: Arc<CryptoProvider>,
        cert: Arc<ReloadingCert>,
        metrics: Arc<Metrics>,
        expiry_warning: Duration,
    ) -> JoinHandle<()> {
        let swap = reload::Swap {
            what: "serving certificate".to_owned(),
            paths: vec![self.cert.clone(), self.key.clone()],
            seen: loaded.contents.clone(),
            interval,
            results: metrics.tls_reloads.clone(),
        };
        let mut serving = loaded.facts.clone();
        let cert_path = self.cert.clone();
        let build = move |contents: &[Vec<u8>]| -> Result<_, TlsError> {
            let key = self.parse(contents, &provider)?;
            let facts = CertFacts::of(&self.cert, &key)?;
            facts.check_valid(&self.cert, unix_now())?;
            facts.check_covers(&self.cert, &serving)?;
            // The swap cannot fail from here on, so this is now what serves.
            serving = facts.clone();
            Ok((key, facts))
        };
        swap.spawn(build, move |(next, facts): (CertifiedKey, CertFacts)| {
            cert.replace(next);
            metrics.tls_cert_not_after.set(facts.not_after);
            metrics
                .tls_cert_expiring
                .set(i64::from(expires_within(facts.not_after, expiry_warning)));
            tracing::info!(cert = %cert_path.display(), not_after = facts.not_after, "serving certificate reloaded");
        })
    }
}

/// A pair as loaded at start-up.
pub(super) struct LoadedPair {
    pub key: CertifiedKey,
    pub facts: CertFacts,
    pub contents: Vec<Vec<u8>>,
}

/// Whether a certificate with this notAfter expires within `window`.
pub(super) fn expires_within(not_after: i64, window: Duration) -> bool {
    let window = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
    not_after.saturating_sub(unix_now()) < window
}

/// Watches the served certificate's expiry: sets the expiring gauge while it
/// is within `window` of its notAfter, and says so in the log once an hour.
pub(super) fn watch_expiry(metrics: Arc<Metrics>, window: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_warned: Option<tokio::time::Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            let not_after = metrics.tls_cert_not_after.get();
            // Nothing loaded yet (with --tls-secret, until the Secret's pair
            // is served): nothing can expire.
            if not_after == 0 {
                continue;
            }
            let left = not_after.saturating_sub(unix_now());
            let expiring = expires_within(not_after, window);
            metrics.tls_cert_expiring.set(i64::from(expiring));
            let due = last_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600));
            if expiring && due {
                tracing::warn!(
                    not_after,
                    seconds_left = left,
                    "the serving certificate expires soon; renew it"
                );
                last_warned = Some(tokio::time::Instant::now());
            }
        }
    })
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
        let config = server_config(provider(), resolver, None).expect("config");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
