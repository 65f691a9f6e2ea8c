//! Development certificates: a local CA and a serving certificate for
//! `localhost` and `127.0.0.1`, made once and reused, so that a developer can
//! run `serve` without a PKI and point a client at `ca.crt`.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use super::tls::TlsError;

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";

const CA_COMMON_NAME: &str = "issuer-guard development CA";
const DAY: Duration = Duration::from_secs(86_400);

/// Where the development files are.
#[derive(Debug, Clone)]
pub struct DevCerts {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Whether this call made the serving certificate.
    pub created: bool,
}

/// Makes what is missing under `dir` and returns the paths. An existing CA
/// is kept so that clients that already trust it go on working.
pub fn ensure(dir: &Path) -> Result<DevCerts, TlsError> {
    let fail = |message: String| TlsError::DevCert {
        dir: dir.to_owned(),
        message,
    };
    fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create the directory: {e}")))?;
    let path = |name: &str| dir.join(name);
    let certs = DevCerts {
        ca: path(CA_CERT),
        cert: path(TLS_CERT),
        key: path(TLS_KEY),
        created: false,
    };

    let (ca_key, ca_created) = if certs.ca.exists() && path(CA_KEY).exists() {
        let pem = fs::read_to_string(path(CA_KEY))
            .map_err(|e| fail(format!("cannot read {CA_KEY}: {e}")))?;
        let key = KeyPair::from_pem(&pem).map_err(|e| fail(format!("{CA_KEY}: {e}")))?;
        (key, false)
    } else {
        let key = KeyPair::generate().map_err(|e| fail(e.to_string()))?;
        let cert = ca_params()
            .self_signed(&key)
            .map_err(|e| fail(e.to_string()))?;
        write_file(&path(CA_KEY), &key.serialize_pem(), 0o600).map_err(&fail)?;
        write_file(&certs.ca, &cert.pem(), 0o644).map_err(&fail)?;
        (key, true)
    };

    // A new CA invalidates the old serving certificate.
    if !ca_created && certs.cert.exists() && certs.key.exists() {
        return Ok(certs);
    }
    // The issuer is rebuilt from the same parameters the CA was made with,
    // which needs no parsing of ca.crt.
    let issuer = Issuer::new(ca_params(), ca_key);
    let key = KeyPair::generate().map_err(|e| fail(e.to_string()))?;
    let cert = serving_params()
        .map_err(|e| fail(e.to_string()))?
        .signed_by(&key, &issuer)
        .map_err(|e| fail(e.to_string()))?;
    write_file(&certs.key, &key.serialize_pem(), 0o600).map_err(&fail)?;
    write_file(&certs.cert, &cert.pem(), 0o644).map_err(&fail)?;
    Ok(DevCerts {
        created: true,
        ..certs
    })
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, 3650 * DAY);
    params
}

fn serving_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let mut name = DistinguishedName::new();
    name.push(
        DnType::CommonName,
        "issuer-guard development serving certificate",
    );
    params.distinguished_name = name;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, 365 * DAY);
    Ok(params)
}

/// From a day ago (clock skew between hosts) to `lifetime` from now.
fn set_validity(params: &mut CertificateParams, lifetime: Duration) {
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    // rcgen takes its own time type; building "now" from its epoch helper
    // avoids a direct dependency on that crate.
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    params.not_before = now - DAY;
    params.not_after = now + lifetime;
}

/// Writes through a temporary file and a rename, so that a crash leaves
/// either the old file or the whole new one, never half a key.
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let written = (|| {
        // A leftover temporary file would keep its old permissions.
        let _ = fs::remove_file(&tmp);
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        let mut file = options.open(&tmp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    written.map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use rustls::{
        RootCertStore,
        client::{WebPkiServerVerifier, danger::ServerCertVerifier},
    };
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};

    use super::*;

    fn verify(certs: &DevCerts, name: &str) -> Result<(), rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(&certs.ca).expect("ca"))
            .expect("root");
        let verifier = WebPkiServerVerifier::builder_with_provider(
            roots.into(),
            super::super::tls::provider(),
        )
        .build()
        .expect("verifier");
        let leaf = CertificateDer::from_pem_file(&certs.cert).expect("leaf");
        verifier
            .verify_server_cert(
                &leaf,
                &[],
                &ServerName::try_from(name.to_owned()).expect("name"),
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
    }

    #[test]
    fn creates_reuses_and_reissues() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = ensure(dir.path()).expect("created");
        assert!(certs.created);
        verify(&certs, "localhost").expect("localhost");
        verify(&certs, "127.0.0.1").expect("127.0.0.1");
        assert!(verify(&certs, "example.com").is_err());
        #[cfg(unix)]
        for name in [CA_KEY, TLS_KEY] {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(name))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }

        let before = fs::read(&certs.cert).expect("read");
        let again = ensure(dir.path()).expect("reused");
        assert!(!again.created);
        assert_eq!(fs::read(&again.cert).expect("read"), before);

        // A lost serving pair is reissued by the CA clients already trust.
        let ca = fs::read(&certs.ca).expect("read");
        fs::remove_file(&certs.key).expect("remove");
        let reissued = ensure(dir.path()).expect("reissued");
        assert!(reissued.created);
        assert_ne!(fs::read(&reissued.cert).expect("read"), before);
        assert_eq!(fs::read(&reissued.ca).expect("read"), ca);
        verify(&reissued, "localhost").expect("chains to the kept CA");
    }
}
