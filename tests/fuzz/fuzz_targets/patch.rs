//! Patch and apply: the fuzzer's bytes, when they are a JSON object, become
//! `request.object` of a Pod CREATE review (tests/fixtures/reviews/
//! pod-small.json's envelope). Whatever patch /mutate returns must apply to
//! that object, keep every field it had with its value and in its order
//! apart from issuer-guard's own marks, set those marks to exactly what the
//! verdict calls for, and leave nothing to patch when sent again. The checks
//! are tests/admission_props.rs's, copied: tests/ helpers are not a library.

#![no_main]

mod common;

use std::sync::LazyLock;

use base64::Engine as _;
use issuer_guard::admission::{Endpoint, Webhook};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

static WEBHOOK: LazyLock<Webhook> = LazyLock::new(common::webhook);

/// The review the object is sent in.
static ENVELOPE: LazyLock<Value> = LazyLock::new(|| {
    serde_json::from_str(include_str!("../../fixtures/reviews/pod-small.json"))
        .expect("pod-small.json is JSON")
});

/// The stamp issuer-guard owns on new Pods, per the config in common.rs.
const STAMP: [(&str, &str, &str); 3] = [
    ("labels", "issuer-guard.io/generation", "4"),
    (
        "annotations",
        "issuer-guard.io/issuer",
        "https://new.example.com",
    ),
    ("annotations", "issuer-guard.io/key-id", "kid-b"),
];

/// The keys issuer-guard owns: its marks. `issuer-guard.io/ignore` is the
/// user's and must never be touched.
const OWNED: [&str; 5] = [
    "issuer-guard.io/generation",
    "issuer-guard.io/at-risk",
    "issuer-guard.io/issuer",
    "issuer-guard.io/key-id",
    "issuer-guard.io/risks",
];

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
    assert_eq!(
        response["patchType"], "JSONPatch",
        "patch without patchType: {answer}"
    );
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch.as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("patch is not base64 ({e}): {answer}"));
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

/// `patched` keeps every field of `original` in its order, apart from
/// issuer-guard's own marks on the top-level metadata, which it may rewrite.
fn preserves(original: &Value, patched: &Value, path: &str) -> Result<(), String> {
    match (original, patched) {
        (Value::Object(o), Value::Object(p)) => {
            for (k, v) in o {
                let marks = path == "/metadata/labels" || path == "/metadata/annotations";
                if marks && OWNED.contains(&k.as_str()) {
                    continue;
                }
                let child = p.get(k).ok_or_else(|| format!("{path}/{k} dropped"))?;
                preserves(v, child, &format!("{path}/{k}"))?;
            }
            let keys_o: Vec<&String> = o.keys().collect();
            let keys_p: Vec<&String> = p.keys().filter(|k| o.contains_key(*k)).collect();
            if keys_o
                .iter()
                .filter(|k| !OWNED.contains(&k.as_str()))
                .ne(keys_p.iter().filter(|k| !OWNED.contains(&k.as_str())))
            {
                return Err(format!("{path}: keys reordered"));
            }
            Ok(())
        }
        (Value::Null, Value::Object(_))
            if path.ends_with("/labels")
                || path.ends_with("/annotations")
                || path.ends_with("/metadata") =>
        {
            Ok(())
        }
        (o, p) if o == p => Ok(()),
        (o, p) => Err(format!("{path}: {o} became {p}")),
    }
}

/// `original` with issuer-guard's marks set as the verdict calls for: the
/// at-risk label and risks annotation from the validating webhook's audit
/// annotation, and the stamp on a Pod being created.
fn expected(original: &Value, risks: Option<&str>, stamped: bool) -> Value {
    let mut want = original.clone();
    if !want["metadata"].is_object() {
        want["metadata"] = json!({});
    }
    let mut set = |map: &str, key: &str, value: Option<&str>| {
        let meta = &mut want["metadata"];
        if !meta[map].is_object() {
            if value.is_none() {
                return;
            }
            meta[map] = json!({});
        }
        let Some(m) = meta[map].as_object_mut() else {
            unreachable!("{map} was just made an object");
        };
        match value {
            Some(v) => {
                m.insert(key.to_owned(), json!(v));
            }
            None => {
                m.remove(key);
            }
        }
    };
    set("labels", "issuer-guard.io/at-risk", risks.map(|_| "true"));
    set("annotations", "issuer-guard.io/risks", risks);
    if stamped {
        for (map, key, value) in STAMP {
            set(map, key, Some(value));
        }
    }
    want
}
