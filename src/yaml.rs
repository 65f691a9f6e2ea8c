//! YAML reading shared by the config file and `check`.

use serde::de::DeserializeOwned;

/// Parses one YAML document. Booleans follow YAML 1.2 Core, so `off`, `no`
/// and `on` stay strings: `rules: {token-subpath: off}` means the action.
pub(crate) fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, serde_saphyr::Error> {
    serde_saphyr::from_str_with_options(text, options())
}

/// Runs `f` on a streaming deserializer of one document, with the same
/// options as [`from_str`]: for values too large to build whole.
pub(crate) fn with_deserializer<'de, R, F>(text: &'de str, f: F) -> Result<R, serde_saphyr::Error>
where
    for<'e> F: FnOnce(serde_saphyr::Deserializer<'de, 'e>) -> Result<R, serde_saphyr::Error>,
{
    serde_saphyr::with_deserializer_from_str_with_options(text, options(), f)
}

fn options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    options
}

/// Splits a YAML stream into its documents, keeping empty ones so that
/// positions match what a person counts in the file. A `---` line starts a
/// document (anything after it on the line belongs to that document); a
/// `...` line ends one. Each comes with the 1-based line of the file its
/// text starts on, so that a line within a document is a line of the file.
/// Documents are produced one at a time: a large stream is never held twice.
pub(crate) fn documents_at(text: &str) -> Documents<'_> {
    Documents {
        lines: text.lines().enumerate(),
        pending: None,
        first: true,
        first_held: false,
    }
}

/// The documents of a YAML stream, in order (see [`documents_at`]).
pub(crate) struct Documents<'t> {
    lines: std::iter::Enumerate<std::str::Lines<'t>>,
    /// A document opened by a `---` line already consumed.
    pending: Option<(usize, String)>,
    first: bool,
    /// Whether document 1 held anything: until it does, a `---` line after
    /// `...` reopens it rather than starting another.
    first_held: bool,
}

impl Iterator for Documents<'_> {
    type Item = (usize, String);

    fn next(&mut self) -> Option<(usize, String)> {
        let first = std::mem::replace(&mut self.first, false);
        let (mut start, mut doc) = match self.pending.take() {
            Some(open) => open,
            None if first => (1, String::new()),
            None => return None,
        };
        let mut started = !first;
        for (i, line) in self.lines.by_ref() {
            let marker = |m: &str| {
                line == m
                    || line
                        .strip_prefix(m)
                        .is_some_and(|r| r.starts_with([' ', '\t']))
            };
            if marker("---") {
                let mut opened = line[3..].trim_start().to_owned();
                opened.push('\n');
                let held = if first {
                    !doc.trim().is_empty()
                } else {
                    self.first_held
                };
                if started || held {
                    if first {
                        self.first_held = held;
                    }
                    self.pending = Some((i + 1, opened));
                    return Some((start, doc));
                }
                // A leading marker opens document 1 rather than a second.
                start = i + 1;
                doc = opened;
                started = true;
            } else if marker("...") {
                started = false;
            } else {
                doc.push_str(line);
                doc.push('\n');
            }
        }
        Some((start, doc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_markers_only_at_line_start() {
        let at = documents_at("a: 1\n---\nb: |\n  --- not a marker\n--- {c: 3}\n");
        assert_eq!(at.map(|(l, _)| l).collect::<Vec<_>>(), [1, 2, 5]);
        let docs: Vec<String> = documents_at("a: 1\n---\nb: |\n  --- not a marker\n--- {c: 3}\n")
            .map(|(_, d)| d)
            .collect();
        assert_eq!(docs.len(), 3);
        assert!(docs[1].contains("--- not a marker"));
        assert_eq!(docs[2].trim(), "{c: 3}");
        assert_eq!(
            documents_at("---\na: 1\n").count(),
            1,
            "a leading marker opens document 1"
        );
        assert_eq!(documents_at("---\n---\na: 1\n").count(), 2);
        assert_eq!(
            documents_at("").count(),
            1,
            "an empty stream is one empty document"
        );
        let ended: Vec<_> = documents_at("a: 1\n...\n---\nb: 2\n").collect();
        assert_eq!(documents_at("a\n---\n...\n---\nb\n").count(), 3);
        assert_eq!(
            ended,
            [(1, "a: 1\n".to_owned()), (3, "\nb: 2\n".to_owned())]
        );
    }

    #[test]
    fn yaml_1_2_booleans() {
        let v: serde_json::Value = from_str("a: off\nb: false\nc: yes\n").unwrap();
        assert_eq!(v["a"], "off");
        assert_eq!(v["b"], false);
        assert_eq!(v["c"], "yes");
    }
}
