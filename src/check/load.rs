//! Reads manifests for `check`: files, directories, or stdin; YAML or JSON;
//! several documents per file; `List` kinds expanded into their items.

use std::{
    io::Read,
    path::{Path, PathBuf},
    sync::Arc,
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

impl LoadError {
    /// The file (or `<stdin>`) the error is about.
    pub fn source_name(&self) -> &str {
        match self {
            LoadError::Read { source_name, .. } | LoadError::Parse { source_name, .. } => {
                source_name
            }
        }
    }
}

/// One object from the input, with where it came from.
#[derive(Debug)]
pub struct Document {
    pub source_name: String,
    /// 1-based position of the YAML document in its file.
    pub document: usize,
    /// Named on the command line (or stdin), not found in a directory.
    pub explicit: bool,
    pub value: Value,
    /// Where the object's text is, for reports that point at a line: the
    /// document's text, the file line it starts on, and the path of the
    /// object within it (`items[2]` of a `List`, `[0]` of a JSON array).
    pub text: Arc<str>,
    pub first_line: usize,
    pub prefix: String,
}

/// Input that could not be used. A scan of a repository meets values
/// files, config files and broken YAML; each is reported and the rest is
/// still judged.
#[derive(Debug)]
pub struct Unusable {
    pub error: LoadError,
    /// Named on the command line (or stdin): the user asked for exactly
    /// this input, so its loss is an error, not a note.
    pub explicit: bool,
}

/// Everything read: the objects, and what could not be used.
#[derive(Debug, Default)]
pub struct Loaded {
    pub docs: Vec<Document>,
    pub unusable: Vec<Unusable>,
    /// Directories walked, as canonical paths: a symlink back up the tree
    /// would otherwise have every file under it judged again at each level.
    walked: std::collections::HashSet<PathBuf>,
}

impl Loaded {
    fn unusable(&mut self, error: LoadError, explicit: bool) {
        self.unusable.push(Unusable { error, explicit });
    }
}

const MANIFEST_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

pub fn load(paths: &[PathBuf]) -> Loaded {
    let mut loaded = Loaded::default();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => parse("<stdin>", &text, true, &mut loaded),
                Err(error) => loaded.unusable(
                    LoadError::Read {
                        source_name: "<stdin>".into(),
                        error,
                    },
                    true,
                ),
            }
        } else {
            load_path(path, true, &mut loaded);
        }
    }
    loaded
}

fn is_manifest(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        MANIFEST_EXTENSIONS
            .iter()
            .any(|m| m.eq_ignore_ascii_case(e))
    })
}

fn load_path(path: &Path, explicit: bool, loaded: &mut Loaded) {
    let source_name = path.display().to_string();
    let read_err = |error| LoadError::Read {
        source_name: source_name.clone(),
        error,
    };
    if path.is_dir() {
        if let Ok(canonical) = path.canonicalize()
            && !loaded.walked.insert(canonical)
        {
            return;
        }
        let entries: Result<Vec<PathBuf>, _> =
            std::fs::read_dir(path).and_then(|dir| dir.map(|e| e.map(|e| e.path())).collect());
        let mut entries = match entries {
            Ok(entries) => entries,
            Err(error) => return loaded.unusable(read_err(error), explicit),
        };
        // Sorted, so output and exit codes do not depend on directory order.
        entries.sort();
        for entry in entries {
            if entry.is_dir() || is_manifest(&entry) {
                load_path(&entry, false, loaded);
            }
        }
        return;
    }
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&source_name, &text, explicit, loaded),
        Err(error) => loaded.unusable(read_err(error), explicit),
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

/// Where a document is: its file, position, text and first line.
struct At<'s> {
    source_name: &'s str,
    document: usize,
    explicit: bool,
    text: Arc<str>,
    first_line: usize,
}

