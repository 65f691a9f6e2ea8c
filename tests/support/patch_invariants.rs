//! What a patch from the mutating webhook must do to the object it was
//! given, shared by the property test (tests/admission_props.rs) and the
//! fuzz target (tests/fuzz/fuzz_targets/patch.rs), which judge both under
//! the same configuration: generation 4, issuer https://new.example.com,
//! key kid-b.

use serde_json::{Value, json};

/// The stamp issuer-guard owns on new Pods, per CONFIG.
pub const STAMP: [(&str, &str, &str); 3] = [
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
pub const OWNED: [&str; 5] = [
    "issuer-guard.io/generation",
    "issuer-guard.io/at-risk",
    "issuer-guard.io/issuer",
    "issuer-guard.io/key-id",
    "issuer-guard.io/risks",
];

/// `patched` keeps every field of `original` in its order, apart from
/// issuer-guard's own marks on the top-level metadata, which it may rewrite.
pub fn preserves(original: &Value, patched: &Value, path: &str) -> Result<(), String> {
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
pub fn expected(original: &Value, risks: Option<&str>, stamped: bool) -> Value {
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
        let m = meta[map].as_object_mut().expect("a map");
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
