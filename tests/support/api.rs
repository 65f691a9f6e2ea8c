//! API calls the typed kube client does not cover: a create that returns
//! the `Warning` headers a kubectl user would see, and the token APIs.

use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenReview},
    core::v1::{Secret, ServiceAccount},
};
use kube::{Api, Client, Resource, api::PostParams, client::Body};
use serde_json::Value;

use super::NS;

/// What the API server answered to a create.
#[derive(Debug)]
pub struct Created {
    pub status: u16,
    /// The `Warning` header texts, in order.
    pub warnings: Vec<String>,
    /// The stored (or, for a dry run, would-be) object, or a Status.
    pub body: Value,
}

impl Created {
    /// The object, failing the test if the create was refused.
    pub fn object(&self) -> &Value {
        assert!(
            (200..300).contains(&self.status),
            "create refused ({}): {}",
            self.status,
            self.body
        );
        &self.body
    }

    /// The refusal's message, failing the test if the create succeeded.
    pub fn denial(&self) -> &str {
        assert!(
            !(200..300).contains(&self.status),
            "create was admitted; expected a denial: {}",
            self.body
        );
        self.body["message"].as_str().unwrap_or_default()
    }
}

/// Creates `obj` as a `K` in [`NS`] (with `dryRun=All` when `dry_run`).
pub async fn create<K: Resource<DynamicType = ()>>(
    client: &Client,
    obj: &Value,
    dry_run: bool,
) -> Created {
    let params = PostParams {
        dry_run,
        ..PostParams::default()
    };
    let req = kube::core::Request::new(K::url_path(&(), Some(NS)))
        .create(&params, serde_json::to_vec(obj).expect("serialize"))
        .expect("build a create request")
        .map(Body::from);
    let resp = client.send(req).await.expect("send a create request");
    let status = resp.status().as_u16();
    let warnings = resp
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(warning_text)
        .collect();
    let bytes = resp
        .into_body()
        .collect_bytes()
        .await
        .expect("read a create response");
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Created {
        status,
        warnings,
        body,
    }
}

/// The text of an RFC 7234 warning value: `299 - "text"`.
fn warning_text(header: &str) -> String {
    let quoted = match (header.find('"'), header.rfind('"')) {
        (Some(a), Some(b)) if a < b => &header[a + 1..b],
        _ => header,
    };
    quoted.replace("\\\"", "\"").replace("\\\\", "\\")
}

/// A bound token for service account `sa` of [`NS`] with the API server's
/// default audiences, as a pod's projected volume would get it.
pub async fn token_request(client: &Client, sa: &str) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), NS);
    let req: TokenRequest = serde_json::from_value(serde_json::json!({
        "spec": {"audiences": [], "expirationSeconds": 3600}
    }))
    .expect("a TokenRequest");
    let resp = accounts
        .create_token_request(sa, &PostParams::default(), &req)
        .await
        .expect("TokenRequest");
    let resp = serde_json::to_value(resp).expect("a TokenRequest as JSON");
    resp["status"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("TokenRequest returned no token: {resp}"))
        .to_owned()
}

/// Whether the API server accepts `token` (TokenReview, default audiences),
/// as every in-cluster relying party would ask it.
pub async fn token_accepted(client: &Client, token: &str) -> bool {
    let reviews: Api<TokenReview> = Api::all(client.clone());
    let review: TokenReview = serde_json::from_value(serde_json::json!({
        "spec": {"token": token}
    }))
    .expect("a TokenReview");
    let resp = reviews
        .create(&PostParams::default(), &review)
        .await
        .expect("TokenReview");
    serde_json::to_value(resp).expect("a TokenReview as JSON")["status"]["authenticated"] == true
}

/// The `iss` claim and `kid` header of a token, read without verifying it.
pub fn issuer_and_kid(token: &str) -> (String, String) {
    let header = jsonwebtoken::decode_header(token).expect("a JWT header");
    let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(token).expect("JWT claims");
    (
        claims["iss"].as_str().unwrap_or_default().to_owned(),
        header.kid.unwrap_or_default(),
    )
}

/// Creates ServiceAccount `sa` and a legacy token Secret `secret` for it in
/// [`NS`], waits for the token controller to fill it, and returns the token.
pub async fn legacy_token(client: &Client, sa: &str, secret: &str) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), NS);
    let account: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": sa}})).expect("an SA");
    accounts
        .create(&PostParams::default(), &account)
        .await
        .expect("create a ServiceAccount");
    legacy_token_secret(client, sa, secret).await;
    filled_token(client, secret).await
}

/// Creates legacy token Secret `secret` for the existing ServiceAccount
/// `sa`, without waiting for the token controller to fill it.
pub async fn legacy_token_secret(client: &Client, sa: &str, secret: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let s: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": secret, "annotations": {"kubernetes.io/service-account.name": sa}},
        "type": "kubernetes.io/service-account-token",
    }))
    .expect("a Secret");
    secrets
        .create(&PostParams::default(), &s)
        .await
        .expect("create a legacy token Secret");
}

/// Waits until the token controller has put a token into Secret `secret`.
pub async fn filled_token(client: &Client, secret: &str) -> String {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    super::eventually(
        &format!("the token controller to fill Secret {secret}"),
        std::time::Duration::from_secs(60),
        || async {
            let s = secrets.get(secret).await.ok()?;
            let token = s.data?.remove("token")?;
            String::from_utf8(token.0).ok()
        },
    )
    .await
}
