//! A JSON reader for the admission hot path, driving the same serde derives
//! as serde_json but skipping what the views ignore several times faster:
//! most of a large Pod (probes, resources, ports, other tools' annotations,
//! managedFields) is never read, and serde_json's own skipping costs about
//! half of a review.
//!
//! It is a fast path, not a second authority on JSON. It accepts only input
//! that serde_json accepts, reads it to the same values, and declines
//! everything else, including valid JSON it does not bother with (floats
//! where a number is read, lone surrogates, nesting deeper than
//! [`MAX_DEPTH`] or [`MAX_SKIP_DEPTH`]). The caller then reads the input
//! again with serde_json, whose answer and error messages are the ones that
//! count; a decline carries no message for that reason.

use serde::de::{self, Deserialize, DeserializeSeed, Visitor};

/// Why the fast reader declined an input. Never shown to anyone: the caller
/// falls back to serde_json, which says what is wrong, if anything is.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the fast JSON reader declined this input; read it with serde_json")]
    Declined,
}

impl de::Error for ReadError {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        ReadError::Declined
    }
}

type Result<T> = std::result::Result<T, ReadError>;

/// serde_json reads bytes from a string's raw text, escapes and all; the
/// views read no bytes, so these are declined rather than imitated.
macro_rules! decline {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
            Err(ReadError::Declined)
        }
    )*};
}

/// Integers a view reads: a number, whatever its width, or a decline.
macro_rules! numbers {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            self.number(visitor)
        }
    )*};
}

/// Nesting of arrays and objects read into values, below serde_json's
/// limit (128) so that nothing it refuses is accepted here.
const MAX_DEPTH: u32 = 100;
/// Nesting inside one skipped value: one bit per level in a `u64`.
const MAX_SKIP_DEPTH: u32 = 64;

/// Reads `text` as one JSON value into `T`, borrowing its strings where they
/// have no escapes. `Err` means only that serde_json must read it instead.
pub fn from_json<'de, T: Deserialize<'de>>(text: &'de str) -> Result<T> {
    let mut reader = Reader {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        depth: 0,
    };
    let value = T::deserialize(&mut reader)?;
    reader.skip_ws();
    if reader.pos == reader.bytes.len() {
        Ok(value)
    } else {
        Err(ReadError::Declined)
    }
}

struct Reader<'de> {
    text: &'de str,
    bytes: &'de [u8],
    pos: usize,
    depth: u32,
}

const ONES: u64 = u64::MAX / 255;
const HIGH: u64 = ONES << 7;

/// Bytes that end the plain run of a string: `"`, `\` and the control
/// characters JSON forbids inside strings.
#[inline]
fn special(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

/// Index of the first special byte at or after `i`, or `bytes.len()`.
/// Eight bytes at a time: a byte is flagged exactly when it is special, and
/// the lowest flag is the first special byte (borrows only run upwards
/// from a flagged byte).
#[inline(always)]
fn find_special(bytes: &[u8], mut i: usize) -> usize {
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let ctrl = x.wrapping_sub(ONES * 0x20) & !x;
        let q = x ^ (ONES * u64::from(b'"'));
        let quote = q.wrapping_sub(ONES) & !q;
        let s = x ^ (ONES * u64::from(b'\\'));
        let slash = s.wrapping_sub(ONES) & !s;
        let found = (ctrl | quote | slash) & HIGH;
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if special(b) {
            return i;
        }
        i += 1;
    }
    i
}

fn hex(b: u8) -> Option<u32> {
    match b {
        b'0'..=b'9' => Some(u32::from(b - b'0')),
        b'a'..=b'f' => Some(u32::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u32::from(b - b'A' + 10)),
        _ => None,
    }
}

/// Whitespace from `i` on.
#[inline(always)]
fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while let Some(&b) = bytes.get(i) {
        if b > b' ' || !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            break;
        }
        i += 1;
    }
    i
}

/// The end of the string whose opening quote is at `i`.
#[inline(always)]
fn string_end(bytes: &[u8], i: usize) -> Option<usize> {
    let end = find_special(bytes, i + 1);
    if bytes.get(end) == Some(&b'"') {
        Some(end + 1)
    } else {
        escaped_string_end(bytes, end)
    }
}

