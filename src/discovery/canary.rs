//! Canary tokens: one per generation that signs, minted for the canary
//! account (which may do nothing) with an audience no API accepts, kept in a
//! Secret beside the ledger, and sent to TokenReview on every API server at
//! every round once its generation no longer signs. Accepted everywhere,
//! its issuer and key are still trusted; refused everywhere for its issuer
//! or key (with expiry, damage and a recreated account ruled out, and the
//! current generation's own canary accepted in the same round), the
//! retirement is observed. This sees an issuer dropped where the API
//! audiences are not the issuers. A canary's token is never logged.

use std::collections::BTreeMap;

use jiff::Timestamp;
use jsonwebtoken::{DecodingKey, Validation, jwk::Jwk};
use k8s_openapi::{
    ByteString,
    api::{
        authentication::v1::{TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec},
        core::v1::{Secret, ServiceAccount},
    },
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use serde::{Deserialize, Serialize};

use super::{DiscoveryError, ServiceAccountRef, Stage};
use crate::state::ledger::{CanaryReview, CanaryVerdict, Ledger};

/// Not an API audience: a canary authenticates to nothing.
pub(crate) const AUDIENCE: &str = "issuer-guard.io/canary";
/// Asked for; the API server may cap it (`--service-account-max-token-expiration`).
const LIFETIME_SECONDS: i64 = 7 * 24 * 3600;
/// Re-minted while its generation signs once it has less than this left,
/// so that the last one outlives the switch away by days.
const REMINT_BEFORE: i64 = 5 * 24 * 3600;

/// Reasons the authenticator gives for a token refused for something else
/// than its issuer or key. They are not an API: matched by substring, and
/// a refusal that names one of them is never a retirement.
const OTHER_CAUSES: &[&str] = &[
    "expired",
    "not valid yet",
    "in the future",
    "does not match",
    "has been deleted",
    "has been invalidated",
    "could not be validated",
];

/// One generation's canary, as kept in the Secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Canary {
    issuer: String,
    key_id: String,
    token: String,
    /// The key it verified with when minted, to tell a damaged canary from
    /// a retired key.
    jwk: serde_json::Value,
    expires: i64,
    account_uid: String,
}

impl std::fmt::Debug for Canary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Canary")
            .field("issuer", &self.issuer)
            .field("key_id", &self.key_id)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

pub(super) struct Canaries {
    secrets: Api<Secret>,
    accounts: Api<ServiceAccount>,
    name: String,
    account: ServiceAccountRef,
    /// Said once: which generation has no canary.
    missing: std::sync::Mutex<Option<u64>>,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    exp: i64,
    #[serde(rename = "kubernetes.io", default)]
    kubernetes: Option<KubernetesClaims>,
}

#[derive(Deserialize)]
struct KubernetesClaims {
    serviceaccount: Option<AccountClaim>,
}

#[derive(Deserialize)]
struct AccountClaim {
    uid: String,
}

impl Canaries {
    pub(super) fn new(client: &Client, account: ServiceAccountRef, name: String) -> Self {
        Self {
            secrets: Api::namespaced(client.clone(), &account.namespace),
            accounts: Api::namespaced(client.clone(), &account.namespace),
            name,
            account,
            missing: std::sync::Mutex::new(None),
        }
    }

    /// The canaries of the generations `held` records, sent to every server
    /// of `servers`. Empty unless the current generation's own canary is
    /// accepted by every one of them.
    pub(super) async fn review(
        &self,
        servers: &[Client],
        held: Option<&Ledger>,
        now: Timestamp,
    ) -> Result<Vec<CanaryReview>, DiscoveryError> {
        let Some(current) = held.and_then(Ledger::in_force) else {
            return Ok(Vec::new());
        };
        let kept = self.read().await?;
        let Some(own) = kept.get(&current.number) else {
            self.say_missing(current.number);
            return Ok(Vec::new());
        };
        let earlier: Vec<&Canary> = kept
            .iter()
            .filter(|(number, c)| {
                **number != current.number
                    && (c.issuer != current.issuer || c.key_id != current.key_id)
            })
            .map(|(_, c)| c)
            .collect();
        // Nothing to review: spare the servers the current canary's review
        // and the account's read, every round of a cluster at rest.
        if earlier.is_empty() || !accepted_everywhere(&review_all(servers, &own.token).await?) {
            return Ok(Vec::new());
        }
        let uid = self.account_uid().await?;
        let mut reviews = Vec::new();
        for canary in earlier {
            let answers = review_all(servers, &canary.token).await?;
            let verdict = if accepted_everywhere(&answers) {
                Some(CanaryVerdict::Accepted)
            } else if answers.iter().all(|a| a.refused_for_issuer_or_key())
                && canary.expires > now.as_second()
                && canary.intact()
                && canary.account_uid == uid
            {
                Some(CanaryVerdict::Refused)
            } else {
                None
            };
            if let Some(verdict) = verdict {
                reviews.push(CanaryReview {
                    issuer: canary.issuer.clone(),
                    key_id: canary.key_id.clone(),
                    verdict,
                });
            }
        }
        Ok(reviews)
    }

