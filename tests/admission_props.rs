//! Mutated real reviews thrown at the handler: it never panics, always
//! echoes a readable uid, and any patch it returns applies cleanly to the
//! object it was given, keeps everything that object had in its order, and
//! changes nothing but the keys issuer-guard owns, to exactly the values the
//! verdict calls for. Both an audit and an enforce configuration are fuzzed,
//! and the run fails if too few cases patched or denied anything.

#[path = "support/patch_invariants.rs"]
mod patch_invariants;

use std::{cell::Cell, sync::Arc};

use arc_swap::ArcSwap;
use base64::Engine as _;
use issuer_guard::{
    admission::{Endpoint, Reply, Webhook},
    config::Config,
    rules::LegacySecrets,
};
use patch_invariants::{expected, preserves};
use proptest::{
    prelude::*,
    test_runner::{Config as RunnerConfig, FileFailurePersistence, TestRunner},
};
use serde_json::{Value, json};

const FIXTURES: [&str; 4] = [
    include_str!("fixtures/reviews/pod-small.json"),
    include_str!("fixtures/reviews/pod-large.json"),
    include_str!("fixtures/reviews/deployment-denied.json"),
    include_str!("fixtures/reviews/deployment-update.json"),
];

const CONFIG: &str = "generation: {static: {number: 4, issuer: 'https://new.example.com', keyId: kid-b}}\nrotation: {retiringIssuers: ['https://old.example.com'], retiringKeyIds: [kid-a], graceSeconds: 3600}\n";
const MODES: [&str; 2] = ["audit", "enforce"];

fn webhook(mode: &str) -> Webhook {
    let mut secrets = LegacySecrets::default();
    secrets.insert("shop", "checkout-token");
    let config = Config::parse(&format!("{CONFIG}mode: {mode}\n")).unwrap();
    Webhook::new(Arc::new(ArcSwap::from_pointee(config)), Arc::new(secrets))
}

#[derive(Debug, Clone)]
enum Edit {
    Remove,
    Replace(Value),
    AddUnknownField(String, Value),
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z/~.-]{0,12}".prop_map(Value::String),
        Just(json!("token")),
        Just(json!({"name": "checkout-token", "key": "token"})),
        Just(
            json!({"serviceAccountToken": {"audience": "https://old.example.com", "path": "token"}})
        ),
        Just(json!([])),
        Just(json!({})),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        Just(Edit::Remove),
        leaf().prop_map(Edit::Replace),
        ("[a-zA-Z/~.]{1,10}", leaf()).prop_map(|(k, v)| Edit::AddUnknownField(k, v)),
    ]
}

/// JSON Pointers of every node below `request`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        _ => {}
    }
}

fn mutate(review: &mut Value, edits: &[(prop::sample::Index, Edit)]) {
    for (index, e) in edits {
        let mut all = Vec::new();
        pointers(review, String::new(), &mut all);
        // Earlier edits may have removed everything there was to edit.
        if all.is_empty() {
            return;
        }
        let target = all[index.index(all.len())].clone();
        let (parent, key) = target.rsplit_once('/').unwrap();
        let key = key.replace("~1", "/").replace("~0", "~");
        let Some(parent) = review.pointer_mut(parent) else {
            continue;
        };
        match (e, parent) {
            (Edit::Remove, Value::Object(m)) => {
                m.remove(&key);
            }
            (Edit::Remove, Value::Array(a)) => {
                a.remove(key.parse::<usize>().unwrap());
            }
            (Edit::Replace(v), Value::Object(m)) => {
                m.insert(key, v.clone());
            }
            (Edit::Replace(v), Value::Array(a)) => {
                a[key.parse::<usize>().unwrap()] = v.clone();
            }
            (Edit::AddUnknownField(k, v), _) => {
                if let Some(Value::Object(m)) = review.pointer_mut(&target) {
                    m.insert(k.clone(), v.clone());
                }
            }
            _ => {}
        }
    }
}

/// What the cases came to, so that a run that never reached the patch or
/// the deny path fails instead of passing vacuously.
#[derive(Default)]
struct Tally {
    patched: Cell<usize>,
    denied: Cell<usize>,
}

fn answer(
    webhook: &Webhook,
    endpoint: Endpoint,
    body: &[u8],
) -> Result<Option<Value>, TestCaseError> {
    match webhook.review(endpoint, body).reply {
        Reply::Review(json) => serde_json::from_slice::<Value>(&json)
            .map(Some)
            .map_err(|e| TestCaseError::fail(format!("unreadable reply: {e}"))),
        Reply::Unusable(why) => {
            prop_assert!(!why.is_empty());
            Ok(None)
        }
    }
}

