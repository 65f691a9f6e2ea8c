//! The control plane's PKI, generated per test: a CA, the API server's
//! serving certificate, an admin client certificate, and two
//! service-account signing keys (A and B) for rotations.

use std::{
    fs,
    path::{Path, PathBuf},
};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use sha2::{Digest, Sha256};

/// A certificate and its key on disk.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The two service-account keys a signing-key rotation moves between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaKey {
    A,
    B,
}

/// A service-account signing key on disk.
#[derive(Debug, Clone)]
pub struct SaKeyFiles {
    /// PKCS#8 `PRIVATE KEY` PEM.
    pub private: PathBuf,
    /// PKIX `PUBLIC KEY` PEM.
    pub public: PathBuf,
    /// The `kid` the API server puts in tokens signed with this key.
    pub kid: String,
}

pub struct Pki {
    pub ca_cert: PathBuf,
    pub ca_pem: String,
    ca: Issuer<'static, KeyPair>,
    dir: PathBuf,
    pub apiserver: CertFiles,
    pub admin: CertFiles,
    pub sa_a: SaKeyFiles,
    pub sa_b: SaKeyFiles,
}

impl Pki {
    /// `service_ip` is the first address of `--service-cluster-ip-range`,
    /// which in-cluster clients reach the API server by.
    pub fn generate(dir: &Path, service_ip: &str) -> Pki {
        fs::create_dir_all(dir).expect("create the pki directory");
        let ca_key = KeyPair::generate().expect("generate the CA key");
        let mut params = CertificateParams::new(Vec::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, "issuer-guard e2e CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_pem = params.self_signed(&ca_key).expect("self-sign the CA").pem();
        let ca_cert = dir.join("ca.crt");
        fs::write(&ca_cert, &ca_pem).expect("write ca.crt");
        let ca = Issuer::new(params, ca_key);
        let apiserver = issue(
            &ca,
            dir,
            "apiserver",
            serving_params(&[
                "127.0.0.1",
                "localhost",
                service_ip,
                "kubernetes",
                "kubernetes.default.svc",
            ]),
        );
        let admin = issue(&ca, dir, "admin", client_params("admin", "system:masters"));
        Pki {
            ca_cert,
            ca_pem,
            ca,
            dir: dir.to_owned(),
            apiserver,
            admin,
            sa_a: sa_key(dir, "sa-a"),
            sa_b: sa_key(dir, "sa-b"),
        }
    }

    pub fn sa_key(&self, key: SaKey) -> &SaKeyFiles {
        match key {
            SaKey::A => &self.sa_a,
            SaKey::B => &self.sa_b,
        }
    }

    /// A serving certificate for `names` (IP addresses or DNS names),
    /// signed by the CA, for other servers the API server calls.
    pub fn serving_cert(&self, file: &str, names: &[&str]) -> CertFiles {
        issue(&self.ca, &self.dir, file, serving_params(names))
    }

    /// An admin kubeconfig for the API server at `server`.
    pub fn write_kubeconfig(&self, path: &Path, server: &str) {
        let text = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster: {{server: \"{server}\", certificate-authority: \"{ca}\"}}
users:
- name: admin
  user: {{client-certificate: \"{cert}\", client-key: \"{key}\"}}
contexts:
- name: e2e
  context: {{cluster: e2e, user: admin}}
current-context: e2e
",
            ca = self.ca_cert.display(),
            cert = self.admin.cert.display(),
            key = self.admin.key.display(),
        );
        fs::write(path, text).expect("write the kubeconfig");
    }
}

fn serving_params(names: &[&str]) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("serving cert params");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params
}

/// The API server maps CN to the user name and O to its groups.
fn client_params(user: &str, group: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::new()).expect("client cert params");
    params.distinguished_name.push(DnType::CommonName, user);
    params
        .distinguished_name
        .push(DnType::OrganizationName, group);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

fn issue(
    ca: &Issuer<'static, KeyPair>,
    dir: &Path,
    file: &str,
    mut params: CertificateParams,
) -> CertFiles {
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate().expect("generate a key");
    let cert = params.signed_by(&key, ca).expect("sign a certificate");
    let files = CertFiles {
        cert: dir.join(format!("{file}.crt")),
        key: dir.join(format!("{file}.key")),
    };
    fs::write(&files.cert, cert.pem()).expect("write a certificate");
    fs::write(&files.key, key.serialize_pem()).expect("write a key");
    files
}

/// An ECDSA P-256 key (rcgen's default), as the API server reads it.
fn sa_key(dir: &Path, name: &str) -> SaKeyFiles {
    let key = KeyPair::generate().expect("generate a service-account key");
    let files = SaKeyFiles {
        private: dir.join(format!("{name}.key")),
        public: dir.join(format!("{name}.pub")),
        kid: key_id(&key.subject_public_key_info()),
    };
    fs::write(&files.private, key.serialize_pem()).expect("write a service-account key");
    fs::write(&files.public, key.public_key_pem()).expect("write a service-account public key");
    files
}

/// base64url(SHA-256(PKIX DER)), as pkg/serviceaccount/jwt.go computes `kid`.
pub fn key_id(spki_der: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(spki_der))
}
