//! Certificates issuer-guard issues for itself with `--tls-secret`: a CA,
//! and serving certificates that CA signs. rcgen, as `devcert.rs` uses it,
//! but in memory only: what is issued goes into the Secret, never to a file.
//! Keys are ECDSA P-256 (rcgen's default), which every API server verifies.
//! Times are Unix seconds given by the caller, so that the rotation's
//! decisions can be tested at any moment.

use std::{fmt, time::Duration};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// A certificate and its private key, as PEM.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never a private key in a log line.
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// How far back a certificate's validity starts. A host whose clock runs a
/// little behind the issuing replica's must still accept a certificate
/// issued a moment ago; an hour covers any clock NTP keeps.
const BACKDATE_SECONDS: i64 = 3600;

/// The longest common name X.509 allows (RFC 5280, ub-common-name).
const MAX_COMMON_NAME: usize = 64;

/// A new CA, valid until `not_after`. Its common name carries the moment it
/// was made, so that the CAs of one bundle can be told apart by name.
pub(crate) fn ca(now: i64, not_after: i64) -> Result<Issued, rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "issuer-guard");
    name.push(
        DnType::CommonName,
        format!("issuer-guard CA {}", stamp(now)),
    );
    params.distinguished_name = name;
    // It signs serving certificates only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, now, not_after);
    let cert = params.self_signed(&key)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A serving certificate for `names` (DNS names, or IP addresses, which
/// rcgen recognises), signed by `ca`, valid until `not_after`.
pub(crate) fn serving(
    ca: &Issued,
    names: &[String],
    now: i64,
    not_after: i64,
) -> Result<Issued, rcgen::Error> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    // The issuer's name and key identifier are read from the CA certificate
    // itself, so the new certificate chains to exactly that one.
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let key = KeyPair::generate()?;
    let params = serving_params(names, now, not_after)?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A self-signed certificate for `names` that nothing trusts, served only
/// until the Secret's pair is loaded: the TLS listener needs a certificate
/// from its first handshake, and the replica stays unready meanwhile.
pub(crate) fn placeholder(names: &[String], now: i64) -> Result<Issued, rcgen::Error> {
    let key = KeyPair::generate()?;
    let cert = serving_params(names, now, now + 86_400)?.self_signed(&key)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn serving_params(
    names: &[String],
    now: i64,
    not_after: i64,
) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(names.to_vec())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "issuer-guard");
    if let Some(first) = names.first().filter(|n| n.len() <= MAX_COMMON_NAME) {
        name.push(DnType::CommonName, first.as_str());
    }
    params.distinguished_name = name;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, now, not_after);
    Ok(params)
}

/// From [`BACKDATE_SECONDS`] before `now` to `not_after`. rcgen takes its
/// own time type; building it from rcgen's epoch helper, as devcert.rs does,
/// needs no direct dependency on that crate.
fn set_validity(params: &mut CertificateParams, now: i64, not_after: i64) {
    let at = |unix: i64| {
        rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(u64::try_from(unix).unwrap_or(0))
    };
    params.not_before = at(now.saturating_sub(BACKDATE_SECONDS));
    params.not_after = at(not_after);
}

/// `now` as RFC 3339, for names.
fn stamp(now: i64) -> String {
    jiff::Timestamp::from_second(now).map_or_else(|_| now.to_string(), |t| t.to_string())
}