fn check(
    webhook: &Webhook,
    endpoint: Endpoint,
    body: &[u8],
    sent: Option<&Value>,
    tally: &Tally,
) -> Result<(), TestCaseError> {
    let uid = sent
        .and_then(|s| s["request"]["uid"].as_str())
        .filter(|u| !u.is_empty());
    let Some(answer) = answer(webhook, endpoint, body)? else {
        // Unanswerable only when no uid could be read.
        prop_assert!(uid.is_none(), "unanswered despite uid {:?}", uid);
        return Ok(());
    };
    let response = &answer["response"];
    prop_assert_eq!(response["uid"].as_str(), uid, "uid not echoed: {}", answer);
    if response["allowed"] == false && response["status"]["code"] == 403 {
        tally.denied.set(tally.denied.get() + 1);
    }
    let Some(patch) = response.get("patch") else {
        return Ok(());
    };
    tally.patched.set(tally.patched.get() + 1);
    prop_assert_eq!(response["patchType"].as_str(), Some("JSONPatch"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch.as_str().unwrap_or_default())
        .map_err(|e| TestCaseError::fail(format!("patch is not base64: {e}")))?;
    let patch: json_patch::Patch =
        serde_json::from_slice(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let sent = sent.cloned().unwrap_or_default();
    let original = sent["request"]["object"].clone();
    let mut patched = original.clone();
    json_patch::patch(&mut patched, &patch)
        .map_err(|e| TestCaseError::fail(format!("patch does not apply: {e}\n{patch:?}")))?;
    preserves(&original, &patched, "").map_err(TestCaseError::fail)?;

    // Exactly the owned keys changed, to what the verdict says.
    let validated = answer_for(webhook, Endpoint::Validate, body)?;
    let risks = validated["response"]["auditAnnotations"]["risks"].as_str();
    let req = &sent["request"];
    let stamped = req["kind"]["kind"] == "Pod" && req["operation"] == "CREATE";
    let want = expected(&original, risks, stamped);
    prop_assert!(
        patched == want,
        "patched object differs from the original plus issuer-guard's marks\npatched: {}\nwanted:  {}",
        patched,
        want
    );

    // Applying the patched object again yields no further patch.
    let mut again = sent;
    again["request"]["object"] = patched;
    let second = answer_for(webhook, endpoint, again.to_string().as_bytes())?;
    prop_assert!(
        second["response"].get("patch").is_none(),
        "not idempotent: {}",
        second
    );
    Ok(())
}

/// An answer that must exist: the review had a uid.
fn answer_for(webhook: &Webhook, endpoint: Endpoint, body: &[u8]) -> Result<Value, TestCaseError> {
    answer(webhook, endpoint, body)?
        .ok_or_else(|| TestCaseError::fail("a review with a uid was not answered"))
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        source_file: Some(file!()),
        ..RunnerConfig::default()
    })
}

#[test]
fn mutated_reviews() {
    const CASES: u32 = 512;
    let webhooks = MODES.map(webhook);
    let tally = Tally::default();
    let strategy = (
        0..FIXTURES.len(),
        prop::collection::vec((any::<prop::sample::Index>(), edit()), 0..6),
        any::<bool>(),
        0..MODES.len(),
    );
    let result = runner(CASES).run(&strategy, |(fixture, edits, validate, mode)| {
        let mut review: Value = serde_json::from_str(FIXTURES[fixture]).unwrap();
        mutate(&mut review, &edits);
        let endpoint = if validate {
            Endpoint::Validate
        } else {
            Endpoint::Mutate
        };
        check(
            &webhooks[mode],
            endpoint,
            review.to_string().as_bytes(),
            Some(&review),
            &tally,
        )
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // About half the cases go to /mutate, most of them readable; a quarter
    // are enforce-mode validations of fixtures built to be denied.
    let (patched, denied) = (tally.patched.get(), tally.denied.get());
    assert!(
        patched >= CASES as usize / 8,
        "only {patched} of {CASES} cases produced a patch"
    );
    assert!(
        denied >= CASES as usize / 32,
        "only {denied} of {CASES} cases were denied"
    );
}

/// Reviews damaged at the byte level: some bytes replaced, and the body cut
/// short in half the cases. Whatever the handler answers with an
/// AdmissionReview must be JSON that echoes a uid; a body with no readable
/// uid gets none. The run fails if too few cases got an AdmissionReview to
/// check, as a damage that made every body unreadable would.
#[test]
fn damaged_bytes() {
    const CASES: u32 = 384;
    let webhooks = MODES.map(webhook);
    // Cases in which at least one endpoint answered with an AdmissionReview.
    let answered = Cell::new(0usize);
    let strategy = (
        0..FIXTURES.len(),
        prop::option::of(any::<prop::sample::Index>()),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        0..MODES.len(),
    );
    let result = runner(CASES).run(&strategy, |(fixture, cut, flips, mode)| {
        let mut bytes = FIXTURES[fixture].as_bytes().to_vec();
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let mut reviewed = false;
        for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
            if let Reply::Review(json) = webhooks[mode].review(endpoint, &bytes).reply {
                let answer = serde_json::from_slice::<Value>(&json);
                prop_assert!(answer.is_ok(), "not JSON: {:?}", answer);
                let answer = answer.unwrap_or_default();
                prop_assert!(
                    answer["response"]["uid"]
                        .as_str()
                        .is_some_and(|u| !u.is_empty()),
                    "no uid echoed: {}",
                    answer
                );
                reviewed = true;
            }
        }
        answered.set(answered.get() + usize::from(reviewed));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // A quarter of the cases have no flip, and half of those are not cut:
    // an eighth at least are whole reviews, and flips that land inside a
    // string mostly leave the review readable.
    let answered = answered.get();
    eprintln!("{answered} of {CASES} damaged reviews answered with an AdmissionReview");
    assert!(
        answered >= CASES as usize / 8,
        "only {answered} of {CASES} damaged reviews reached the assertions"
    );
}
