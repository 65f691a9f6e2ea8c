//! YAML reading shared by the config file and `check`.

use serde::de::DeserializeOwned;

/// Parses one YAML document. Booleans follow YAML 1.2 Core, so `off`, `no`
/// and `on` stay strings: `rules: {token-subpath: off}` means the action.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, serde_saphyr::Error> {
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    serde_saphyr::from_str_with_options(text, options)
}

/// Splits a YAML stream into its documents, keeping empty ones so that
/// positions match what a person counts in the file. A `---` line starts a
/// document (anything after it on the line belongs to that document); a
/// `...` line ends one. Each comes with the 1-based line of the file its
/// text starts on, so that a line within a document is a line of the file.
pub fn documents_at(text: &str) -> Vec<(usize, String)> {
    let mut docs = vec![(1, String::new())];
    let mut started = false;
    for (i, line) in text.lines().enumerate() {
        let marker = |m: &str| {
            line == m
                || line
                    .strip_prefix(m)
                    .is_some_and(|r| r.starts_with([' ', '\t']))
        };
        if marker("---") {
            if started || !docs[0].1.trim().is_empty() {
                docs.push((i + 1, String::new()));
            } else {
                docs[0].0 = i + 1;
            }
            started = true;
            if let Some((_, last)) = docs.last_mut() {
                last.push_str(line[3..].trim_start());
                last.push('\n');
            }
        } else if marker("...") {
            started = false;
        } else if let Some((_, last)) = docs.last_mut() {
            last.push_str(line);
            last.push('\n');
        }
    }
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_markers_only_at_line_start() {
        let at = documents_at("a: 1\n---\nb: |\n  --- not a marker\n--- {c: 3}\n");
        assert_eq!(at.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [1, 2, 5]);
        let docs: Vec<String> = at.into_iter().map(|(_, d)| d).collect();
        assert_eq!(docs.len(), 3);
        assert!(docs[1].contains("--- not a marker"));
        assert_eq!(docs[2].trim(), "{c: 3}");
        assert_eq!(
            documents_at("---\na: 1\n").len(),
            1,
            "a leading marker opens document 1"
        );
        assert_eq!(documents_at("---\n---\na: 1\n").len(), 2);
    }

    #[test]
    fn yaml_1_2_booleans() {
        let v: serde_json::Value = from_str("a: off\nb: false\nc: yes\n").unwrap();
        assert_eq!(v["a"], "off");
        assert_eq!(v["b"], false);
        assert_eq!(v["c"], "yes");
    }
}