/// The end of a string from `i`, its first special byte. Any `\u` with
/// four hex digits passes, as it does in serde_json's skipping.
#[cold]
#[inline(never)]
fn escaped_string_end(bytes: &[u8], mut i: usize) -> Option<usize> {
    loop {
        match bytes.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => match bytes.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' => {
                    let digits = bytes.get(i + 2..i + 6)?;
                    if !digits.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    i += 6;
                }
                _ => return None,
            },
            _ => return None,
        }
        i = find_special(bytes, i);
    }
}

fn digits_end(bytes: &[u8], mut i: usize) -> usize {
    while matches!(bytes.get(i), Some(b'0'..=b'9')) {
        i += 1;
    }
    i
}

/// The end of the number at `i`, in JSON's grammar: what serde_json checks
/// of a number it skips.
fn number_end(bytes: &[u8], mut i: usize) -> Option<usize> {
    if bytes.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match bytes.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits_end(bytes, i + 1),
        _ => return None,
    };
    if bytes.get(i) == Some(&b'.') {
        let end = digits_end(bytes, i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let end = digits_end(bytes, i);
        if end == i {
            return None;
        }
        i = end;
    }
    Some(i)
}

/// After the key whose quote is expected at `i`, and its colon.
#[inline(always)]
fn key_end(bytes: &[u8], i: usize) -> Option<usize> {
    if bytes.get(i) != Some(&b'"') {
        return None;
    }
    let i = skip_ws(bytes, string_end(bytes, i)?);
    (bytes.get(i) == Some(&b':')).then_some(i + 1)
}

/// The end of the value at `i` (after whitespace), checking its grammar as
/// serde_json does but building nothing. Iterative, so that nesting cannot
/// exhaust the stack: one bit per open container, set for objects. The
/// position lives in a local rather than the reader so that it stays in a
/// register through the loop.
fn skip_value(bytes: &[u8], mut i: usize) -> Option<usize> {
    let mut objects: u64 = 0;
    let mut depth: u32 = 0;
    'value: loop {
        i = skip_ws(bytes, i);
        match *bytes.get(i)? {
            b'"' => i = string_end(bytes, i)?,
            open @ (b'{' | b'[') => {
                if depth == MAX_SKIP_DEPTH {
                    return None;
                }
                let object = open == b'{';
                i = skip_ws(bytes, i + 1);
                if bytes.get(i) == Some(if object { &b'}' } else { &b']' }) {
                    i += 1;
                } else {
                    objects = (objects << 1) | u64::from(object);
                    depth += 1;
                    if object {
                        i = key_end(bytes, i)?;
                    }
                    continue 'value;
                }
            }
            b't' => i = literal_end(bytes, i, b"true")?,
            b'f' => i = literal_end(bytes, i, b"false")?,
            b'n' => i = literal_end(bytes, i, b"null")?,
            b'-' | b'0'..=b'9' => i = number_end(bytes, i)?,
            _ => return None,
        }
        // A value has ended: close containers until one goes on.
        loop {
            if depth == 0 {
                return Some(i);
            }
            i = skip_ws(bytes, i);
            let object = objects & 1 == 1;
            match *bytes.get(i)? {
                b',' => {
                    i += 1;
                    if object {
                        i = key_end(bytes, skip_ws(bytes, i))?;
                    }
                    continue 'value;
                }
                b'}' if object => {}
                b']' if !object => {}
                _ => return None,
            }
            i += 1;
            objects >>= 1;
            depth -= 1;
        }
    }
}

fn literal_end(bytes: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    (bytes.get(i..i + word.len())? == word).then_some(i + word.len())
}

impl<'de> Reader<'de> {
    /// The next byte after whitespace, not consumed. Requests are mostly
    /// compact JSON, so the byte at hand is checked before any loop.
    #[inline(always)]
    fn peek(&mut self) -> Result<u8> {
        match self.bytes.get(self.pos) {
            Some(&b) if b > b' ' => Ok(b),
            _ => self.peek_after_ws(),
        }
    }

    #[inline(never)]
    fn peek_after_ws(&mut self) -> Result<u8> {
        self.skip_ws();
        self.bytes.get(self.pos).copied().ok_or(ReadError::Declined)
    }

