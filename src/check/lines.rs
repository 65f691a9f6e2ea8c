//! Where a field is in a YAML document: the line of the node a finding's
//! path (`spec.template.spec.containers[0].env[1]`) names, for reports that
//! point at a line (SARIF). The JSON values the rules read carry no
//! positions, so the document is read a second time, into a tree of nodes
//! that each know their line.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A YAML node with the line of each child.
#[derive(Debug, Default)]
pub(super) struct Node {
    entries: Vec<(String, Spanned<Node>)>,
    items: Vec<Spanned<Node>>,
}

/// The lines of one document's nodes.
#[derive(Debug)]
pub(super) struct Lines {
    root: Spanned<Node>,
}

impl Lines {
    /// `None` when the document is not YAML this reader takes (JSON input
    /// is read without positions).
    pub(super) fn read(document: &str) -> Option<Lines> {
        serde_saphyr::from_str::<Spanned<Node>>(document)
            .ok()
            .map(|root| Lines { root })
    }

    /// The 1-based line, within the document, of the deepest node of
    /// `path` that exists.
    pub(super) fn line_of(&self, path: &str) -> Option<u64> {
        let mut at = &self.root;
        let mut line = None;
        for step in steps(path) {
            let next = match step {
                Step::Key(key) => at
                    .value
                    .entries
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v),
                Step::Index(i) => at.value.items.get(i),
            };
            let Some(next) = next else { break };
            at = next;
            if at.referenced.line() > 0 {
                line = Some(at.referenced.line());
            }
        }
        line
    }
}

enum Step<'p> {
    Key(&'p str),
    Index(usize),
}

/// `a.b[2].c` as keys and indices.
fn steps(path: &str) -> impl Iterator<Item = Step<'_>> {
    path.split('.')
        .filter(|s| !s.is_empty())
        .flat_map(|segment| {
            let (key, rest) = segment.split_once('[').unwrap_or((segment, ""));
            let indices = rest
                .split('[')
                .filter_map(|i| i.trim_end_matches(']').parse().ok())
                .map(Step::Index);
            (!key.is_empty())
                .then_some(Step::Key(key))
                .into_iter()
                .chain(indices)
        })
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

macro_rules! leaf {
    ($($visit:ident: $ty:ty),*) => {$(
        fn $visit<E: de::Error>(self, _: $ty) -> Result<Node, E> {
            Ok(Node::default())
        }
    )*};
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    leaf!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::default())
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::default())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut node = Node::default();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            node.items.push(item);
        }
        Ok(node)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut node = Node::default();
        while let Some(key) = map.next_key::<Key>()? {
            node.entries
                .push((key.0, map.next_value::<Spanned<Node>>()?));
        }
        Ok(node)
    }
}

/// A mapping key as text, whatever its YAML type.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
                Ok(Key(String::new()))
            }
        }
        d.deserialize_any(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_fields_lists_and_flow_style() {
        let doc = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec:\n  template:\n    spec:\n      containers:\n      - name: one\n        image: x\n      - name: two\n        env:\n        - {name: A, value: b}\n        - name: TOKEN\n          valueFrom: {secretKeyRef: {name: t, key: token}}\n";
        let lines = Lines::read(doc).unwrap();
        assert_eq!(
            lines.line_of("spec.template.spec.containers[1].env[1]"),
            Some(13)
        );
        assert_eq!(
            lines.line_of("spec.template.spec.containers[1].env[0]"),
            Some(12)
        );
        assert_eq!(lines.line_of("spec.template.spec.containers[0]"), Some(8));
        assert_eq!(lines.line_of("metadata.name"), Some(3));
        // A path that goes past what exists stops at its deepest node.
        assert_eq!(lines.line_of("spec.template.spec.volumes[0]"), Some(7));
        assert_eq!(lines.line_of("nothing"), None);
    }
}
