//! issuer-guard's own labels and annotations, and how they are read from an
//! object without copying anyone else's.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::Text;

/// The prefix of every label and annotation issuer-guard reads or writes.
pub const PREFIX: &str = "issuer-guard.io/";

/// The issuer generation a Pod was created under.
pub const GENERATION_LABEL: &str = "issuer-guard.io/generation";
/// Set on objects with findings whose action labels; lets operators list them.
pub const AT_RISK_LABEL: &str = "issuer-guard.io/at-risk";
/// The issuer URL of the generation a Pod was created under.
pub const ISSUER_ANNOTATION: &str = "issuer-guard.io/issuer";
/// The signing key id of the generation a Pod was created under.
pub const KEY_ID_ANNOTATION: &str = "issuer-guard.io/key-id";
/// The rule ids behind `issuer-guard.io/at-risk`, comma-separated.
pub const RISKS_ANNOTATION: &str = "issuer-guard.io/risks";

/// A labels or annotations map, reduced to what issuer-guard needs: whether
/// the map exists (a JSON Patch must create it otherwise) and the entries
/// under [`PREFIX`]. Other entries are read and dropped, never copied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Marks<'a> {
    pub present: bool,
    entries: Vec<(Text<'a>, Text<'a>)>,
}

impl<'a> Marks<'a> {
    pub const EMPTY: Marks<'static> = Marks {
        present: false,
        entries: Vec::new(),
    };

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| &**v)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

struct MarksVisitor;

impl<'de> Visitor<'de> for MarksVisitor {
    type Value = Marks<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of strings")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Marks::default())
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Marks::default())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut marks = Marks {
            present: true,
            entries: Vec::new(),
        };
        while let Some(key) = map.next_key::<Text<'de>>()? {
            // Other tools' values are skipped unread: most of a pod's
            // metadata is theirs, and reading it would cost every review.
            if !key.starts_with(PREFIX) {
                map.next_value::<IgnoredAny>()?;
            } else if let Some(value) = map.next_value::<Option<Text<'de>>>()? {
                marks.entries.push((key, value));
            }
        }
        Ok(marks)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Marks<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_option(MarksVisitor)
    }
}
