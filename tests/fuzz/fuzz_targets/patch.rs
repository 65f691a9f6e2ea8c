//! Patch and apply: the fuzzer's bytes, when they are a JSON object, become
//! `request.object` of a Pod CREATE review (tests/fixtures/reviews/
//! pod-small.json's envelope). Whatever patch /mutate returns must apply to
//! that object, keep every field it had with its value and in its order
//! apart from issuer-guard's own marks, set those marks to exactly what the
//! verdict calls for, and leave nothing to patch when sent again. The checks
//! are tests/admission_props.rs's, copied: tests/ helpers are not a library.

#![no_main]

mod common;
#[path = "../../support/patch_invariants.rs"]
mod patch_invariants;

use std::sync::LazyLock;

use issuer_guard::admission::{Endpoint, Webhook};
use libfuzzer_sys::fuzz_target;
use patch_invariants::{expected, preserves};
use serde_json::Value;

static WEBHOOK: LazyLock<Webhook> = LazyLock::new(common::webhook);

/// The review the object is sent in.
static ENVELOPE: LazyLock<Value> = LazyLock::new(|| {
    serde_json::from_str(include_str!("../../fixtures/reviews/pod-small.json"))
        .expect("pod-small.json is JSON")
});

fuzz_target!(|data: &[u8]| {
    // Only objects can be a Pod; anything else says nothing about patches.
    let Ok(original @ Value::Object(_)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let mut review = ENVELOPE.clone();
    review["request"]["object"] = original.clone();
    let body = serde_json::to_vec(&review).expect("a Value serialises");
    let uid = ENVELOPE["request"]["uid"].as_str();

    let answer = answer_for(Endpoint::Mutate, &body);
    let response = &answer["response"];
    assert_eq!(response["uid"].as_str(), uid, "uid not echoed: {answer}");
    let Some(patch) = response.get("patch") else {
        return;
    };
    let bytes = common::patch_bytes(&answer, patch);
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "patch is not an RFC 6902 patch ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    let mut patched = original.clone();
    if let Err(e) = json_patch::patch(&mut patched, &patch) {
        panic!("patch does not apply: {e}\npatch: {patch:?}\nobject: {original}");
    }
    if let Err(e) = preserves(&original, &patched, "") {
        panic!("patch changed the object's own fields: {e}\npatch: {patch:?}\nobject: {original}");
    }

    // Exactly the owned keys changed, to what the verdict says: the
    // validating webhook's risks, and the stamp on a Pod being created.
    let validated = answer_for(Endpoint::Validate, &body);
    let risks = validated["response"]["auditAnnotations"]["risks"].as_str();
    let want = expected(&original, risks, true);
    assert!(
        patched == want,
        "patched object differs from the original plus issuer-guard's marks\npatched: {patched}\nwanted:  {want}"
    );

    // Sending the patched object again yields no further patch.
    review["request"]["object"] = patched;
    let body = serde_json::to_vec(&review).expect("a Value serialises");
    let second = answer_for(Endpoint::Mutate, &body);
    assert!(
        second["response"].get("patch").is_none(),
        "not idempotent: {second}"
    );
});

/// An answer that must exist: the review has a uid.
fn answer_for(endpoint: Endpoint, body: &[u8]) -> Value {
    common::answer(&WEBHOOK, endpoint, body)
        .unwrap_or_else(|| panic!("{endpoint:?} left a review with a uid unanswered"))
}
