//! Audiences of relying parties that validate tokens themselves, through the
//! issuer's OIDC discovery, rather than through the API server's TokenReview.
//! Only these care about the issuer URL itself. In-cluster parties (istiod,
//! Linkerd, SPIRE's k8s_psat, Vault's kubernetes auth) ask the API server,
//! which accepts every configured issuer, so they are deliberately absent.

use crate::state::{Rotation, glob_match};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FederatedParty<'r> {
    AwsIrsa,
    AzureWorkloadIdentity,
    GcpWorkloadIdentityFederation,
    /// Matched by a `rotation.federatedAudiences` pattern.
    Configured(&'r str),
}

impl FederatedParty<'_> {
    pub fn describe(&self) -> String {
        match self {
            FederatedParty::AwsIrsa => "AWS STS (IRSA)".to_owned(),
            FederatedParty::AzureWorkloadIdentity => "Azure AD (workload identity)".to_owned(),
            FederatedParty::GcpWorkloadIdentityFederation => {
                "GCP workload identity federation".to_owned()
            }
            FederatedParty::Configured(p) => {
                format!("the party configured in rotation.federatedAudiences ({p})")
            }
        }
    }
}

const AWS: [&str; 3] = [
    "sts.amazonaws.com",
    "sts.*.amazonaws.com",
    "sts.amazonaws.com.cn",
];
// Sovereign clouds append a suffix (AzureADTokenExchangeUSGov, ...China).
const AZURE: &str = "api://AzureADTokenExchange*";
// Google STS validates against the pool's registered issuer: the provider
// resource name in its `//iam.googleapis.com/...` and
// `https://iam.googleapis.com/...` forms, STS itself as the audience, and a
// GKE fleet's workload identity pool (`PROJECT.svc.id.goog`).
const GCP: [&str; 4] = [
    "*iam.googleapis.com/projects/*/workloadIdentityPools/*",
    "sts.googleapis.com",
    "https://sts.googleapis.com*",
    "*.svc.id.goog",
];

/// The outside party that validates tokens for `audience`, if any.
pub fn federated_party<'r>(audience: &str, rotation: &'r Rotation) -> Option<FederatedParty<'r>> {
    if AWS.iter().any(|p| glob_match(p, audience)) {
        return Some(FederatedParty::AwsIrsa);
    }
    if glob_match(AZURE, audience) {
        return Some(FederatedParty::AzureWorkloadIdentity);
    }
    if GCP.iter().any(|p| glob_match(p, audience)) {
        return Some(FederatedParty::GcpWorkloadIdentityFederation);
    }
    rotation
        .federated_audiences
        .iter()
        .find(|p| p.matches(audience))
        .map(|p| FederatedParty::Configured(p.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Pattern;

    #[test]
    fn built_in_parties() {
        let r = Rotation::default();
        assert_eq!(
            federated_party("sts.amazonaws.com", &r),
            Some(FederatedParty::AwsIrsa)
        );
        assert_eq!(
            federated_party("sts.eu-west-1.amazonaws.com", &r),
            Some(FederatedParty::AwsIrsa)
        );
        assert_eq!(
            federated_party("api://AzureADTokenExchange", &r),
            Some(FederatedParty::AzureWorkloadIdentity)
        );
        assert_eq!(
            federated_party(
                "//iam.googleapis.com/projects/42/locations/global/workloadIdentityPools/pool/providers/k8s",
                &r
            ),
            Some(FederatedParty::GcpWorkloadIdentityFederation)
        );
        for google in [
            "sts.googleapis.com",
            "https://sts.googleapis.com",
            "https://sts.googleapis.com/v1/token",
            "my-project.svc.id.goog",
        ] {
            assert_eq!(
                federated_party(google, &r),
                Some(FederatedParty::GcpWorkloadIdentityFederation),
                "{google}"
            );
        }
        for not_google in ["sts.googleapis.com.evil", "svc.id.goog.example"] {
            assert_eq!(federated_party(not_google, &r), None, "{not_google}");
        }
        for in_cluster in [
            "istio-ca",
            "identity.l5d.io",
            "spire-server",
            "vault",
            "https://kubernetes.default.svc",
        ] {
            assert_eq!(federated_party(in_cluster, &r), None, "{in_cluster}");
        }
    }

    #[test]
    fn configured_patterns() {
        let r = Rotation {
            federated_audiences: vec![Pattern::new("vault-jwt-*")],
            ..Rotation::default()
        };
        assert_eq!(
            federated_party("vault-jwt-prod", &r),
            Some(FederatedParty::Configured("vault-jwt-*"))
        );
        assert_eq!(federated_party("vault", &r), None);
    }
}
