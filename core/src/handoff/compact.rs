//! JSON from the handoff that is forwarded to the backend (message contents,
//! `tools`, `response_format`, ...): parsed and written back compactly, never
//! spliced in as the text PHP sent.
//!
//! One pass drives serde_json's parser straight into a writer, building no
//! `serde_json::Value` (whose map would reorder keys: JSON-schema property order
//! steers structured output, so order is kept). Every string is decoded and
//! re-escaped and every number read, so what comes out is strict JSON: a lone
//! `\u` surrogate or a number beyond f64 fails the parse instead of reaching a
//! backend whose parser refuses it. Nesting is bounded by serde_json's recursion
//! limit (128), which this writer's own recursion follows.

use std::fmt;
use std::fmt::Write as _;

use bytes::{BufMut, BytesMut};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::json;

/// One JSON value, strict and compact, as it goes into the request body.
#[derive(Clone, PartialEq, Eq)]
pub struct Json(Box<str>);

impl Json {
    /// Parses `text` (one JSON value) and writes it back compactly.
    pub fn parse(text: &str) -> Result<Json, serde_json::Error> {
        let mut out = BytesMut::with_capacity(text.len());
        let mut deserializer = serde_json::Deserializer::from_str(text);
        Writer(&mut out).deserialize(&mut deserializer)?;
        deserializer.end()?;
        // Only `json::write_str` output and ASCII punctuation were written.
        let text = String::from_utf8(out.to_vec()).map_err(|_| serde::de::Error::custom("not UTF-8"))?;
        Ok(Json(text.into_boxed_str()))
    }

    pub(super) fn from_raw(raw: &RawValue) -> Result<Json, serde_json::Error> {
        Json::parse(raw.get())
    }

    /// A JSON string literal holding `text`.
    pub fn string(text: &str) -> Json {
        let mut out = BytesMut::with_capacity(text.len() + 2);
        json::write_str(&mut out, text);
        Json(String::from_utf8_lossy(&out).into_owned().into_boxed_str())
    }

    /// JSON this crate wrote itself, compact and valid by construction (content
    /// parts built from checked pieces), taken without parsing it again.
    pub(crate) fn trusted(text: String) -> Json {
        Json(text.into_boxed_str())
    }

    /// `null`.
    pub fn null() -> Json {
        Json("null".into())
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        &self.0
    }

    /// The first byte of the text, which says the value's kind (`"`, `[`, `{`, ...).
    pub(super) fn first_byte(&self) -> u8 {
        self.0.as_bytes().first().copied().unwrap_or(b'n')
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Writes the value it deserializes to the buffer.
struct Writer<'a>(&'a mut BytesMut);

impl<'de> DeserializeSeed<'de> for Writer<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Writer<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<(), E> {
        self.0.put_slice(if value { b"true" } else { b"false" });
        Ok(())
    }

    fn visit_i64<E>(self, value: i64) -> Result<(), E> {
        // Writing to a BytesMut cannot fail.
        let _ = write!(self.0, "{value}");
        Ok(())
    }

    fn visit_u64<E>(self, value: u64) -> Result<(), E> {
        // Writing to a BytesMut cannot fail.
        let _ = write!(self.0, "{value}");
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<(), E> {
        // serde_json refuses out-of-range numbers before this; a non-finite value
        // here would still not be JSON.
        if !value.is_finite() {
            return Err(E::custom("number is not finite"));
        }
        let text = serde_json::to_string(&value).map_err(E::custom)?;
        self.0.put_slice(text.as_bytes());
        Ok(())
    }

    fn visit_str<E>(self, value: &str) -> Result<(), E> {
        json::write_str(self.0, value);
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.put_slice(b"null");
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.put_u8(b'[');
        let mut first = true;
        loop {
            let mark = self.0.len();
            if !first {
                self.0.put_u8(b',');
            }
            if seq.next_element_seed(Writer(self.0))?.is_none() {
                self.0.truncate(mark);
                break;
            }
            first = false;
        }
        self.0.put_u8(b']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.0.put_u8(b'{');
        let mut first = true;
        loop {
            let mark = self.0.len();
            if !first {
                self.0.put_u8(b',');
            }
            if map.next_key_seed(KeyWriter(self.0))?.is_none() {
                self.0.truncate(mark);
                break;
            }
            self.0.put_u8(b':');
            map.next_value_seed(Writer(self.0))?;
            first = false;
        }
        self.0.put_u8(b'}');
        Ok(())
    }
}

/// Writes an object key (always a string in JSON).
struct KeyWriter<'a>(&'a mut BytesMut);

impl<'de> DeserializeSeed<'de> for KeyWriter<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyWriter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<(), E> {
        json::write_str(self.0, key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(text: &str) -> String {
        Json::parse(text).unwrap_or_else(|e| panic!("{text}: {e}")).get().to_owned()
    }

    #[test]
    fn values_come_back_compact_with_key_order_kept() {
        assert_eq!(
            rewritten(r#" { "z" : 1 , "a" : [ true , false , null , -2 , 1.5 ] , "m" : { } , "e" : [ ] } "#),
            r#"{"z":1,"a":[true,false,null,-2,1.5],"m":{},"e":[]}"#
        );
        assert_eq!(rewritten("18446744073709551615"), "18446744073709551615");
        assert_eq!(rewritten("-9223372036854775808"), "-9223372036854775808");
        assert_eq!(rewritten("0"), "0");
    }

    #[test]
    fn strings_are_decoded_and_escaped_again() {
        // PHP's default escapes (`\/`, `\u00e9`) come back as plain characters.
        assert_eq!(rewritten(r#""caf\u00e9 a\/b \"q\" \ud83d\ude00""#), "\"café a/b \\\"q\\\" 😀\"");
        assert_eq!(rewritten(r#"{"k\n":"\u0001"}"#), r#"{"k\n":"\u0001"}"#);
    }

    #[test]
    fn what_strict_parsers_refuse_is_refused() {
        for text in [r#""\ud800""#, "1e400", "[-1e999]", "[1,]", "{\"a\":1,}", "01", "\"a\" \"b\"", "", "nul"]
        {
            assert!(Json::parse(text).is_err(), "{text:?} should be refused");
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(Json::parse(&deep).is_err(), "nesting past serde_json's limit");
    }

    #[test]
    fn output_parses_to_the_same_value() {
        let text = r#"{"type":"json_schema","json_schema":{"name":"x","schema":{"b":[1,2.25e-3,"\t"]}}}"#;
        let back: serde_json::Value = serde_json::from_str(&rewritten(text)).unwrap();
        assert_eq!(back, serde_json::from_str::<serde_json::Value>(text).unwrap());
    }

    #[test]
    fn string_and_null_constructors() {
        assert_eq!(Json::string("a\"b").get(), r#""a\"b""#);
        assert_eq!(Json::null().get(), "null");
    }
}
