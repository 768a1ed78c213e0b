//! Reading JSON objects without building a `serde_json::Value` tree: named fields
//! come out as borrowed raw values, and every entry of an object can come out in
//! document order (serde_json's `Map` sorts unless `preserve_order` is on).
//!
//! Hand-written visitors rather than `#[derive(Deserialize)]`: a derived struct
//! would also accept a JSON array positionally and refuse duplicate keys, while a
//! handoff wants "objects only, last duplicate wins, unknown keys ignored".

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// The raw values of the fields called `names` (in that order), or `None` when the
/// JSON is valid but not an object. `null` reads as absent.
pub(super) fn named_fields<'a>(
    json: &'a [u8],
    names: &'static [&'static str],
) -> Result<Option<Vec<Option<&'a RawValue>>>, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let fields = NamedFields { names }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(fields)
}

/// One object entry: the key (borrowed unless it had escapes) and the raw value.
pub(super) type Entry<'a> = (Cow<'a, str>, &'a RawValue);

/// Every entry of an object in document order, or `None` when the JSON is valid but
/// not an object. An empty array counts as an empty object (PHP's `json_encode`
/// writes an empty array as `[]`).
pub(super) fn entries(json: &str) -> Result<Option<Vec<Entry<'_>>>, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let entries = deserializer.deserialize_any(EntriesVisitor)?;
    deserializer.end()?;
    Ok(entries)
}

struct NamedFields {
    names: &'static [&'static str],
}

impl<'de> DeserializeSeed<'de> for NamedFields {
    type Value = Option<Vec<Option<&'de RawValue>>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NamedFields {
    type Value = Option<Vec<Option<&'de RawValue>>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut values = vec![None; self.names.len()];
        while let Some(index) = map.next_key_seed(FieldIndex { names: self.names })? {
            match index.and_then(|index| values.get_mut(index)) {
                Some(slot) => *slot = map.next_value::<Option<&'de RawValue>>()?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(values))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain(seq).map(|_| None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// Which of `names` a key is; `None` for any other key.
struct FieldIndex {
    names: &'static [&'static str],
}

impl<'de> DeserializeSeed<'de> for FieldIndex {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for FieldIndex {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.names.iter().position(|name| *name == key))
    }
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Option<Vec<Entry<'de>>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key_seed(Key)? {
            entries.push((key, map.next_value::<&'de RawValue>()?));
        }
        Ok(Some(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain(seq).map(|elements| (elements == 0).then(Vec::new))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// An object key, borrowed from the input unless it had escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(key))
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key.to_owned()))
    }
}

/// Reads and discards a whole array (so the parser still checks its syntax),
/// returning how many elements it had.
fn drain<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<usize, A::Error> {
    let mut elements = 0;
    while seq.next_element::<IgnoredAny>()?.is_some() {
        elements += 1;
    }
    Ok(elements)
}
