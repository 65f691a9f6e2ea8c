//! Reads manifests for `check`: YAML or JSON; several documents per file;
//! `List` kinds expanded into their items. Objects are handed on one at a
//! time and dropped, so memory follows the largest document, not the input.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Value, value::RawValue};

use super::{
    errors::{LoadError, Unusable},
    read::Limits,
};

/// One object from the input, with where it came from. It lives only while
/// it is judged.
#[derive(Debug)]
pub struct Document<'t> {
    pub source_name: &'t str,
    /// 1-based position of the YAML document in its file.
    pub document: usize,
    /// Named on the command line (or stdin), not found in a directory.
    pub explicit: bool,
    pub value: Value,
    /// Where the object's text is, for reports that point at a line: the
    /// document's text, the file line it starts on, and the path of the
    /// object within it (`items[2]` of a `List`, `[0]` of a JSON array).
    pub text: &'t str,
    pub first_line: usize,
    pub prefix: String,
}

/// Where each object goes, and what decides whether a document is worth
/// parsing at all.
pub(crate) struct Sink<'a> {
    /// Looks at a document's raw text; `false` skips it unparsed.
    pub wanted: &'a dyn Fn(&str) -> bool,
    /// Takes an object; an object of a judged kind it cannot read comes
    /// back as unusable.
    pub object: &'a mut dyn FnMut(Document<'_>) -> Result<(), LoadError>,
    pub unusable: &'a mut dyn FnMut(Unusable),
}

/// Where a document is: its file, position, text and first line.
struct At<'s> {
    source_name: &'s str,
    document: usize,
    explicit: bool,
    text: &'s str,
    first_line: usize,
}

impl At<'_> {
    fn error(&self, message: String) -> LoadError {
        LoadError::Parse {
            source_name: self.source_name.to_owned(),
            document: self.document,
            message,
        }
    }

    fn too_large(&self, what: String, limit: usize) -> LoadError {
        LoadError::TooLarge {
            source_name: self.source_name.to_owned(),
            what,
            limit,
        }
    }
}

/// The YAML library's message, with the file named where it says
/// `<input>`, and plain advice where it names its own options.
fn yaml_message(source_name: &str, document: usize, e: &serde_saphyr::Error) -> String {
    e.to_string()
        .replace(
            "<input>",
            &format!("{source_name} (document {document}), line"),
        )
        .replace(
            ", set DuplicateKeyPolicy in Options if acceptable",
            "; remove or rename one of them",
        )
}

/// Reads one file's text into objects, handing each to `sink`.
pub(crate) fn parse(
    source_name: &str,
    text: &str,
    explicit: bool,
    limits: Limits,
    sink: &mut Sink<'_>,
) {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let at = At {
            source_name,
            document: 1,
            explicit,
            text,
            first_line: 1,
        };
        if let Err(e) = json(&at, limits, sink) {
            (sink.unusable)(Unusable { error: e, explicit });
        }
        return;
    }
    for (i, (first_line, doc)) in crate::yaml::documents_at(text).enumerate() {
        if doc.trim().is_empty() || !(sink.wanted)(&doc) {
            continue;
        }
        let at = At {
            source_name,
            document: i + 1,
            explicit,
            text: &doc,
            first_line,
        };
        if let Err(e) = yaml(&at, limits, sink) {
            (sink.unusable)(Unusable { error: e, explicit });
        }
    }
}

