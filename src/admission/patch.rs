//! JSON Patch operations that bring issuer-guard's own labels and
//! annotations to a wanted state. Operations address single keys of the raw
//! object, so every other field stays exactly as the client sent it.

use json_patch::{
    AddOperation, PatchOperation, RemoveOperation, ReplaceOperation, jsonptr::PointerBuf,
};
use serde_json::{Map, Value};

use crate::object::{Marks, MetaView};

/// A key issuer-guard owns and the value it should have; `None` means the
/// key must be absent.
pub(super) type Want<'w> = (&'static str, Option<&'w str>);

/// Operations that make `meta` (the object's top-level metadata, `None`
/// when the object has none) carry the wanted labels and annotations.
pub(super) fn marks(
    meta: Option<&MetaView<'_>>,
    labels: &[Want<'_>],
    annotations: &[Want<'_>],
) -> Vec<PatchOperation> {
    let Some(meta) = meta else {
        let mut m = Map::new();
        for (field, wants) in [("labels", labels), ("annotations", annotations)] {
            let map = new_map(wants);
            if !map.is_empty() {
                m.insert(field.to_owned(), Value::Object(map));
            }
        }
        if m.is_empty() {
            return Vec::new();
        }
        return vec![PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["metadata"]),
            value: Value::Object(m),
        })];
    };
    let mut ops = Vec::new();
    map_ops("labels", &meta.labels, labels, &mut ops);
    map_ops("annotations", &meta.annotations, annotations, &mut ops);
    ops
}

fn new_map(wants: &[Want<'_>]) -> Map<String, Value> {
    wants
        .iter()
        .filter_map(|(k, v)| v.map(|v| ((*k).to_owned(), Value::String(v.to_owned()))))
        .collect()
}

fn map_ops(
    field: &'static str,
    have: &Marks<'_>,
    wants: &[Want<'_>],
    ops: &mut Vec<PatchOperation>,
) {
    if !have.present {
        // Adding to a map that does not exist fails; create it whole instead.
        let map = new_map(wants);
        if !map.is_empty() {
            ops.push(PatchOperation::Add(AddOperation {
                path: PointerBuf::from_tokens(["metadata", field]),
                value: Value::Object(map),
            }));
        }
        return;
    }
    for (key, want) in wants {
        // from_tokens escapes `/` in keys as `~1`, as JSON Pointer requires.
        let path = || PointerBuf::from_tokens(["metadata", field, key]);
        match (have.get(key), want) {
            (Some(h), Some(w)) if h == *w => {}
            (Some(_), Some(w)) => ops.push(PatchOperation::Replace(ReplaceOperation {
                path: path(),
                value: Value::String((*w).to_owned()),
            })),
            (None, Some(w)) => ops.push(PatchOperation::Add(AddOperation {
                path: path(),
                value: Value::String((*w).to_owned()),
            })),
            (Some(_), None) => ops.push(PatchOperation::Remove(RemoveOperation { path: path() })),
            (None, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::ObjectView;

    fn apply(doc: &str, labels: &[Want<'_>], annotations: &[Want<'_>]) -> (Value, usize) {
        let obj: ObjectView = serde_json::from_str(doc).unwrap();
        let ops = marks(obj.metadata.as_ref(), labels, annotations);
        let n = ops.len();
        let mut v: Value = serde_json::from_str(doc).unwrap();
        json_patch::patch(&mut v, &json_patch::Patch(ops)).unwrap();
        (v, n)
    }

    const L: &[Want<'static>] = &[
        ("issuer-guard.io/generation", Some("2")),
        ("issuer-guard.io/at-risk", None),
    ];

    #[test]
    fn creates_missing_maps_and_escapes_keys() {
        let (v, _) = apply(
            r#"{"metadata":{"name":"p"}}"#,
            L,
            &[("issuer-guard.io/issuer", Some("https://i"))],
        );
        assert_eq!(v["metadata"]["labels"]["issuer-guard.io/generation"], "2");
        assert_eq!(
            v["metadata"]["annotations"]["issuer-guard.io/issuer"],
            "https://i"
        );
        assert_eq!(v["metadata"]["name"], "p");
        let (v, _) = apply(r#"{"kind":"Pod"}"#, L, &[]);
        assert_eq!(v["metadata"]["labels"]["issuer-guard.io/generation"], "2");
        let (v, _) = apply(r#"{"metadata":{"labels":null}}"#, L, &[]);
        assert_eq!(v["metadata"]["labels"]["issuer-guard.io/generation"], "2");
    }

    #[test]
    fn adds_to_existing_maps_and_keeps_other_keys_in_order() {
        let doc = r#"{"metadata":{"labels":{"z":"1","a":"2","issuer-guard.io/at-risk":"true"}}}"#;
        let (v, n) = apply(doc, L, &[]);
        assert_eq!(n, 2);
        let keys: Vec<&String> = v["metadata"]["labels"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(keys, ["z", "a", "issuer-guard.io/generation"]);
    }

    #[test]
    fn replaces_stale_values_and_is_idempotent() {
        let doc = r#"{"metadata":{"labels":{"issuer-guard.io/generation":"1"}}}"#;
        let (v, n) = apply(doc, L, &[]);
        assert_eq!(n, 1);
        assert_eq!(v["metadata"]["labels"]["issuer-guard.io/generation"], "2");
        let (_, n) = apply(&v.to_string(), L, &[]);
        assert_eq!(n, 0, "a second pass must change nothing");
    }
}
