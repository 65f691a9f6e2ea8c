//! One look at one API server: its OIDC discovery document, its own JWKS,
//! and two tokens it mints for the canary ServiceAccount. The first, for
//! issuer-guard's own audience, says which pair the server signs with once
//! its signature is checked against that server's JWKS; its `iat` is the
//! server's clock. The second names no audience, so it carries the server's
//! API audiences, which are its issuers unless `--api-audiences` is set.
//! Both are read and thrown away; the canary account may do nothing.

use std::time::Duration;

use jiff::Timestamp;
use jsonwebtoken::{DecodingKey, Validation, jwk::JwkSet};
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::ServiceAccount,
};
use kube::{Api, Client, api::PostParams};
use serde::Deserialize;

use super::{DiscoveryError, ServiceAccountRef, Stage};
use crate::state::ledger::ServerSeen;

pub(super) const OPENID_CONFIGURATION: &str = "/.well-known/openid-configuration";
pub(super) const JWKS: &str = "/openid/v1/jwks";
/// The API server's minimum for a TokenRequest; the token is read at once
/// and thrown away.
const TOKEN_SECONDS: i64 = 600;

/// What one server showed, and when by its clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Probed {
    pub seen: ServerSeen,
    pub at: Timestamp,
}

#[derive(Deserialize)]
struct OpenIdConfiguration {
    #[allow(dead_code)]
    issuer: String,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    iat: i64,
    exp: i64,
    #[serde(default)]
    aud: Audiences,
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Audiences {
    One(String),
    Many(Vec<String>),
    #[default]
    None,
}

impl Audiences {
    fn into_vec(self) -> Vec<String> {
        match self {
            Audiences::One(a) => vec![a],
            Audiences::Many(a) => a,
            Audiences::None => Vec::new(),
        }
    }
}

/// A token whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Believed {
    pub issuer: String,
    pub key_id: String,
    pub issued_at: Timestamp,
    pub audiences: Vec<String>,
}

#[cfg(test)]
mod tests;

pub(super) async fn probe(
    client: &Client,
    account: &ServiceAccountRef,
    audience: &str,
    timeout: Duration,
) -> Result<Probed, DiscoveryError> {
    let _: OpenIdConfiguration = get_json(
        client,
        OPENID_CONFIGURATION,
        Stage::OpenIdConfiguration,
        timeout,
    )
    .await?;
    let mut jwks = get_jwks(client, timeout).await?;
    let minted = token(client, account, Some(audience), timeout).await?;
    let kid = jsonwebtoken::decode_header(&minted)
        .map_err(|e| verify(e.to_string()))?
        .kid;
    if kid.is_some_and(|k| jwks.keys.find(&k).is_none()) {
        // Through one address the JWKS and the token may come from
        // different servers; one more look settles most of those.
        jwks = get_jwks(client, timeout).await?;
    }
    let signed = believe(&minted, &jwks.keys, Some(audience))?;
    let api = token(client, account, None, timeout).await?;
    // Believed like the first, or not used: a server's API audiences say
    // which issuers it accepts only if the token really is its own.
    let accepted_issuers = believe(&api, &jwks.keys, None)
        .ok()
        .map(|b| b.audiences)
        .filter(|a| a.contains(&signed.issuer));
    Ok(Probed {
        at: signed.issued_at,
        seen: ServerSeen {
            issuer: signed.issuer,
            key_id: signed.key_id,
            verifying: jwks.kids,
            accepted_issuers,
        },
    })
}

/// The claims of `token` once its signature verifies against `jwks`, it is
/// meant for `audience` (when given), and it expires after it was issued.
/// Nothing about a token that does not verify is believed: a forged or
/// mangled one would otherwise start a new generation. Its expiry is
/// checked against its own `iat`, the API server's clock, never against
/// this replica's clock, which may be minutes off.
pub(super) fn believe(
    token: &str,
    jwks: &JwkSet,
    audience: Option<&str>,
) -> Result<Believed, DiscoveryError> {
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
    match audience {
        Some(audience) => validation.set_audience(&[audience]),
        None => validation.validate_aud = false,
    }
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .map_err(|e| verify(format!("the token does not verify with key {kid:?}: {e}")))?
        .claims;
    if claims.exp <= claims.iat {
        return Err(verify(format!(
            "the token does not verify: it expires ({}) no later than it was issued ({})",
            claims.exp, claims.iat
        )));
    }
    let issued_at = Timestamp::from_second(claims.iat).map_err(|e| {
        verify(format!(
            "the token does not verify: iat {}: {e}",
            claims.iat
        ))
    })?;
    Ok(Believed {
        issuer: claims.iss,
        key_id: kid,
        issued_at,
        audiences: claims.aud.into_vec(),
    })
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
    audience: Option<&str>,
    timeout: Duration,
) -> Result<String, DiscoveryError> {
    let stage = Stage::TokenRequest;
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &account.namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: audience.map(|a| vec![a.to_owned()]),
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
