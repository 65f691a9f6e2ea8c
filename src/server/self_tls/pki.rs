//! The Secret's contents as a PKI: the CA that signs, the serving pair it
//! signed and, during a rotation, the CA coming in or the one going out;
//! the bundle of CAs the webhook configurations must trust; and whether a
//! bundle verifies a certificate. Pure: no I/O, and the clock only in
//! [`verifies`].

use std::{collections::BTreeMap, sync::Arc};

use rustls::{
    RootCertStore,
    client::{WebPkiServerVerifier, danger::ServerCertVerifier},
    crypto::CryptoProvider,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};

use super::super::issue::Issued;
use crate::cluster::Stored;

/// The Secret's data keys. `ca.crt`, `tls.crt` and `tls.key` are where
/// cert-manager and the chart's `helm` mode put them, so tools that read a
/// TLS Secret read this one too.
pub(crate) mod key {
    /// The CA that signed `tls.crt`.
    pub(crate) const CA_CERT: &str = "ca.crt";
    pub(crate) const CA_KEY: &str = "ca.key";
    pub(crate) const TLS_CERT: &str = "tls.crt";
    pub(crate) const TLS_KEY: &str = "tls.key";
    /// Every CA the webhook configurations must trust now, PEM: the one
    /// going out, the signing one, the one coming in. Written for people
    /// and tools; issuer-guard derives it from the three.
    pub(crate) const BUNDLE: &str = "ca-bundle.crt";
    /// Rotation, step 1 to 2: the CA in the bundle that does not sign yet.
    pub(crate) const NEXT_CA_CERT: &str = "next-ca.crt";
    pub(crate) const NEXT_CA_KEY: &str = "next-ca.key";
    /// Rotation, step 2 to 3: the CA that signed before, still trusted.
    /// Its key is gone: it never signs again.
    pub(crate) const PREVIOUS_CA_CERT: &str = "previous-ca.crt";
}

/// Unix seconds at which every webhook's caBundle was first seen carrying
/// the next CA: the overlap before it may sign counts from here.
pub(crate) const NEXT_PUBLISHED_AT: &str = "issuer-guard.io/next-ca-published-at";
/// Unix seconds at which the serving certificate moved to the current CA:
/// the overlap before the previous CA leaves the bundle counts from here.
pub(crate) const SWITCHED_AT: &str = "issuer-guard.io/ca-switched-at";

/// Keys (or annotations) to set, and with None to remove.
pub(crate) type Changes<T> = BTreeMap<String, Option<T>>;

/// A certificate and what the rotation reads of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cert {
    pub pem: String,
    pub der: Vec<u8>,
    pub not_after: i64,
    /// DNS names and IP addresses of its subject alternative names.
    pub names: Vec<String>,
    subject: Vec<u8>,
    issuer: Vec<u8>,
}

impl Cert {
    pub(super) fn parse(pem: &str) -> Result<Cert, String> {
        let der = CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| format!("not a PEM certificate: {e}"))?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| format!("not X.509: {e}"))?;
        let names = super::super::tls::san_names(&cert);
        Ok(Cert {
            pem: with_newline(pem),
            not_after: cert.validity().not_after.timestamp(),
            names,
            subject: cert.subject().as_raw().to_vec(),
            issuer: cert.issuer().as_raw().to_vec(),
            der: der.to_vec(),
        })
    }

    /// Whether `ca` issued it (by name: every CA issuer-guard makes has a
    /// name of its own).
    pub(super) fn issued_by(&self, ca: &Cert) -> bool {
        self.issuer == ca.subject
    }

    pub(super) fn covers(&self, names: &[String]) -> bool {
        names.iter().all(|n| self.names.contains(n))
    }
}

fn with_newline(pem: &str) -> String {
    let trimmed = pem.trim_end();
    format!("{trimmed}\n")
}

/// A certificate with its private key: a CA, or the serving pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Keyed {
    pub cert: Cert,
    pub key_pem: String,
}

impl Keyed {
    pub(super) fn of(issued: &Issued) -> Result<Keyed, String> {
        Ok(Keyed {
            cert: Cert::parse(&issued.cert_pem)?,
            key_pem: issued.key_pem.clone(),
        })
    }

    pub(super) fn issued(&self) -> Issued {
        Issued {
            cert_pem: self.cert.pem.clone(),
            key_pem: self.key_pem.clone(),
        }
    }
}

/// What the Secret holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pki {
    /// The CA that signed `serving`.
    pub active: Keyed,
    pub serving: Keyed,
    pub next: Option<Keyed>,
    pub previous: Option<Cert>,
    pub next_published_at: Option<i64>,
    pub switched_at: Option<i64>,
}

