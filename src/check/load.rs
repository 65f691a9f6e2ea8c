//! Reads manifests for `check`: files, directories, or stdin; YAML or JSON;
//! several documents per file; `List` kinds expanded into their items.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{source_name}: cannot read: {error}")]
    Read {
        source_name: String,
        error: std::io::Error,
    },
    #[error("{source_name}: document {document}: {message}")]
    Parse {
        source_name: String,
        document: usize,
        message: String,
    },
}

/// One object from the input, with where it came from.
#[derive(Debug)]
pub struct Document {
    pub source_name: String,
    /// 1-based position of the YAML document in its file.
    pub document: usize,
    pub value: Value,
}

const MANIFEST_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

pub fn load(paths: &[PathBuf]) -> Result<Vec<Document>, LoadError> {
    let mut docs = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|error| LoadError::Read {
                    source_name: "<stdin>".into(),
                    error,
                })?;
            parse("<stdin>", &text, &mut docs)?;
        } else {
            load_path(path, &mut docs)?;
        }
    }
    Ok(docs)
}

fn load_path(path: &Path, docs: &mut Vec<Document>) -> Result<(), LoadError> {
    let source_name = path.display().to_string();
    let read_err = |error| LoadError::Read {
        source_name: source_name.clone(),
        error,
    };
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(read_err)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(read_err)?;
        // Sorted, so output and exit codes do not depend on directory order.
        entries.sort();
        for entry in entries {
            let is_manifest = entry
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| MANIFEST_EXTENSIONS.contains(&e));
            if entry.is_dir() || is_manifest {
                load_path(&entry, docs)?;
            }
        }
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    parse(&source_name, &text, docs)
}

fn parse(source_name: &str, text: &str, docs: &mut Vec<Document>) -> Result<(), LoadError> {
    let parse_err = |document, message: String| LoadError::Parse {
        source_name: source_name.to_owned(),
        document,
        message,
    };
    let trimmed = text.trim_start();
    let values: Vec<Value> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        // JSON parses more strictly and with better messages as JSON.
        match serde_json::from_str(text).map_err(|e| parse_err(1, e.to_string()))? {
            Value::Array(items) => items,
            v => vec![v],
        }
    } else {
        let mut values = Vec::new();
        for (i, doc) in crate::yaml::documents(text).iter().enumerate() {
            let value = if doc.trim().is_empty() {
                Value::Null
            } else {
                crate::yaml::from_str(doc).map_err(|e| parse_err(i + 1, e.to_string()))?
            };
            values.push(value);
        }
        values
    };
    for (i, value) in values.into_iter().enumerate() {
        push_document(source_name, i + 1, value, docs)?;
    }
    Ok(())
}

fn push_document(
    source_name: &str,
    document: usize,
    value: Value,
    docs: &mut Vec<Document>,
) -> Result<(), LoadError> {
    let parse_err = |message: String| LoadError::Parse {
        source_name: source_name.to_owned(),
        document,
        message,
    };
    match value {
        Value::Null => Ok(()),
        Value::Object(ref map) => {
            let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
            if kind.ends_with("List") && map.contains_key("items") {
                let Some(Value::Array(items)) = map.get("items") else {
                    return Err(parse_err(format!("{kind}.items is not a list")));
                };
                for item in items {
                    push_document(source_name, document, item.clone(), docs)?;
                }
                return Ok(());
            }
            if kind.is_empty() {
                return Err(parse_err("object has no kind".into()));
            }
            docs.push(Document {
                source_name: source_name.to_owned(),
                document,
                value,
            });
            Ok(())
        }
        other => Err(parse_err(format!(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(text: &str) -> Result<Vec<Document>, LoadError> {
        let mut docs = Vec::new();
        parse("f.yaml", text, &mut docs).map(|()| docs)
    }

    #[test]
    fn multi_document_yaml_and_lists() {
        let docs = parse_all(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: b}}\n- {apiVersion: apps/v1, kind: Deployment, metadata: {name: c}}\n",
        )
        .unwrap();
        let names: Vec<&str> = docs
            .iter()
            .map(|d| d.value["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(docs[0].document, 1);
        assert_eq!(docs[2].document, 3);
    }

    #[test]
    fn json_object_and_array() {
        assert_eq!(
            parse_all(r#"{"kind":"Pod","apiVersion":"v1"}"#)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            parse_all(r#"[{"kind":"Pod"},{"kind":"Pod"}]"#)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn unusable_documents_are_named() {
        let e = parse_all("kind: Pod\n---\n- just\n- a list\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f.yaml: document 2:"), "{e}");
        let e = parse_all("metadata: {name: x}\n").unwrap_err().to_string();
        assert!(e.contains("document 1") && e.contains("no kind"), "{e}");
        let e = parse_all("kind: Pod\n---\nkind: [unclosed\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f.yaml: document 2:"), "{e}");
        let e = parse_all("{\"kind\": ").unwrap_err().to_string();
        assert!(e.starts_with("f.yaml: document 1:"), "{e}");
    }
}
