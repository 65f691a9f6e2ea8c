//! Mutated real reviews thrown at the handler: it never panics, always
//! echoes a readable uid, and any patch it returns applies cleanly to the
//! object it was given and keeps everything that object had.

use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine as _;
use issuer_guard::{
    admission::{Endpoint, Reply, Webhook},
    config::Config,
    rules::LegacySecrets,
};
use proptest::prelude::*;
use serde_json::{Value, json};

const FIXTURES: [&str; 4] = [
    include_str!("fixtures/reviews/pod-small.json"),
    include_str!("fixtures/reviews/pod-large.json"),
    include_str!("fixtures/reviews/deployment-denied.json"),
    include_str!("fixtures/reviews/deployment-update.json"),
];

const CONFIG: &str = "generation: {static: {number: 4, issuer: 'https://new.example.com', keyId: kid-b}}\nrotation: {retiringIssuers: ['https://old.example.com'], retiringKeyIds: [kid-a], graceSeconds: 3600}\nmode: audit\n";

fn webhook() -> Webhook {
    let mut secrets = LegacySecrets::default();
    secrets.insert("shop", "checkout-token");
    Webhook::new(
        Arc::new(ArcSwap::from_pointee(Config::parse(CONFIG).unwrap())),
        Arc::new(secrets),
    )
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

/// `patched` keeps every field of `original`, apart from issuer-guard's own
/// marks, which it may rewrite.
fn preserves(original: &Value, patched: &Value, path: &str) -> Result<(), String> {
    match (original, patched) {
        (Value::Object(o), Value::Object(p)) => {
            for (k, v) in o {
                let ours =
                    path.ends_with("/metadata/labels") || path.ends_with("/metadata/annotations");
                if ours && k.starts_with("issuer-guard.io/") {
                    continue;
                }
                let child = p.get(k).ok_or_else(|| format!("{path}/{k} dropped"))?;
                preserves(v, child, &format!("{path}/{k}"))?;
            }
            let keys_o: Vec<&String> = o.keys().collect();
            let keys_p: Vec<&String> = p.keys().filter(|k| o.contains_key(*k)).collect();
            if keys_o
                .iter()
                .filter(|k| !k.starts_with("issuer-guard.io/"))
                .ne(keys_p.iter().filter(|k| !k.starts_with("issuer-guard.io/")))
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

fn check(
    webhook: &Webhook,
    endpoint: Endpoint,
    body: &[u8],
    sent: Option<&Value>,
) -> Result<(), TestCaseError> {
    let uid = sent
        .and_then(|s| s["request"]["uid"].as_str())
        .filter(|u| !u.is_empty());
    let answer = match webhook.review(endpoint, body).reply {
        Reply::Review(json) => serde_json::from_slice::<Value>(&json)
            .map_err(|e| TestCaseError::fail(format!("unreadable reply: {e}")))?,
        Reply::Unusable(why) => {
            prop_assert!(!why.is_empty());
            // Unanswerable only when no uid could be read.
            prop_assert!(uid.is_none(), "unanswered despite uid {:?}: {}", uid, why);
            return Ok(());
        }
    };
    let response = &answer["response"];
    prop_assert_eq!(response["uid"].as_str(), uid, "uid not echoed: {}", answer);
    if let Some(patch) = response.get("patch") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch.as_str().unwrap_or_default())
            .map_err(|e| TestCaseError::fail(format!("patch is not base64: {e}")))?;
        let patch: json_patch::Patch =
            serde_json::from_slice(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let original = sent
            .map(|s| s["request"]["object"].clone())
            .unwrap_or_default();
        let mut patched = original.clone();
        json_patch::patch(&mut patched, &patch)
            .map_err(|e| TestCaseError::fail(format!("patch does not apply: {e}\n{patch:?}")))?;
        preserves(&original, &patched, "").map_err(TestCaseError::fail)?;
        // Applying the patched object again yields no further patch.
        let mut again = sent.cloned().unwrap_or_default();
        again["request"]["object"] = patched;
        let Reply::Review(second) = webhook.review(endpoint, again.to_string().as_bytes()).reply
        else {
            return Err(TestCaseError::fail("the patched object was not answered"));
        };
        let second: Value =
            serde_json::from_slice(&second).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(
            second["response"].get("patch").is_none(),
            "not idempotent: {}",
            second
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn mutated_reviews(fixture in 0..FIXTURES.len(), edits in prop::collection::vec((any::<prop::sample::Index>(), edit()), 1..6), validate in any::<bool>()) {
        let webhook = webhook();
        let mut review: Value = serde_json::from_str(FIXTURES[fixture]).unwrap();
        mutate(&mut review, &edits);
        let endpoint = if validate { Endpoint::Validate } else { Endpoint::Mutate };
        check(&webhook, endpoint, review.to_string().as_bytes(), Some(&review))?;
    }

    #[test]
    fn damaged_bytes(fixture in 0..FIXTURES.len(), cut in any::<prop::sample::Index>(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4)) {
        let webhook = webhook();
        let mut bytes = FIXTURES[fixture].as_bytes().to_vec();
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
            if let Reply::Review(json) = webhook.review(endpoint, &bytes).reply {
                prop_assert!(serde_json::from_slice::<Value>(&json).is_ok());
            }
        }
    }
}