    fn skip_ws(&mut self) {
        while let Some(&b) = self.bytes.get(self.pos) {
            if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                break;
            }
            self.pos += 1;
        }
    }

    #[inline]
    fn expect(&mut self, b: u8) -> Result<()> {
        if self.peek()? == b {
            self.pos += 1;
            Ok(())
        } else {
            Err(ReadError::Declined)
        }
    }

    fn ident(&mut self, word: &[u8]) -> Result<()> {
        if self.bytes.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(ReadError::Declined)
        }
    }

    /// Four hex digits after `\u`.
    fn hex4(&mut self) -> Result<u32> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .ok_or(ReadError::Declined)?;
        let mut n = 0;
        for &d in digits {
            n = n * 16 + hex(d).ok_or(ReadError::Declined)?;
        }
        self.pos += 4;
        Ok(n)
    }

    /// The rest of a string with escapes, from `start` (after the opening
    /// quote) with the first backslash at `at`.
    #[cold]
    #[inline(never)]
    fn unescape(&mut self, start: usize, mut at: usize) -> Result<String> {
        let mut out = String::with_capacity(at - start + 16);
        let mut run = start;
        loop {
            out.push_str(self.text.get(run..at).ok_or(ReadError::Declined)?);
            match self.bytes.get(at) {
                Some(b'"') => {
                    self.pos = at + 1;
                    return Ok(out);
                }
                Some(b'\\') => {}
                _ => return Err(ReadError::Declined),
            }
            let escape = self.bytes.get(at + 1).copied().ok_or(ReadError::Declined)?;
            self.pos = at + 2;
            let c = match escape {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => self.unicode_escape()?,
                _ => return Err(ReadError::Declined),
            };
            out.push(c);
            run = self.pos;
            at = find_special(self.bytes, run);
        }
    }

    /// The character of a `\u` escape whose digits start at `pos`; a
    /// surrogate pair takes both escapes. serde_json refuses lone
    /// surrogates in strings it reads, so they are declined here.
    fn unicode_escape(&mut self) -> Result<char> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                    return Err(ReadError::Declined);
                }
                self.pos += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(ReadError::Declined);
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(ReadError::Declined),
            code => code,
        };
        char::from_u32(code).ok_or(ReadError::Declined)
    }

    /// An integer read as a value. Fractions, exponents, `-0` and anything
    /// beyond 64 bits are declined: serde_json reads those as floats.
    fn integer<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        let negative = self.bytes.get(self.pos) == Some(&b'-');
        if negative {
            self.pos += 1;
        }
        let start = self.pos;
        let mut n: u64 = 0;
        while let Some(&d @ b'0'..=b'9') = self.bytes.get(self.pos) {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(d - b'0')))
                .ok_or(ReadError::Declined)?;
            self.pos += 1;
        }
        let len = self.pos - start;
        let leading_zero = len > 1 && self.bytes.get(start) == Some(&b'0');
        if len == 0 || leading_zero || matches!(self.bytes.get(self.pos), Some(b'.' | b'e' | b'E'))
        {
            return Err(ReadError::Declined);
        }
        if !negative {
            return visitor.visit_u64(n);
        }
        match i64::try_from(n) {
            Ok(n) if n > 0 => visitor.visit_i64(-n),
            _ => Err(ReadError::Declined),
        }
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ReadError::Declined);
        }
        self.pos += 1;
        Ok(())
    }

    fn read_seq<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        self.enter()?;
        let value = visitor.visit_seq(Seq {
            reader: self,
            first: true,
        })?;
        self.depth -= 1;
        self.expect(b']')?;
        Ok(value)
    }

    fn read_map<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        self.enter()?;
        let value = visitor.visit_map(Map {
            reader: self,
            first: true,
        })?;
        self.depth -= 1;
        self.expect(b'}')?;
        Ok(value)
    }

    /// The string at `pos`, borrowed from the input when it has no escapes
    /// (the common case, kept apart from unescaping so that it stays small).
    #[inline]
    fn read_str<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        if self.peek()? != b'"' {
            return Err(ReadError::Declined);
        }
        let start = self.pos + 1;
        let end = find_special(self.bytes, start);
        if self.bytes.get(end) == Some(&b'"') {
            self.pos = end + 1;
            // Both ends sit next to an ASCII quote, so on char boundaries.
            let s = self.text.get(start..end).ok_or(ReadError::Declined)?;
            return visitor.visit_borrowed_str(s);
        }
        visitor.visit_string(self.unescape(start, end)?)
    }
}