    /// Mints the current generation's canary through `server` when it has
    /// none or its canary runs out within [`REMINT_BEFORE`], and drops the
    /// canaries of generations the ledger no longer holds.
    pub(super) async fn keep(
        &self,
        server: &Client,
        ledger: &Ledger,
        now: Timestamp,
    ) -> Result<(), DiscoveryError> {
        let Some(current) = ledger.in_force() else {
            return Ok(());
        };
        let mut kept = self.read().await?;
        let fresh = kept
            .get(&current.number)
            .is_some_and(|c| c.expires - now.as_second() > REMINT_BEFORE);
        let known = |n: &u64| ledger.generations.iter().any(|g| g.number == *n);
        let stale = kept.keys().any(|n| !known(n));
        if fresh && !stale {
            return Ok(());
        }
        kept.retain(|n, _| known(n));
        if !fresh {
            let canary = self.mint(server).await?;
            // Minted mid-roll by a server not yet rolled: not this
            // generation's; the next round tries again.
            if canary.issuer != current.issuer || canary.key_id != current.key_id {
                return Ok(());
            }
            kept.insert(current.number, canary);
        }
        self.write(&kept).await
    }

    async fn mint(&self, server: &Client) -> Result<Canary, DiscoveryError> {
        let stage = Stage::Canary;
        let api: Api<ServiceAccount> = Api::namespaced(server.clone(), &self.account.namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![AUDIENCE.to_owned()]),
                expiration_seconds: Some(LIFETIME_SECONDS),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let answer = api
            .create_token_request(&self.account.name, &PostParams::default(), &request)
            .await
            .map_err(|e| DiscoveryError::from_client(stage, &e, "canary TokenRequest: "))?;
        let token = answer
            .status
            .and_then(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| failed("the canary TokenRequest came back without a token"))?;
        let jwks: serde_json::Value = {
            let request = http::Request::get(super::probe::JWKS)
                .body(Vec::new())
                .map_err(|e| failed(&e.to_string()))?;
            let text = server
                .request_text(request)
                .await
                .map_err(|e| DiscoveryError::from_client(stage, &e, "JWKS: "))?;
            serde_json::from_str(&text).map_err(|e| failed(&e.to_string()))?
        };
        let kid = jsonwebtoken::decode_header(&token)
            .map_err(|e| failed(&e.to_string()))?
            .kid
            .ok_or_else(|| failed("the canary has no kid"))?;
        let jwk = jwks["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|k| k["kid"] == kid.as_str())
            .cloned()
            .ok_or_else(|| failed("the canary's key is not in the JWKS"))?;
        let claims =
            verify_with(&token, &jwk).ok_or_else(|| failed("the canary does not verify"))?;
        let account_uid = claims
            .kubernetes
            .and_then(|k| k.serviceaccount)
            .map(|s| s.uid)
            .unwrap_or_default();
        Ok(Canary {
            issuer: claims.iss,
            key_id: kid,
            token,
            jwk,
            expires: claims.exp,
            account_uid,
        })
    }

    async fn account_uid(&self) -> Result<String, DiscoveryError> {
        let account = self
            .accounts
            .get(&self.account.name)
            .await
            .map_err(|e| DiscoveryError::from_client(Stage::Canary, &e, "canary account: "))?;
        Ok(account.metadata.uid.unwrap_or_default())
    }

    async fn read(&self) -> Result<BTreeMap<u64, Canary>, DiscoveryError> {
        let secret = self
            .secrets
            .get_opt(&self.name)
            .await
            .map_err(|e| DiscoveryError::from_client(Stage::Canary, &e, "canary Secret: "))?;
        let mut kept = BTreeMap::new();
        for (key, value) in secret.and_then(|s| s.data).unwrap_or_default() {
            let number = key.strip_prefix("generation-").and_then(|n| n.parse().ok());
            let canary = serde_json::from_slice::<Canary>(&value.0).ok();
            if let (Some(number), Some(canary)) = (number, canary) {
                kept.insert(number, canary);
            }
        }
        Ok(kept)
    }

    async fn write(&self, kept: &BTreeMap<u64, Canary>) -> Result<(), DiscoveryError> {
        let data = kept
            .iter()
            .filter_map(|(n, c)| {
                Some((
                    format!("generation-{n}"),
                    ByteString(serde_json::to_vec(c).ok()?),
                ))
            })
            .collect();
        let stored = self
            .secrets
            .get_opt(&self.name)
            .await
            .map_err(|e| DiscoveryError::from_client(Stage::Canary, &e, "canary Secret: "))?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version: stored.as_ref().and_then(|s| s.metadata.resource_version.clone()),
                annotations: Some(BTreeMap::from([(
                    "issuer-guard.io/about".to_owned(),
                    "Canary tokens of the issuer generations: they authenticate to nothing and tell issuer-guard when an issuer or key stops being trusted. Written by issuer-guard only.".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(data),
            type_: Some("Opaque".to_owned()),
            ..Secret::default()
        };
        let pp = PostParams::default();
        let written = match stored {
            None => self.secrets.create(&pp, &secret).await.map(drop),
            Some(_) => self
                .secrets
                .replace(&self.name, &pp, &secret)
                .await
                .map(drop),
        };
        match written {
            Ok(()) => Ok(()),
            // Another replica wrote first; the next round reads its canaries.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(DiscoveryError::from_client(
                Stage::Canary,
                &e,
                "canary Secret: ",
            )),
        }
    }

    fn say_missing(&self, number: u64) {
        let mut missing = self.missing.lock().unwrap_or_else(|e| e.into_inner());
        if *missing != Some(number) {
            tracing::info!(
                generation = number,
                "no canary for the generation in force yet: retirements are observed only from the API audiences and the JWKS until one is minted; a generation that stopped signing before issuer-guard ran has none, and only rotation.retiredIssuers retires its issuer"
            );
            *missing = Some(number);
        }
    }
}

impl Canary {
    /// Whether it still verifies with the key it was minted under: a
    /// damaged canary is never read as a retirement.
    fn intact(&self) -> bool {
        verify_with(&self.token, &self.jwk).is_some_and(|c| c.iss == self.issuer)
    }
}

fn verify_with(token: &str, jwk: &serde_json::Value) -> Option<Claims> {
    let jwk: Jwk = serde_json::from_value(jwk.clone()).ok()?;
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    let header = jsonwebtoken::decode_header(token).ok()?;
    let mut validation = Validation::new(header.alg);
    validation.validate_aud = false;
    // Expiry is read against the API server's clock by the caller.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_required_spec_claims(&["exp", "iss"]);
    jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .ok()
        .map(|d| d.claims)
}

/// One server's answer to a TokenReview.
struct Answer {
    authenticated: bool,
    error: String,
}

impl Answer {
    fn refused_for_issuer_or_key(&self) -> bool {
        !self.authenticated && !OTHER_CAUSES.iter().any(|c| self.error.contains(c))
    }
}

fn accepted_everywhere(answers: &[Answer]) -> bool {
    !answers.is_empty() && answers.iter().all(|a| a.authenticated)
}

async fn review_all(servers: &[Client], token: &str) -> Result<Vec<Answer>, DiscoveryError> {
    let reviews = servers.iter().map(|c| review(c, token));
    futures::future::join_all(reviews)
        .await
        .into_iter()
        .collect()
}

async fn review(server: &Client, token: &str) -> Result<Answer, DiscoveryError> {
    let api: Api<TokenReview> = Api::all(server.clone());
    let request = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_owned(),
            audiences: Some(vec![AUDIENCE.to_owned()]),
        },
        ..TokenReview::default()
    };
    let answer = api
        .create(&PostParams::default(), &request)
        .await
        .map_err(|e| DiscoveryError::from_client(Stage::Canary, &e, "TokenReview: "))?;
    let status = answer.status.unwrap_or_default();
    Ok(Answer {
        authenticated: status.authenticated == Some(true),
        error: status.error.unwrap_or_default(),
    })
}

