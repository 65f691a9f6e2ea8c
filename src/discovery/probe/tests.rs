//! What a token must be before its issuer and key id are believed.

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::JwkSet};
use serde_json::json;

use super::believe;

const AUDIENCE: &str = "issuer-guard.io/discovery";

struct Key {
    pair: rcgen::KeyPair,
    kid: String,
}

impl Key {
    fn new(kid: &str) -> Self {
        Key {
            pair: rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
            kid: kid.to_owned(),
        }
    }

    /// The public key as the API server's JWKS lists one.
    fn jwk(&self) -> serde_json::Value {
        // An uncompressed P-256 point: 0x04, then X and Y.
        let raw = self.pair.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
               "x": b64(&raw[1..33]), "y": b64(&raw[33..65])})
    }

    fn sign(&self, kid: Option<&str>, claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid.map(str::to_owned);
        let key = EncodingKey::from_ec_der(&self.pair.serialize_der());
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }
}

fn claims(aud: &str, exp_from_now: i64) -> serde_json::Value {
    let now = jiff::Timestamp::now().as_second();
    json!({"iss": "https://issuer.example", "aud": [aud], "exp": now + exp_from_now, "iat": now,
           "sub": "system:serviceaccount:ns:issuer-guard"})
}

fn set(keys: &[&Key]) -> JwkSet {
    serde_json::from_value(json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}))
        .unwrap()
}

#[test]
fn a_token_that_verifies_is_believed() {
    let a = Key::new("kid-a");
    let token = a.sign(Some("kid-a"), claims(AUDIENCE, 600));
    let believed = believe(&token, &set(&[&a]), Some(AUDIENCE)).unwrap();
    assert_eq!(
        (believed.issuer.as_str(), believed.key_id.as_str()),
        ("https://issuer.example", "kid-a")
    );
    assert_eq!(believed.audiences, [AUDIENCE]);
}

#[test]
fn nothing_else_is() {
    let (a, b) = (Key::new("kid-a"), Key::new("kid-b"));
    let jwks = set(&[&a]);
    let refused = |token: String, why: &str| {
        let e = believe(&token, &jwks, Some(AUDIENCE))
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{why}: {e}");
    };
    // Signed by another key under A's kid: a forgery.
    refused(
        b.sign(Some("kid-a"), claims(AUDIENCE, 600)),
        "does not verify",
    );
    refused(
        b.sign(Some("kid-b"), claims(AUDIENCE, 600)),
        "not in the JWKS",
    );
    refused(a.sign(None, claims(AUDIENCE, 600)), "no kid");
    refused(
        a.sign(Some("kid-a"), claims("sts.amazonaws.com", 600)),
        "does not verify",
    );
    refused(
        a.sign(Some("kid-a"), claims(AUDIENCE, -3600)),
        "does not verify",
    );
    refused("not.a.jwt".to_owned(), "cannot be believed");
    let mut no_issuer = claims(AUDIENCE, 600);
    no_issuer.as_object_mut().unwrap().remove("iss");
    refused(a.sign(Some("kid-a"), no_issuer), "does not verify");
}

/// The token's own `iat` is the clock its expiry is read against: a replica
/// whose clock is far ahead still believes a token minted a moment ago, and
/// the time it records is the server's.
#[test]
fn expiry_is_read_against_the_servers_clock_not_this_one() {
    let a = Key::new("kid-a");
    let server_now = jiff::Timestamp::now().as_second() - 3 * 3600;
    let token = a.sign(
        Some("kid-a"),
        json!({"iss": "https://issuer.example", "aud": [AUDIENCE], "iat": server_now,
               "exp": server_now + 600, "sub": "system:serviceaccount:ns:canary"}),
    );
    let believed = believe(&token, &set(&[&a]), Some(AUDIENCE)).unwrap();
    assert_eq!(believed.issued_at.as_second(), server_now);
}

/// With no audience asked for, the token carries the API audiences, which
/// are read as they are.
#[test]
fn a_token_without_an_audience_asked_for_shows_the_api_audiences() {
    let a = Key::new("kid-a");
    let now = jiff::Timestamp::now().as_second();
    let token = a.sign(
        Some("kid-a"),
        json!({"iss": "https://new.example", "aud": ["https://new.example", "https://old.example"],
               "iat": now, "exp": now + 600}),
    );
    let believed = believe(&token, &set(&[&a]), None).unwrap();
    assert_eq!(
        believed.audiences,
        ["https://new.example", "https://old.example"]
    );
}