struct Seq<'r, 'de> {
    reader: &'r mut Reader<'de>,
    first: bool,
}

impl<'de> de::SeqAccess<'de> for Seq<'_, 'de> {
    type Error = ReadError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        match self.reader.peek()? {
            b']' => return Ok(None),
            b',' if !self.first => self.reader.pos += 1,
            _ if self.first => {}
            _ => return Err(ReadError::Declined),
        }
        self.first = false;
        // After a comma a value must follow: `]` there starts none, so a
        // trailing comma is refused by the element's own read.
        seed.deserialize(&mut *self.reader).map(Some)
    }
}

struct Map<'r, 'de> {
    reader: &'r mut Reader<'de>,
    first: bool,
}

impl<'de> de::MapAccess<'de> for Map<'_, 'de> {
    type Error = ReadError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        match self.reader.peek()? {
            b'}' => return Ok(None),
            b',' if !self.first => {
                self.reader.pos += 1;
                if self.reader.peek()? != b'"' {
                    return Err(ReadError::Declined);
                }
            }
            b'"' if self.first => {}
            _ => return Err(ReadError::Declined),
        }
        self.first = false;
        seed.deserialize(Key(&mut *self.reader)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        self.reader.expect(b':')?;
        seed.deserialize(&mut *self.reader)
    }
}

/// An object's key: only read as a string (serde_json also reads numbers
/// and booleans out of keys for such map types, which the views have none
/// of, so those are declined).
struct Key<'r, 'de>(&'r mut Reader<'de>);

impl<'de> de::Deserializer<'de> for Key<'_, 'de> {
    type Error = ReadError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.0.read_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_some(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if self.0.peek()? != b'"' {
            return Err(ReadError::Declined);
        }
        self.0.pos = string_end(self.0.bytes, self.0.pos).ok_or(ReadError::Declined)?;
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.0.read_str(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.0.read_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.0.read_str(visitor)
    }

    decline! {deserialize_bytes deserialize_byte_buf}

    // A visitor of any of these given a string either refuses it, which
    // declines, or reads it as serde_json would.
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char unit unit_struct
        seq tuple tuple_struct map struct enum
    }
}

impl<'de> de::Deserializer<'de> for &mut Reader<'de> {
    type Error = ReadError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            b'n' => {
                self.ident(b"null")?;
                visitor.visit_unit()
            }
            b't' => {
                self.ident(b"true")?;
                visitor.visit_bool(true)
            }
            b'f' => {
                self.ident(b"false")?;
                visitor.visit_bool(false)
            }
            b'-' | b'0'..=b'9' => self.integer(visitor),
            b'"' => self.read_str(visitor),
            b'[' => self.read_seq(visitor),
            b'{' => self.read_map(visitor),
            _ => Err(ReadError::Declined),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            b't' | b'f' => self.deserialize_any(visitor),
            _ => Err(ReadError::Declined),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if self.peek()? == b'n' {
            self.ident(b"null")?;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if self.peek()? != b'n' {
            return Err(ReadError::Declined);
        }
        self.ident(b"null")?;
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.read_str(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.read_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.read_str(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            b'[' => self.read_seq(visitor),
            _ => Err(ReadError::Declined),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            b'{' => self.read_map(visitor),
            _ => Err(ReadError::Declined),
        }
    }

    /// Objects only: serde_json also reads a struct from an array, by
    /// position, which leaves that rarity to it.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_map(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.pos = skip_value(self.bytes, self.pos).ok_or(ReadError::Declined)?;
        visitor.visit_unit()
    }

    numbers! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value> {
        Err(ReadError::Declined)
    }

    decline! {deserialize_bytes deserialize_byte_buf}

    // Integers as `deserialize_any` reads them, which is what serde_json
    // gives these visitors too; floats are declined there.
    serde::forward_to_deserialize_any! {i128 u128 f32 f64}

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.read_str(visitor)
    }
}

impl<'de> Reader<'de> {
    fn number<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.integer(visitor),
            _ => Err(ReadError::Declined),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{admission::review::ReviewIn, object::ObjectView};

    type Review<'a> = ReviewIn<'a, ObjectView<'a>>;