fn parse(source_name: &str, text: &str, explicit: bool, loaded: &mut Loaded) {
    let parse_err = |document, message: String| LoadError::Parse {
        source_name: source_name.to_owned(),
        document,
        message,
    };
    let at = |document, text: Arc<str>, first_line| At {
        source_name,
        document,
        explicit,
        text,
        first_line,
    };
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        // JSON parses more strictly and with better messages as JSON.
        let whole: Arc<str> = Arc::from(text);
        let result = match serde_json::from_str(text) {
            Ok(Value::Array(items)) => items.into_iter().enumerate().try_for_each(|(i, v)| {
                push_document(
                    &at(1, whole.clone(), 1),
                    format!("[{i}]"),
                    v,
                    &mut loaded.docs,
                )
            }),
            Ok(v) => push_document(&at(1, whole, 1), String::new(), v, &mut loaded.docs),
            Err(e) => Err(parse_err(1, e.to_string())),
        };
        if let Err(e) = result {
            loaded.unusable(e, explicit);
        }
        return;
    }
    for (i, (first_line, doc)) in crate::yaml::documents_at(text).into_iter().enumerate() {
        if doc.trim().is_empty() {
            continue;
        }
        let value = match crate::yaml::from_str(&doc) {
            Ok(value) => value,
            Err(e) => {
                loaded.unusable(
                    parse_err(i + 1, yaml_message(source_name, i + 1, &e)),
                    explicit,
                );
                continue;
            }
        };
        let here = at(i + 1, Arc::from(doc), first_line);
        if let Err(e) = push_document(&here, String::new(), value, &mut loaded.docs) {
            loaded.unusable(e, explicit);
        }
    }
}

fn push_document(
    at: &At<'_>,
    prefix: String,
    value: Value,
    docs: &mut Vec<Document>,
) -> Result<(), LoadError> {
    let parse_err = |message: String| LoadError::Parse {
        source_name: at.source_name.to_owned(),
        document: at.document,
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
                let dot = if prefix.is_empty() { "" } else { "." };
                for (i, item) in items.iter().enumerate() {
                    push_document(at, format!("{prefix}{dot}items[{i}]"), item.clone(), docs)?;
                }
                return Ok(());
            }
            if kind.is_empty() {
                return Err(parse_err(
                    "not a Kubernetes object: it has no kind (a values or config file?)".into(),
                ));
            }
            docs.push(Document {
                source_name: at.source_name.to_owned(),
                document: at.document,
                explicit: at.explicit,
                value,
                text: at.text.clone(),
                first_line: at.first_line,
                prefix,
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

    /// The documents, or the first unusable input.
    fn parse_all(text: &str) -> Result<Vec<Document>, LoadError> {
        let mut loaded = Loaded::default();
        parse("f.yaml", text, true, &mut loaded);
        match loaded.unusable.into_iter().next() {
            Some(u) => Err(u.error),
            None => Ok(loaded.docs),
        }
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

    #[test]
    fn the_rest_of_a_file_is_kept_past_a_broken_document() {
        let mut loaded = Loaded::default();
        parse(
            "deploy/app.yaml",
            "kind: Pod\nmetadata: {name: a}\n---\nkind: [unclosed\n---\nkind: Pod\nmetadata: {name: b}\nmetadata: {name: c}\n---\nkind: Pod\nmetadata: {name: d}\n",
            false,
            &mut loaded,
        );
        let names: Vec<&str> = loaded
            .docs
            .iter()
            .map(|d| d.value["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "d"]);
        assert_eq!(loaded.docs[1].document, 4);
        let errors: Vec<String> = loaded
            .unusable
            .iter()
            .map(|u| u.error.to_string())
            .collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with("deploy/app.yaml: document 2:"),
            "{}",
            errors[0]
        );
        assert!(
            errors[0].contains("--> deploy/app.yaml (document 2), line"),
            "{}",
            errors[0]
        );
        assert!(!errors[0].contains("<input>"), "{}", errors[0]);
        assert!(
            errors[1].contains("remove or rename one of them"),
            "{}",
            errors[1]
        );
        assert!(!errors[1].contains("DuplicateKeyPolicy"), "{}", errors[1]);
        assert!(loaded.unusable.iter().all(|u| !u.explicit));
    }

    #[test]
    fn manifest_extensions_ignore_case() {
        assert!(is_manifest(Path::new("a/B.YAML")) && is_manifest(Path::new("c.Json")));
        assert!(!is_manifest(Path::new("README.md")) && !is_manifest(Path::new("yaml")));
    }

    #[test]
    fn a_symlink_loop_is_walked_once() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(
            sub.join("pod.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(dir.path(), sub.join("loop")).unwrap();
        let loaded = load(&[dir.path().to_path_buf()]);
        assert_eq!(
            loaded.docs.len(),
            1,
            "{:?}",
            loaded
                .docs
                .iter()
                .map(|d| &d.source_name)
                .collect::<Vec<_>>()
        );
        assert!(loaded.unusable.is_empty(), "{:?}", loaded.unusable);
    }
}
