//! The MutatingWebhookConfiguration and ValidatingWebhookConfiguration
//! whose `caBundle` issuer-guard keeps with `--tls-secret`: read, and the
//! caBundle of each of their webhooks set.
//!
//! The write is a strategic merge patch that names each webhook (the list's
//! merge key) and sets only its `clientConfig.caBundle`, carrying the
//! resourceVersion read: a configuration changed since (by Helm, Argo CD or
//! another replica) makes it fail with 409 instead of being overwritten,
//! and no field of an object issuer-guard does not own is ever re-serialised
//! through a typed struct (a field the client's types do not know would be
//! dropped by a read-modify-write replace).

use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Mutating,
    Validating,
}

impl Kind {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Kind::Mutating => "MutatingWebhookConfiguration",
            Kind::Validating => "ValidatingWebhookConfiguration",
        }
    }
}

/// One configuration as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Registered {
    pub kind: Kind,
    pub resource_version: Option<String>,
    /// Each webhook's name and caBundle (empty when it has none).
    pub webhooks: Vec<(String, Vec<u8>)>,
}

impl Registered {
    /// Whether every webhook already carries exactly `bundle`.
    pub(crate) fn carries(&self, bundle: &[u8]) -> bool {
        self.webhooks.iter().all(|(_, b)| b == bundle)
    }
}

pub(crate) struct WebhookConfigurations {
    mutating: Api<MutatingWebhookConfiguration>,
    validating: Api<ValidatingWebhookConfiguration>,
    pub name: String,
}

impl WebhookConfigurations {
    pub(crate) fn new(client: Client, name: &str) -> Self {
        WebhookConfigurations {
            mutating: Api::all(client.clone()),
            validating: Api::all(client),
            name: name.to_owned(),
        }
    }

    /// Both configurations, mutating first; None for one that does not
    /// exist.
    pub(crate) async fn read(&self) -> Result<[Option<Registered>; 2], kube::Error> {
        let bundle = |b: Option<k8s_openapi::ByteString>| b.map(|b| b.0).unwrap_or_default();
        let mutating = self
            .mutating
            .get_opt(&self.name)
            .await?
            .map(|c| Registered {
                kind: Kind::Mutating,
                resource_version: c.metadata.resource_version,
                webhooks: c
                    .webhooks
                    .unwrap_or_default()
                    .into_iter()
                    .map(|w| (w.name, bundle(w.client_config.ca_bundle)))
                    .collect(),
            });
        let validating = self
            .validating
            .get_opt(&self.name)
            .await?
            .map(|c| Registered {
                kind: Kind::Validating,
                resource_version: c.metadata.resource_version,
                webhooks: c
                    .webhooks
                    .unwrap_or_default()
                    .into_iter()
                    .map(|w| (w.name, bundle(w.client_config.ca_bundle)))
                    .collect(),
            });
        Ok([mutating, validating])
    }

    /// Sets `bundle` as the caBundle of every webhook of `read`, if the
    /// configuration has not changed since it was read. `Ok(false)` when it
    /// had (409): read again.
    pub(crate) async fn set_bundle(
        &self,
        read: &Registered,
        bundle: &[u8],
    ) -> Result<bool, kube::Error> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(bundle);
        let webhooks: Vec<serde_json::Value> = read
            .webhooks
            .iter()
            .map(|(name, _)| json!({"name": name, "clientConfig": {"caBundle": encoded}}))
            .collect();
        let patch = Patch::Strategic(json!({
            "metadata": {"resourceVersion": read.resource_version},
            "webhooks": webhooks,
        }));
        let params = PatchParams {
            field_manager: Some("issuer-guard".to_owned()),
            ..PatchParams::default()
        };
        let result = match read.kind {
            Kind::Mutating => self
                .mutating
                .patch(&self.name, &params, &patch)
                .await
                .map(|_| ()),
            Kind::Validating => self
                .validating
                .patch(&self.name, &params, &patch)
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}