impl Pki {
    /// The PKI in a Secret; None when it carries none of the CA and serving
    /// keys (an empty Secret made for it is filled in). One that carries
    /// some but not a usable PKI is an error: it is never overwritten, as
    /// it may not be issuer-guard's.
    pub(super) fn read(stored: &Stored) -> Result<Option<Pki>, String> {
        let text = |k: &str| -> Result<Option<String>, String> {
            stored
                .data
                .get(k)
                .map(|v| String::from_utf8(v.clone()).map_err(|_| format!("{k} is not text")))
                .transpose()
        };
        let required = [key::CA_CERT, key::CA_KEY, key::TLS_CERT, key::TLS_KEY];
        if required.iter().all(|k| !stored.data.contains_key(*k)) {
            return Ok(None);
        }
        let need = |k: &str| -> Result<String, String> {
            text(k)?.ok_or_else(|| format!("it has no {k}"))
        };
        let keyed = |cert: &str, key: &str| -> Result<Keyed, String> {
            Ok(Keyed {
                cert: Cert::parse(&need(cert)?).map_err(|e| format!("{cert}: {e}"))?,
                key_pem: need(key)?,
            })
        };
        let next = match (text(key::NEXT_CA_CERT)?, text(key::NEXT_CA_KEY)?) {
            (Some(_), Some(_)) => Some(keyed(key::NEXT_CA_CERT, key::NEXT_CA_KEY)?),
            (None, None) => None,
            _ => {
                return Err(format!(
                    "it has one of {} and {} without the other",
                    key::NEXT_CA_CERT,
                    key::NEXT_CA_KEY
                ));
            }
        };
        let previous = text(key::PREVIOUS_CA_CERT)?
            .map(|pem| Cert::parse(&pem).map_err(|e| format!("{}: {e}", key::PREVIOUS_CA_CERT)))
            .transpose()?;
        let at = |k: &str| -> Result<Option<i64>, String> {
            stored
                .annotations
                .get(k)
                .map(|v| {
                    v.parse()
                        .map_err(|_| format!("annotation {k} is not Unix seconds: {v:?}"))
                })
                .transpose()
        };
        Ok(Some(Pki {
            active: keyed(key::CA_CERT, key::CA_KEY)?,
            serving: keyed(key::TLS_CERT, key::TLS_KEY)?,
            next,
            previous,
            next_published_at: at(NEXT_PUBLISHED_AT)?,
            switched_at: at(SWITCHED_AT)?,
        }))
    }

    /// The keys and annotations to write: every one of this file's, set or
    /// removed.
    pub(super) fn contents(&self) -> (Changes<Vec<u8>>, Changes<String>) {
        let bytes = |s: &str| Some(s.as_bytes().to_vec());
        let data = BTreeMap::from([
            (key::CA_CERT.to_owned(), bytes(&self.active.cert.pem)),
            (key::CA_KEY.to_owned(), bytes(&self.active.key_pem)),
            (key::TLS_CERT.to_owned(), bytes(&self.serving.cert.pem)),
            (key::TLS_KEY.to_owned(), bytes(&self.serving.key_pem)),
            (key::BUNDLE.to_owned(), Some(self.bundle())),
            (
                key::NEXT_CA_CERT.to_owned(),
                self.next.as_ref().and_then(|n| bytes(&n.cert.pem)),
            ),
            (
                key::NEXT_CA_KEY.to_owned(),
                self.next.as_ref().and_then(|n| bytes(&n.key_pem)),
            ),
            (
                key::PREVIOUS_CA_CERT.to_owned(),
                self.previous.as_ref().and_then(|p| bytes(&p.pem)),
            ),
        ]);
        let annotations = BTreeMap::from([
            (
                NEXT_PUBLISHED_AT.to_owned(),
                self.next_published_at.map(|t| t.to_string()),
            ),
            (
                SWITCHED_AT.to_owned(),
                self.switched_at.map(|t| t.to_string()),
            ),
        ]);
        (data, annotations)
    }

    /// The caBundle: the CA going out, the signing CA, the CA coming in,
    /// oldest first. A switch moves the signing role from one CA to the
    /// next without changing the bundle.
    pub(super) fn bundle(&self) -> Vec<u8> {
        let mut out = String::new();
        if let Some(previous) = &self.previous {
            out.push_str(&previous.pem);
        }
        out.push_str(&self.active.cert.pem);
        if let Some(next) = &self.next {
            out.push_str(&next.cert.pem);
        }
        out.into_bytes()
    }
}

/// The certificates of a PEM bundle, as DER; what does not parse is left
/// out.
fn bundle_certs(bundle: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(bundle)
        .filter_map(Result::ok)
        .collect()
}

/// Whether `bundle` holds exactly the certificate `ca`.
pub(crate) fn contains(bundle: &[u8], ca: &Cert) -> bool {
    bundle_certs(bundle).iter().any(|c| c.as_ref() == ca.der)
}

/// Whether a client trusting `bundle` (as the API server trusts a caBundle)
/// accepts `leaf` for `name` now.
pub(crate) fn verifies(
    bundle: &[u8],
    leaf: &Cert,
    name: &str,
    provider: &Arc<CryptoProvider>,
) -> bool {
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(bundle_certs(bundle));
    let Ok(server_name) = ServerName::try_from(name.to_owned()) else {
        return false;
    };
    if added == 0 {
        return false;
    }
    let Ok(verifier) =
        WebPkiServerVerifier::builder_with_provider(roots.into(), provider.clone()).build()
    else {
        return false;
    };
    verifier
        .verify_server_cert(
            &CertificateDer::from(leaf.der.clone()),
            &[],
            &server_name,
            &[],
            UnixTime::now(),
        )
        .is_ok()
}
