//! Decode and judge: arbitrary bytes as an AdmissionReview body, to both
//! endpoints. The webhook must never panic; an answer must be an
//! AdmissionReview under the request's uid whenever the input had a
//! readable one; and only a body with no readable uid may go unanswered.

#![no_main]

mod common;

use std::{fmt, sync::LazyLock};

use issuer_guard::admission::{Endpoint, Webhook};
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

static WEBHOOK: LazyLock<Webhook> = LazyLock::new(common::webhook);

fuzz_target!(|body: &[u8]| {
    let sent = sent_uid(body);
    for endpoint in [Endpoint::Validate, Endpoint::Mutate] {
        check(endpoint, body, &sent);
    }
});

/// What the input says `request.uid` is.
#[derive(Debug)]
enum Sent {
    /// A non-empty string, read as any JSON reader would.
    Uid(String),
    /// No readable non-empty string: not JSON, no request object, a uid
    /// that is absent, empty or not a string.
    Unreadable,
    /// `request` or `request.uid` appears twice. JSON leaves which one
    /// counts to the reader (RFC 8259 section 4), so no one answer is right;
    /// the API server never sends such a review.
    Ambiguous,
}

fn sent_uid(body: &[u8]) -> Sent {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Sent::Unreadable;
    };
    if !v["request"].is_object() {
        return Sent::Unreadable;
    }
    // The Value kept the last of any duplicate keys; look for them.
    match serde_json::from_slice::<Duplicates>(body) {
        Ok(Duplicates(false)) => {}
        Ok(Duplicates(true)) | Err(_) => return Sent::Ambiguous,
    }
    match v["request"]["uid"].as_str() {
        Some(uid) if !uid.is_empty() => Sent::Uid(uid.to_owned()),
        _ => Sent::Unreadable,
    }
}

fn check(endpoint: Endpoint, body: &[u8], sent: &Sent) {
    let Some(answer) = common::answer(&WEBHOOK, endpoint, body) else {
        if let Sent::Uid(uid) = sent {
            panic!("{endpoint:?} left a review with the readable uid {uid:?} unanswered");
        }
        return;
    };
    assert_eq!(
        answer["apiVersion"], "admission.k8s.io/v1",
        "{endpoint:?}: not an admission.k8s.io/v1 answer: {answer}"
    );
    assert_eq!(
        answer["kind"], "AdmissionReview",
        "{endpoint:?}: not an AdmissionReview: {answer}"
    );
    let response = &answer["response"];
    assert!(
        response["allowed"].is_boolean(),
        "{endpoint:?}: response.allowed is not a boolean: {answer}"
    );
    let uid = response["uid"].as_str();
    match sent {
        Sent::Uid(sent) => assert_eq!(
            uid,
            Some(sent.as_str()),
            "{endpoint:?}: uid not echoed: {answer}"
        ),
        // Answered although the input had no uid we could read: it still
        // has to carry one, which the webhook found somewhere.
        Sent::Unreadable | Sent::Ambiguous => assert!(
            uid.is_some_and(|u| !u.is_empty()),
            "{endpoint:?}: answered with no uid: {answer}"
        ),
    }
    if response["allowed"] == false {
        assert!(
            response["status"]["code"].is_u64(),
            "{endpoint:?}: refused without a status code: {answer}"
        );
    }
    // The patch target checks what a patch does; here only that it is one.
    if let Some(patch) = response.get("patch") {
        assert_eq!(
            endpoint,
            Endpoint::Mutate,
            "the validating webhook patched: {answer}"
        );
        let bytes = common::patch_bytes(&answer, patch);
        let ops: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("patch is not JSON ({e}): {answer}"));
        assert!(
            ops.as_array().is_some_and(|a| !a.is_empty()),
            "patch is not a non-empty array: {ops}"
        );
    }
}

/// Whether the top-level object has `request` twice or its `request` has
/// `uid` twice. Read only once the body is known to be JSON with a
/// `request` object; an error (an earlier `request` that is no object)
/// counts as ambiguous too.
struct Duplicates(bool);

impl<'de> Deserialize<'de> for Duplicates {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(KeyCounter {
            key: "request",
            inner: true,
        })
    }
}

struct KeyCounter {
    key: &'static str,
    /// Whether to look inside the key's value for a duplicate `uid`.
    inner: bool,
}

impl<'de> Visitor<'de> for KeyCounter {
    type Value = Duplicates;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Duplicates, A::Error> {
        let (mut seen, mut dup) = (0, false);
        while let Some(key) = map.next_key::<String>()? {
            if key == self.key {
                seen += 1;
                if self.inner {
                    dup |= map.next_value::<UidDuplicates>()?.0;
                    continue;
                }
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(Duplicates(dup || seen > 1))
    }
}

struct UidDuplicates(bool);

impl<'de> Deserialize<'de> for UidDuplicates {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(KeyCounter {
            key: "uid",
            inner: false,
        })
        .map(|d| UidDuplicates(d.0))
    }
}