fn yaml(at: &At<'_>, limits: Limits, sink: &mut Sink<'_>) -> Result<(), LoadError> {
    let message = |e: &serde_saphyr::Error| yaml_message(at.source_name, at.document, e);
    if at.text.len() <= limits.document {
        let value = crate::yaml::from_str(at.text).map_err(|e| at.error(message(&e)))?;
        return push_document(at, String::new(), value, sink);
    }
    // `kubectl get -o yaml` writes a whole namespace as one `List`
    // document: its items are read one at a time, each within the limit
    // for one object. Any other document this large is refused unread.
    if !looks_like_list(at.text) {
        return Err(at.too_large(
            format!("one document (document {})", at.document),
            limits.document,
        ));
    }
    let mut items = ItemsOf {
        at,
        sink,
        failed: None,
    };
    crate::yaml::with_deserializer(at.text, |d| d.deserialize_map(ListVisitor(&mut items)))
        .map_err(|e| at.error(message(&e)))?;
    items.failed.map_or(Ok(()), Err)
}

/// A top-level `kind: …List` line: the document is a `List` object.
fn looks_like_list(text: &str) -> bool {
    text.lines().any(|line| {
        line.strip_prefix("kind:")
            .is_some_and(|kind| kind.trim().trim_matches(['"', '\'']).ends_with("List"))
    })
}

/// JSON is read as raw text first, so each object is parsed only once it
/// is known to be within the limit, and a `List` or array one item at a
/// time.
fn json(at: &At<'_>, limits: Limits, sink: &mut Sink<'_>) -> Result<(), LoadError> {
    let raw: &RawValue = serde_json::from_str(at.text).map_err(|e| at.error(e.to_string()))?;
    let text = raw.get();
    if text.starts_with('[') {
        let items: Vec<&RawValue> =
            serde_json::from_str(text).map_err(|e| at.error(e.to_string()))?;
        for (i, item) in items.into_iter().enumerate() {
            json_object(at, format!("[{i}]"), item, limits, sink)?;
        }
        return Ok(());
    }
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(borrow, default)]
        kind: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        items: Option<&'a RawValue>,
    }
    let head: Head = serde_json::from_str(text).unwrap_or(Head {
        kind: None,
        items: None,
    });
    match (head.kind, head.items) {
        (Some(kind), Some(items)) if kind.ends_with("List") => {
            let items: Vec<&RawValue> = serde_json::from_str(items.get())
                .map_err(|_| at.error(format!("{kind}.items is not a list")))?;
            for (i, item) in items.into_iter().enumerate() {
                json_object(at, format!("items[{i}]"), item, limits, sink)?;
            }
            Ok(())
        }
        _ => json_object(at, String::new(), raw, limits, sink),
    }
}

fn json_object(
    at: &At<'_>,
    prefix: String,
    raw: &RawValue,
    limits: Limits,
    sink: &mut Sink<'_>,
) -> Result<(), LoadError> {
    let text = raw.get();
    if text.len() > limits.document {
        let what = if prefix.is_empty() {
            "one object".to_owned()
        } else {
            format!("one object ({prefix})")
        };
        return Err(at.too_large(what, limits.document));
    }
    if !(sink.wanted)(text) {
        return Ok(());
    }
    let value = serde_json::from_str(text).map_err(|e| at.error(e.to_string()))?;
    push_document(at, prefix, value, sink)
}

fn push_document(
    at: &At<'_>,
    prefix: String,
    value: Value,
    sink: &mut Sink<'_>,
) -> Result<(), LoadError> {
    match value {
        Value::Null => Ok(()),
        Value::Object(ref map) => {
            let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
            if kind.ends_with("List") && map.contains_key("items") {
                let Some(Value::Array(items)) = map.get("items") else {
                    return Err(at.error(format!("{kind}.items is not a list")));
                };
                let dot = if prefix.is_empty() { "" } else { "." };
                for (i, item) in items.iter().enumerate() {
                    push_document(at, format!("{prefix}{dot}items[{i}]"), item.clone(), sink)?;
                }
                return Ok(());
            }
            if kind.is_empty() {
                return Err(at.error(
                    "not a Kubernetes object: it has no kind (a values or config file?)".into(),
                ));
            }
            (sink.object)(Document {
                source_name: at.source_name,
                document: at.document,
                explicit: at.explicit,
                value,
                text: at.text,
                first_line: at.first_line,
                prefix,
            })
        }
        other => Err(at.error(format!(
            "expected a Kubernetes object, found {}",
            match other {
                Value::Array(_) => "a list",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                _ => "a scalar",
            }
        ))),
    }
}

