//! What both targets share: the webhook under test, configured as in
//! tests/admission_props.rs but enforcing, so that the deny path is reached.

use std::sync::Arc;

use arc_swap::ArcSwap;
use issuer_guard::{
    admission::{Endpoint, Reply, Webhook},
    config::Config,
    rules::LegacySecrets,
};
use serde_json::Value;

/// tests/admission_props.rs's CONFIG, with a declared rotation, in enforce
/// mode.
const CONFIG: &str = "generation: {static: {number: 4, issuer: 'https://new.example.com', keyId: kid-b}}\nrotation: {retiringIssuers: ['https://old.example.com'], retiringKeyIds: [kid-a], graceSeconds: 3600}\nmode: enforce\n";

/// The webhook, with one legacy token Secret known (as in the property
/// test) so that the legacy-token rule can fire on the fixtures.
pub fn webhook() -> Webhook {
    let mut secrets = LegacySecrets::default();
    secrets.insert("shop", "checkout-token");
    let config = Config::parse(CONFIG).expect("the fuzz config parses");
    Webhook::new(Arc::new(ArcSwap::from_pointee(config)), Arc::new(secrets))
}

/// The reply, read back: `None` for `Reply::Unusable`. An unreadable reply
/// or an unexplained refusal is a failure of the webhook, so it panics.
pub fn answer(webhook: &Webhook, endpoint: Endpoint, body: &[u8]) -> Option<Value> {
    match webhook.review(endpoint, body).reply {
        Reply::Review(json) => match serde_json::from_slice::<Value>(&json) {
            Ok(v) => Some(v),
            Err(e) => panic!(
                "{endpoint:?} replied with JSON that does not parse ({e}): {}",
                String::from_utf8_lossy(&json)
            ),
        },
        Reply::Unusable(why) => {
            assert!(
                !why.is_empty(),
                "{endpoint:?}: Reply::Unusable without a reason"
            );
            None
        }
    }
}

/// The bytes of a response's patch, which must be a base64 JSON Patch.
pub fn patch_bytes(answer: &Value, patch: &Value) -> Vec<u8> {
    use base64::Engine as _;
    assert_eq!(
        answer["response"]["patchType"], "JSONPatch",
        "patch without patchType: {answer}"
    );
    base64::engine::general_purpose::STANDARD
        .decode(patch.as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("patch is not base64 ({e}): {answer}"))
}
