//! The one error enum of `--tls-secret`: its flags at start-up, and what
//! the loop meets while it runs.

use std::time::Duration;

use super::super::tls::TlsError;
use crate::cluster;

/// Errors of `--tls-secret`: its flags at start-up, and what the loop meets.
#[derive(Debug, thiserror::Error)]
pub enum SelfTlsError {
    #[error(
        "--tls-secret has issuer-guard issue, rotate and serve its own certificate, so it cannot also serve --tls-cert/--tls-key: drop --tls-cert and --tls-key (ISSUER_GUARD_TLS_CERT, ISSUER_GUARD_TLS_KEY), or drop --tls-secret to serve those files"
    )]
    WithFiles,
    #[error(
        "--tls-secret keeps the certificate in a Secret, which needs an API server: give --kubeconfig or run in a cluster, and drop --no-cluster"
    )]
    WithoutCluster,
    #[error("--tls-secret must be NAMESPACE/NAME, got {0:?}")]
    SecretName(String),
    #[error(
        "--tls-secret needs --webhook-configurations: the name of the MutatingWebhookConfiguration and ValidatingWebhookConfiguration whose caBundle it keeps (the chart passes its full name)"
    )]
    NoConfigurations,
    #[error(
        "--tls-secret needs --tls-names: the DNS names (and IP addresses) the API server calls the webhook by, first the Service's, e.g. issuer-guard.issuer-guard.svc"
    )]
    NoNames,
    #[error("{0} is only used with --tls-secret: give --tls-secret too, or drop {0}")]
    WithoutSecret(&'static str),
    #[error("{0}")]
    Timing(String),
    #[error(
        "Secret {secret} is not a usable CA and serving certificate ({message}); it is left as it is: fix it, or delete it to have a new CA made"
    )]
    Unusable { secret: String, message: String },
    #[error("cannot issue {what}: {source}")]
    Issue {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("an issued certificate does not parse: {0}")]
    Issued(String),
    #[error("Secret {secret}: {source}")]
    Secret { secret: String, source: kube::Error },
    #[error("webhook configurations {name}: {source}")]
    Configurations { name: String, source: kube::Error },
    #[error(
        "{kind} {name} does not exist, so its caBundle cannot be kept and this replica stays unready: create it (the chart does), or fix --webhook-configurations"
    )]
    Missing { kind: &'static str, name: String },
    #[error("Secret {secret}: still conflicting after {attempts} attempts; trying again")]
    Contended { secret: String, attempts: usize },
    #[error("{what}: no answer within {timeout:?}")]
    Timeout {
        what: &'static str,
        timeout: Duration,
    },
    #[error("Secret {secret}: its serving pair cannot be served: {source}")]
    Pair {
        secret: String,
        source: Box<TlsError>,
    },
}

impl SelfTlsError {
    /// The `stage` label of `issuer_guard_tls_self_errors_total`.
    pub fn stage(&self) -> &'static str {
        match self {
            SelfTlsError::WithFiles
            | SelfTlsError::WithoutCluster
            | SelfTlsError::SecretName(_)
            | SelfTlsError::NoConfigurations
            | SelfTlsError::NoNames
            | SelfTlsError::WithoutSecret(_)
            | SelfTlsError::Timing(_) => "flags",
            SelfTlsError::Unusable { .. }
            | SelfTlsError::Secret { .. }
            | SelfTlsError::Contended { .. } => "secret",
            SelfTlsError::Issue { .. } | SelfTlsError::Issued(_) => "issue",
            SelfTlsError::Configurations { .. } | SelfTlsError::Missing { .. } => "webhooks",
            SelfTlsError::Timeout { what, .. } => what,
            SelfTlsError::Pair { .. } => "serve",
        }
    }

    /// The API server did not answer: an outage, logged once for all of
    /// issuer-guard.
    pub(super) fn no_answer(&self) -> bool {
        match self {
            SelfTlsError::Secret { source, .. } | SelfTlsError::Configurations { source, .. } => {
                cluster::no_answer(source)
            }
            SelfTlsError::Timeout { .. } => true,
            _ => false,
        }
    }
}