/// The items of a large YAML `List`, handed on as they are parsed.
struct ItemsOf<'a, 's, 'k> {
    at: &'a At<'s>,
    sink: &'a mut Sink<'k>,
    /// The first item that could not be used: it stops the document.
    failed: Option<LoadError>,
}

struct ListVisitor<'i, 'a, 's, 'k>(&'i mut ItemsOf<'a, 's, 'k>);

impl<'de> Visitor<'de> for ListVisitor<'_, '_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a List object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "items" {
                map.next_value_seed(ItemsSeed(&mut *self.0))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

struct ItemsSeed<'i, 'a, 's, 'k>(&'i mut ItemsOf<'a, 's, 'k>);

impl<'de> DeserializeSeed<'de> for ItemsSeed<'_, '_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed<'_, '_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let items = self.0;
        let mut i = 0;
        while let Some(value) = seq.next_element::<Value>()? {
            if items.failed.is_none() {
                let prefix = format!("items[{i}]");
                if let Err(e) = push_document(items.at, prefix, value, items.sink) {
                    items.failed = Some(e);
                }
            }
            i += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one file yields: each object's (document, prefix, name), and
    /// the unusable inputs' messages.
    fn read(text: &str, limits: Limits) -> (Vec<(usize, String, String)>, Vec<String>) {
        let (mut objects, mut errors) = (Vec::new(), Vec::new());
        parse(
            "f.yaml",
            text,
            true,
            limits,
            &mut Sink {
                wanted: &|_| true,
                object: &mut |d| {
                    let name = d.value["metadata"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned();
                    objects.push((d.document, d.prefix, name));
                    Ok(())
                },
                unusable: &mut |u| errors.push(u.error.to_string()),
            },
        );
        (objects, errors)
    }

    fn names(text: &str) -> Vec<String> {
        let (objects, errors) = read(text, Limits::default());
        assert!(errors.is_empty(), "{errors:?}");
        objects.into_iter().map(|(_, _, n)| n).collect()
    }

    fn first_error(text: &str) -> String {
        read(text, Limits::default()).1.remove(0)
    }

    #[test]
    fn multi_document_yaml_and_lists() {
        let (objects, errors) = read(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: b}}\n- {apiVersion: apps/v1, kind: Deployment, metadata: {name: c}}\n",
            Limits::default(),
        );
        assert!(errors.is_empty(), "{errors:?}");
        let names: Vec<&str> = objects.iter().map(|(_, _, n)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(objects[0].0, 1);
        assert_eq!((objects[2].0, objects[2].1.as_str()), (3, "items[1]"));
    }

    #[test]
    fn json_object_array_and_list() {
        assert_eq!(
            names(r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"a"}}"#),
            ["a"]
        );
        assert_eq!(names(r#"[{"kind":"Pod"},{"kind":"Pod"}]"#).len(), 2);
        let (objects, _) = read(
            r#"{"items":[{"kind":"Pod","metadata":{"name":"x"}},{"kind":"Pod","metadata":{"name":"y"}}],"kind":"PodList"}"#,
            Limits::default(),
        );
        assert_eq!(objects[1], (1, "items[1]".to_owned(), "y".to_owned()));
    }

    #[test]
    fn unusable_documents_are_named() {
        let e = first_error("kind: Pod\n---\n- just\n- a list\n");
        assert!(e.starts_with("f.yaml: document 2:"), "{e}");
        let e = first_error("metadata: {name: x}\n");
        assert!(e.contains("document 1") && e.contains("no kind"), "{e}");
        let e = first_error("kind: Pod\n---\nkind: [unclosed\n");
        assert!(e.starts_with("f.yaml: document 2:"), "{e}");
        let e = first_error("{\"kind\": ");
        assert!(e.starts_with("f.yaml: document 1:"), "{e}");
    }

    #[test]
    fn the_rest_of_a_file_is_kept_past_a_broken_document() {
        let (mut objects, mut errors) = (Vec::new(), Vec::new());
        parse(
            "deploy/app.yaml",
            "kind: Pod\nmetadata: {name: a}\n---\nkind: [unclosed\n---\nkind: Pod\nmetadata: {name: b}\nmetadata: {name: c}\n---\nkind: Pod\nmetadata: {name: d}\n",
            false,
            Limits::default(),
            &mut Sink {
                wanted: &|_| true,
                object: &mut |d| {
                    objects.push((
                        d.document,
                        d.value["metadata"]["name"].as_str().unwrap().to_owned(),
                    ));
                    Ok(())
                },
                unusable: &mut |u| errors.push(u),
            },
        );
        assert_eq!(objects, [(1, "a".to_owned()), (4, "d".to_owned())]);
        let messages: Vec<String> = errors.iter().map(|u| u.error.to_string()).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(
            messages[0].starts_with("deploy/app.yaml: document 2:"),
            "{}",
            messages[0]
        );
        assert!(
            messages[0].contains("--> deploy/app.yaml (document 2), line"),
            "{}",
            messages[0]
        );
        assert!(!messages[0].contains("<input>"), "{}", messages[0]);
        assert!(
            messages[1].contains("remove or rename one of them"),
            "{}",
            messages[1]
        );
        assert!(
            !messages[1].contains("DuplicateKeyPolicy"),
            "{}",
            messages[1]
        );
        assert!(errors.iter().all(|u| !u.explicit));
    }

    const TINY: Limits = Limits {
        document: 120,
        file: 1 << 20,
    };

    #[test]
    fn a_document_over_the_limit_is_refused_unparsed() {
        let big = format!(
            "kind: Pod\nmetadata: {{name: big}}\ndata: '{}'\n",
            "x".repeat(200)
        );
        let (objects, errors) = read(
            &format!("kind: Pod\nmetadata: {{name: a}}\n---\n{big}"),
            TINY,
        );
        assert_eq!(objects.len(), 1);
        assert_eq!(
            errors,
            ["f.yaml: over the 120-byte limit for one document (document 2)"]
        );
        let (objects, errors) = read(
            &format!(
                "[{{\"kind\":\"Pod\"}},{{\"kind\":\"Pod\",\"x\":\"{}\"}}]",
                "y".repeat(200)
            ),
            TINY,
        );
        assert_eq!(objects.len(), 1);
        assert_eq!(
            errors,
            ["f.yaml: over the 120-byte limit for one object ([1])"]
        );
    }

    #[test]
    fn a_large_yaml_list_is_read_item_by_item() {
        let mut text = String::from("apiVersion: v1\nitems:\n");
        for i in 0..20 {
            text.push_str(&format!(
                "- apiVersion: v1\n  kind: Pod\n  metadata: {{name: p{i}}}\n"
            ));
        }
        text.push_str("kind: List\nmetadata: {}\n");
        assert!(text.len() > TINY.document);
        let (objects, errors) = read(&text, TINY);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(objects.len(), 20);
        assert_eq!(objects[19], (1, "items[19]".to_owned(), "p19".to_owned()));
    }

    #[test]
    fn unwanted_documents_are_not_parsed() {
        let mut seen = 0;
        parse(
            "f.yaml",
            "kind: Pod\n---\nkind: Secret\nmetadata: {name: s}\n---\nkind: [broken\n",
            false,
            Limits::default(),
            &mut Sink {
                wanted: &|t: &str| t.contains("Secret"),
                object: &mut |_| {
                    seen += 1;
                    Ok(())
                },
                unusable: &mut |u| panic!("{}", u.error),
            },
        );
        assert_eq!(seen, 1);
    }
}
