//! One look at what the API server signs with: its OIDC discovery document,
//! its JWKS, and a token minted for issuer-guard's own ServiceAccount whose
//! signature is checked against that JWKS before its `iss` and `kid` are
//! believed.

use std::time::Duration;

use jsonwebtoken::{DecodingKey, Validation, jwk::JwkSet};
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::ServiceAccount,
};
use kube::{Api, Client, api::PostParams};
use serde::Deserialize;

use super::{DiscoveryError, ServiceAccountRef, Stage};

pub(super) const OPENID_CONFIGURATION: &str = "/.well-known/openid-configuration";
pub(super) const JWKS: &str = "/openid/v1/jwks";
/// The API server's minimum for a TokenRequest; the token is read at once
/// and thrown away.
const TOKEN_SECONDS: i64 = 600;

/// What one probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Seen {
    pub issuer: String,
    pub key_id: String,
    pub verifying: Vec<String>,
    /// The discovery document's `issuer`: the first issuer of the server
    /// that answered it, which during a roll may not be the one that
    /// minted the token.
    pub advertised_issuer: String,
}

#[derive(Deserialize)]
struct OpenIdConfiguration {
    issuer: String,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
}

#[cfg(test)]
mod tests;

pub(super) async fn probe(
    client: &Client,
    account: &ServiceAccountRef,
    audience: &str,
    timeout: Duration,
) -> Result<Seen, DiscoveryError> {
    let advertised: OpenIdConfiguration = get_json(
        client,
        OPENID_CONFIGURATION,
        Stage::OpenIdConfiguration,
        timeout,
    )
    .await?;
    let mut jwks = get_jwks(client, timeout).await?;
    let token = token(client, account, audience, timeout).await?;
    let kid = jsonwebtoken::decode_header(&token)
        .map_err(|e| verify(e.to_string()))?
        .kid;
    if kid.is_some_and(|k| jwks.keys.find(&k).is_none()) {
        // During a roll the JWKS and the token may come from different API
        // servers; one more look settles most of those.
        jwks = get_jwks(client, timeout).await?;
    }
    let (issuer, key_id) = believe(&token, &jwks.keys, audience)?;
    Ok(Seen {
        issuer,
        key_id,
        verifying: jwks.kids,
        advertised_issuer: advertised.issuer,
    })
}

/// The issuer and key id of `token`, once its signature verifies against
/// `jwks` and it is meant for `audience` and unexpired. Nothing about a
/// token that does not verify is believed: a forged or mangled one would
/// otherwise start a new generation.
pub(super) fn believe(
    token: &str,
    jwks: &JwkSet,
    audience: &str,
) -> Result<(String, String), DiscoveryError> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| verify(e.to_string()))?;
    let kid = header
        .kid
        .clone()
        .ok_or_else(|| verify("the token's header has no kid".to_owned()))?;
    let jwk = jwks.find(&kid).ok_or_else(|| {
        verify(format!(
            "the token's key {kid:?} is not in the JWKS; the API server's --service-account-key-file must include the public key of --service-account-signing-key-file"
        ))
    })?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| verify(format!("key {kid:?}: {e}")))?;
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .map_err(|e| verify(format!("the token does not verify with key {kid:?}: {e}")))?;
    Ok((claims.claims.iss, kid))
}

fn verify(message: String) -> DiscoveryError {
    DiscoveryError::Verify(message)
}

/// An API server's JWKS.
struct Jwks {
    /// Every key id listed, read apart from the typed set so that a key of
    /// a type jsonwebtoken cannot use is still listed.
    kids: Vec<String>,
    /// The keys jsonwebtoken can verify with.
    keys: JwkSet,
}

async fn get_jwks(client: &Client, timeout: Duration) -> Result<Jwks, DiscoveryError> {
    let raw: serde_json::Value = get_json(client, JWKS, Stage::Jwks, timeout).await?;
    let listed = raw
        .get("keys")
        .and_then(|k| k.as_array())
        .map_or(&[][..], Vec::as_slice);
    let mut kids: Vec<String> = listed
        .iter()
        .filter_map(|k| k.get("kid")?.as_str().map(str::to_owned))
        .collect();
    kids.sort();
    kids.dedup();
    let keys = listed
        .iter()
        .filter_map(|k| serde_json::from_value(k.clone()).ok())
        .collect();
    Ok(Jwks {
        kids,
        keys: JwkSet { keys },
    })
}

async fn get_json<T: serde::de::DeserializeOwned>(
    client: &Client,
    path: &str,
    stage: Stage,
    timeout: Duration,
) -> Result<T, DiscoveryError> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| failed(stage, e))?;
    let text = timed(stage, timeout, client.request_text(request)).await?;
    serde_json::from_str(&text).map_err(|e| DiscoveryError::Request {
        stage,
        message: format!("unreadable answer to GET {path}: {e}"),
    })
}

async fn token(
    client: &Client,
    account: &ServiceAccountRef,
    audience: &str,
    timeout: Duration,
) -> Result<String, DiscoveryError> {
    let stage = Stage::TokenRequest;
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &account.namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.to_owned()]),
            expiration_seconds: Some(TOKEN_SECONDS),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let answer = timed(
        stage,
        timeout,
        api.create_token_request(&account.name, &PostParams::default(), &request),
    )
    .await?;
    answer
        .status
        .and_then(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| DiscoveryError::Request {
            stage,
            message: "the TokenRequest came back without a token".to_owned(),
        })
}

/// One request to the API server, bounded by `timeout`, its failure named
/// by `stage`.
async fn timed<T>(
    stage: Stage,
    timeout: Duration,
    request: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, DiscoveryError> {
    tokio::time::timeout(timeout, request)
        .await
        .map_err(|_| DiscoveryError::Timeout { stage, timeout })?
        .map_err(|e| DiscoveryError::from_client(stage, &e, ""))
}

fn failed(stage: Stage, error: impl std::fmt::Display) -> DiscoveryError {
    DiscoveryError::Request {
        stage,
        message: error.to_string(),
    }
}