    const FIXTURES: [&str; 4] = [
        include_str!("../../tests/fixtures/reviews/pod-small.json"),
        include_str!("../../tests/fixtures/reviews/pod-large.json"),
        include_str!("../../tests/fixtures/reviews/deployment-denied.json"),
        include_str!("../../tests/fixtures/reviews/deployment-update.json"),
    ];

    /// The one property that makes the fast path safe: whatever it reads,
    /// serde_json reads too, to the same value.
    fn agrees(text: &str) -> bool {
        match from_json::<Review>(text) {
            Ok(fast) => {
                let slow: Review = serde_json::from_str(text).unwrap_or_else(|e| {
                    panic!("fast reader accepted what serde_json refuses ({e}): {text}")
                });
                assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{text}");
                true
            }
            Err(ReadError::Declined) => false,
        }
    }

    fn pod(spec: &str) -> String {
        format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u","object":{{"kind":"Pod","metadata":{{"name":"p"}},"spec":{spec}}}}}}}"#
        )
    }

    #[test]
    fn fixtures_read_as_serde_json_reads_them() {
        for text in FIXTURES {
            assert!(agrees(text), "declined a fixture");
        }
    }

    #[test]
    fn escapes_in_read_strings() {
        for name in [
            r#"a\"b"#,
            r#"back\\slash"#,
            r#"\\"#,
            r#"\/\b\f\n\r\t"#,
            r#"caf\u00e9 \u0041"#,
            r#"\ud83d\ude00 pair"#,
            r#"ends with \\\\"#,
            "unicode ünïcødé",
        ] {
            let text = pod(&format!(
                r#"{{"containers":[{{"name":"{name}","args":["{name}"]}}]}}"#
            ));
            assert!(agrees(&text), "{text}");
        }
        let text = pod(r#"{"containers":[{"name":"a\"b"}]}"#);
        let review: Review = from_json(&text).unwrap();
        let spec = review.request.unwrap().object.unwrap().spec.unwrap();
        assert_eq!(&*spec.containers[0].name, "a\"b");
    }

    #[test]
    fn escapes_and_nesting_in_skipped_values() {
        for unknown in [
            r#""plain""#,
            r#""quote \" inside""#,
            r#""ends in a backslash \\""#,
            r#""\\\"\\""#,
            r#""\ud800 lone surrogates pass when skipped \udc00""#,
            r#"[[], {}, [[{"a": [1, -2.5e-3, true, false, null]}]], {"\"k\\": {"x": "]}"}}]"#,
            r#"{"nested": {"deeper": {"deepest": ["}", "]", "{", "[", ",", ":"]}}}"#,
            r#"  [ 1 , 2 ]  "#,
            "0",
            "-0.0E+10",
        ] {
            let text = pod(&format!(
                r#"{{"unknown":{unknown},"containers":[{{"name":"c"}}]}}"#
            ));
            assert!(agrees(&text), "{text}");
        }
    }

    #[test]
    fn malformed_input_is_declined() {
        for bad in [
            r#"{"containers":[{"name":"c"},]}"#,
            r#"{"containers":[{"name":"c",}]}"#,
            r#"{"x":[1,],"containers":[]}"#,
            r#"{"x":{"a":1,},"containers":[]}"#,
            r#"{"x":[,1]}"#,
            r#"{"x":{,}}"#,
            r#"{"x" 1}"#,
            r#"{"x":{"a" 1}}"#,
            r#"{"x":{"a":1 "b":2}}"#,
            r#"{"x":[1 2]}"#,
            r#"{"x":"unterminated}"#,
            "{\"x\":\"raw\nnewline\"}",
            "{\"containers\":[{\"name\":\"raw\ttab\"}]}",
            r#"{"x":"bad \x escape"}"#,
            r#"{"x":"bad \u12g4 hex"}"#,
            r#"{"x":"short \u12"}"#,
            r#"{"x":01}"#,
            r#"{"x":1.}"#,
            r#"{"x":.5}"#,
            r#"{"x":-}"#,
            r#"{"x":1e}"#,
            r#"{"x":+1}"#,
            r#"{"x":tru}"#,
            r#"{"x":nul}"#,
            r#"{"x":True}"#,
            r#"{"x":[[[}"#,
            r#"{"x":[}"#,
            r#"{"x":{]}"#,
            r#"{"containers":[{"name":"\ud800 lone"}]}"#,
            r#"{"containers":[{"name":"\udc00 lone"}]}"#,
            r#"{"containers":[{"name":"\ud800\u0041"}]}"#,
            r#"{"containers":[{"name":"c"}]} trailing"#,
            r#"{"containers":[{"name":"c"}]"#,
        ] {
            let text = pod(bad);
            assert!(
                matches!(from_json::<Review>(&text), Err(ReadError::Declined)),
                "{text}"
            );
        }
        for bad in ["", " ", "nul", "{", "[]", "{}{}"] {
            assert!(from_json::<Review>(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn numbers_read_as_serde_json_reads_them() {
        for n in [
            "3600",
            "0",
            "-1",
            "-0",
            "1.5",
            "1e3",
            "1E3",
            "3600.0",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "99999999999999999999",
            "\"3600\"",
            "null",
            "true",
        ] {
            let text = pod(&format!(
                r#"{{"volumes":[{{"name":"t","projected":{{"sources":[{{"serviceAccountToken":{{"path":"t","expirationSeconds":{n}}}}}]}}}}]}}"#
            ));
            agrees(&text);
        }
        for flag in ["true", "false", "null", "1", "\"true\""] {
            let text = format!(
                r#"{{"request":{{"object":{{"metadata":{{"ownerReferences":[{{"kind":"ReplicaSet","name":"r","controller":{flag}}}]}}}}}}}}"#
            );
            agrees(&text);
        }
    }

    #[test]
    fn deep_nesting_is_declined_without_exhausting_the_stack() {
        let deep = 200_000;
        let text = pod(&format!(
            r#"{{"x":{}{},"containers":[]}}"#,
            "[".repeat(deep),
            "]".repeat(deep)
        ));
        assert!(from_json::<Review>(&text).is_err());
        // serde_json skips it (its skipping has no depth limit), which is
        // the answer the review then gets.
        assert!(serde_json::from_str::<Review>(&text).is_ok());
        let open = pod(&"[".repeat(deep));
        assert!(from_json::<Review>(&open).is_err());
        // Each step opens an object and an array: the deepest skipped value
        // read here, and one level more, which is declined.
        let nested = |steps| {
            format!(
                r#"{{"x":{}{}}}"#,
                r#"{"a":["#.repeat(steps),
                "]}".repeat(steps)
            )
        };
        let steps = MAX_SKIP_DEPTH as usize / 2;
        assert!(agrees(&pod(&nested(steps))));
        assert!(from_json::<Review>(&pod(&format!(r#"{{"x":[{}]}}"#, nested(steps)))).is_err());
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "(\\PC|[\"\\\\/\u{0}-\u{1f}])*".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(("[a-z\"\\\\]{0,6}", inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn mutated_fixtures_never_read_differently(
            which in 0..FIXTURES.len(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 1..4),
        ) {
            let mut bytes = FIXTURES[which].as_bytes().to_vec();
            for (at, op, byte) in edits {
                let i = at.index(bytes.len());
                let structural = b"{}[],:\"\\ 0-.eE";
                let b = structural[usize::from(byte) % structural.len()];
                match op {
                    0 => { bytes.remove(i); }
                    1 => bytes.insert(i, b),
                    2 => bytes[i] = b,
                    _ => bytes[i] = byte,
                }
            }
            if let Ok(text) = std::str::from_utf8(&bytes) {
                agrees(text);
            }
        }

        #[test]
        fn arbitrary_values_where_the_views_read_and_skip(value in json_value()) {
            let v = serde_json::to_string(&value).unwrap();
            for spec in [
                format!(r#"{{"unknown":{v},"containers":[{{"name":"c","ports":{v}}}]}}"#),
                format!(r#"{{"containers":[{{"name":{v}}}]}}"#),
                format!(r#"{{"containers":[{{"env":[{{"name":"A","value":{v}}}]}}]}}"#),
                format!(r#"{{"containers":{v}}}"#),
                format!(r#"{{"volumes":[{{"name":"v","projected":{v}}}]}}"#),
            ] {
                agrees(&pod(&spec));
            }
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            agrees(&pod(&format!(r#"{{"unknown": {pretty}, "containers": []}}"#)));
        }
    }
}
