//! The configuration file's fields as serde sees them, for the tests that
//! hold the Helm chart's values schema to the file format.
//!
//! A hand-kept list would drift exactly as the schema does. Instead
//! [`file_fields`] drives the derived `Deserialize` of [`ConfigFile`] with a
//! deserializer that records the field names serde_derive passes to
//! `deserialize_struct`, and feeds every field back so that nested structs
//! are walked too. Renames (`static`) and `rename_all` are therefore what the
//! binary really reads.

use core::cell::RefCell;

use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, Visitor,
    value::{Error, MapDeserializer, SeqDeserializer},
};

use super::file::ConfigFile;

/// What a field holds, as far as the schema must follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A struct: its fields are listed after it, one level deeper.
    Struct,
    /// A map with free keys (`rules`).
    Map,
    /// A list.
    Seq,
    /// A string, number or boolean.
    Scalar,
}

/// Every field of the configuration file as `(dotted path, shape)`, parents
/// before their fields, e.g. `("generation.static.keyId", Shape::Scalar)`.
/// An `Option` is seen through. A field whose type this walk does not know
/// fails with its path, rather than being left out.
pub fn file_fields() -> Result<Vec<(String, Shape)>, String> {
    let out = RefCell::new(Vec::new());
    let walk = Recorder {
        path: String::new(),
        out: &out,
    };
    match <ConfigFile as serde::Deserialize>::deserialize(walk) {
        Ok(_) => Ok(out.into_inner()),
        Err(e) => Err(e.to_string()),
    }
}

struct Recorder<'a> {
    path: String,
    out: &'a RefCell<Vec<(String, Shape)>>,
}

impl Recorder<'_> {
    fn record(&self, shape: Shape) {
        if !self.path.is_empty() {
            self.out.borrow_mut().push((self.path.clone(), shape));
        }
    }
}

impl<'de> Deserializer<'de> for Recorder<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Error> {
        Err(de::Error::custom(format!(
            "config field `{}` has a type the schema walk does not know; teach src/config/fields.rs",
            self.path
        )))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.record(Shape::Struct);
        visitor.visit_map(Fields {
            parent: self.path,
            fields: fields.iter(),
            current: "",
            out: self.out,
        })
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.record(Shape::Map);
        visitor.visit_map(MapDeserializer::new(core::iter::empty::<((), ())>()))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.record(Shape::Seq);
        visitor.visit_seq(SeqDeserializer::new(core::iter::empty::<()>()))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.record(Shape::Scalar);
        visitor.visit_str("")
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.record(Shape::Scalar);
        visitor.visit_u64(0)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.record(Shape::Scalar);
        visitor.visit_bool(false)
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u128 f32 f64 char bytes byte_buf unit
        unit_struct newtype_struct tuple tuple_struct enum identifier ignored_any
    }
}

/// A struct's fields, each given once as a key and walked as its value.
struct Fields<'a> {
    parent: String,
    fields: core::slice::Iter<'static, &'static str>,
    current: &'static str,
    out: &'a RefCell<Vec<(String, Shape)>>,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(field) = self.fields.next() else {
            return Ok(None);
        };
        self.current = field;
        seed.deserialize(IntoDeserializer::<Error>::into_deserializer(*field))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let path = if self.parent.is_empty() {
            self.current.to_owned()
        } else {
            format!("{}.{}", self.parent, self.current)
        };
        seed.deserialize(Recorder {
            path,
            out: self.out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_nested_renamed_fields() {
        let fields = file_fields().expect("every field type is known");
        let has = |path: &str, shape: Shape| fields.iter().any(|f| *f == (path.to_owned(), shape));
        assert!(has("generation", Shape::Struct), "{fields:?}");
        assert!(has("generation.static", Shape::Struct), "{fields:?}");
        assert!(has("generation.static.keyId", Shape::Scalar), "{fields:?}");
        assert!(has("rotation.nextIssuer", Shape::Scalar), "{fields:?}");
        assert!(has("rotation.retiredIssuers", Shape::Seq), "{fields:?}");
        assert!(has("rules", Shape::Map), "{fields:?}");
    }
}