fn failed(message: &str) -> DiscoveryError {
    DiscoveryError::Request {
        stage: Stage::Canary,
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_for_the_issuer_or_key_counts() {
        let refused = |error: &str| Answer {
            authenticated: false,
            error: error.to_owned(),
        };
        for about_issuer_or_key in [
            "invalid bearer token",
            "[invalid bearer token, square/go-jose: error in cryptographic primitive]",
            "invalid signature, no keys found",
        ] {
            assert!(
                refused(about_issuer_or_key).refused_for_issuer_or_key(),
                "{about_issuer_or_key}"
            );
        }
        for other in [
            "service account token has expired",
            "service account UID (a) does not match claim (b)",
            "service account e2e/issuer-guard-canary has been deleted",
            "[invalid bearer token, service account token has been invalidated]",
        ] {
            assert!(!refused(other).refused_for_issuer_or_key(), "{other}");
        }
        let accepted = Answer {
            authenticated: true,
            error: String::new(),
        };
        assert!(!accepted.refused_for_issuer_or_key());
        assert!(accepted_everywhere(&[accepted]));
        assert!(!accepted_everywhere(&[]));
    }

    #[test]
    fn a_canary_is_never_debug_printed_with_its_token() {
        let c = Canary {
            issuer: "https://i".into(),
            key_id: "k".into(),
            token: "eyJhbGciOiJSUzI1NiJ9.secret.sig".into(),
            jwk: serde_json::Value::Null,
            expires: 0,
            account_uid: String::new(),
        };
        assert!(!format!("{c:?}").contains("secret"));
    }
}
