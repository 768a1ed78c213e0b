//! The payloads of the streamed response, and error bodies of failed requests.
//!
//! The typed shapes below read only what we forward; every other field is skipped
//! with `IgnoredAny`. Strings borrow from the payload unless they hold escapes.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::{ChunkError, ChunkEvent, UpstreamError};
use crate::redact::redact;

/// Interprets one SSE event's `data` from the upstream. An error's message, type
/// and code come out redacted of anything key-like (see [`crate::redact`]).
pub fn parse_chunk(data: &str) -> Result<ChunkEvent<'_>, ChunkError> {
    if data.trim_ascii() == "[DONE]" {
        return Ok(ChunkEvent::Done);
    }
    let Object(mut payload) = serde_json::from_str::<Object<Payload<'_>>>(data).map_err(|error| {
        // The typed parse rejects a wrong type before reading on, so a shape error
        // may still hide broken JSON: `shape_problem` tells them apart.
        if error.is_data() {
            shape_problem(data)
        } else {
            ChunkError::NotJson(error.to_string())
        }
    })?;
    if let Some(error) = payload.upstream_error(data) {
        return Ok(ChunkEvent::Error(error));
    }
    let choice = payload.choices.and_then(|choices| choices.0);
    let (content, reasoning, finish_reason) = match choice {
        Some(choice) => {
            let (content, reasoning) = match choice.delta {
                Some(Object(delta)) => {
                    (delta.content.map(|text| text.0), delta.reasoning_content.map(|text| text.0))
                }
                None => (None, None),
            };
            (content, reasoning, choice.finish_reason.map(|text| text.0).filter(|reason| !reason.is_empty()))
        }
        None => (None, None, None),
    };
    let usage = payload.usage.and_then(|usage| usage.0);
    let (id, model) = (payload.id.map(|id| id.0), payload.model.map(|model| model.0));
    Ok(ChunkEvent::Delta { content, reasoning, finish_reason, usage, id, model })
}

/// The error to report for a non-2xx upstream response, from its status and (up
/// to a bound) its body: the body's OpenAI error object when it has one (its text
/// redacted of anything key-like, see [`crate::redact`]), else a message naming
/// the status.
pub fn error_from_status(status: u16, body: &[u8]) -> UpstreamError {
    let reported = std::str::from_utf8(body)
        .ok()
        .and_then(|text| Some((text, serde_json::from_str::<Object<Payload<'_>>>(text).ok()?.0)))
        .and_then(|(text, mut payload)| payload.upstream_error(text));
    reported.unwrap_or_else(|| UpstreamError {
        message: format!("backend answered HTTP {status}"),
        error_type: "upstream_error".to_owned(),
        code: None,
    })
}

/// The top level of a payload: a chunk, or an error.
#[derive(Deserialize)]
struct Payload<'a> {
    /// `"chat.completion.chunk"`, or `"error"` for a flat error.
    #[serde(borrow)]
    object: Option<Text<'a>>,
    #[serde(borrow)]
    choices: Option<FirstChoice<'a>>,
    error: Option<ErrorField>,
    #[serde(borrow)]
    id: Option<Text<'a>>,
    #[serde(borrow)]
    model: Option<Text<'a>>,
    usage: Option<super::usage::Lenient>,
}

impl Payload<'_> {
    /// The error this payload reports, if it is one. `data` is the payload's text:
    /// a flat error (vLLM and other compatible servers put OpenAI's error fields at
    /// the top level, marked `"object":"error"`) is read from it again (cold path).
    fn upstream_error(&mut self, data: &str) -> Option<UpstreamError> {
        if let Some(error) = self.error.take() {
            return Some(error.into());
        }
        if self.object.as_ref().is_some_and(|object| object.0 == "error") {
            let body = serde_json::from_str::<Object<ErrorBody>>(data).map(|body| body.0).unwrap_or_default();
            return Some(body.into());
        }
        None
    }
}

/// `choices[0]`; later choices are skipped unread.
struct FirstChoice<'a>(Option<Choice<'a>>);

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow)]
    delta: Option<Object<Delta<'a>>>,
    #[serde(borrow)]
    finish_reason: Option<Text<'a>>,
}

/// The delta's `role`, `tool_calls`, `refusal` and the rest are skipped unread.
#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow)]
    content: Option<Text<'a>>,
    #[serde(borrow)]
    reasoning_content: Option<Text<'a>>,
}

/// An error: OpenAI's object, or a bare message string (some proxies send one).
#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorField {
    Object(Object<ErrorBody>),
    Message(String),
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    message: Option<String>,
    #[serde(rename = "type")]
    error_type: Option<String>,
    code: Option<Code>,
}

impl From<ErrorField> for UpstreamError {
    fn from(error: ErrorField) -> Self {
        match error {
            ErrorField::Object(Object(body)) => body.into(),
            ErrorField::Message(message) => {
                ErrorBody { message: Some(message), ..ErrorBody::default() }.into()
            }
        }
    }
}

/// Every upstream error reaches [`UpstreamError`] through here, and its text is
/// forwarded to the browser: anything key-like in it is redacted on the way.
impl From<ErrorBody> for UpstreamError {
    fn from(body: ErrorBody) -> Self {
        UpstreamError {
            message: body
                .message
                .map(redacted)
                .unwrap_or_else(|| "the backend reported an error without a message".to_owned()),
            error_type: body.error_type.map(redacted).unwrap_or_else(|| "upstream_error".to_owned()),
            code: body.code.map(|code| redacted(code.0)),
        }
    }
}

/// `text` with key-like parts redacted, reusing its allocation when there are none.
fn redacted(text: String) -> String {
    match redact(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(clean) => clean,
    }
}

/// A JSON string, borrowed from the payload when it has no escapes.
struct Text<'a>(Cow<'a, str>);

/// `error.code`: a string, or a number rendered as text.
struct Code(String);

/// `T` read from a JSON object only (serde's derived structs also accept arrays).
struct Object<T>(T);

impl<'de: 'a, 'a> Deserialize<'de> for FirstChoice<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FirstOf<'a>(PhantomData<Choice<'a>>);

        impl<'de: 'a, 'a> Visitor<'de> for FirstOf<'a> {
            type Value = FirstChoice<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of choices")
            }

            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
                let first = seq.next_element::<Object<Choice<'a>>>()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(FirstChoice(first.map(|choice| choice.0)))
            }
        }

        deserializer.deserialize_seq(FirstOf(PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;

        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Cow<'de, str>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: serde::de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(text))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(text.to_owned()))
            }

            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(text))
            }
        }

        deserializer.deserialize_str(TextVisitor).map(Text)
    }
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CodeVisitor;

        impl Visitor<'_> for CodeVisitor {
            type Value = Code;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }

            fn visit_str<E: serde::de::Error>(self, code: &str) -> Result<Code, E> {
                Ok(Code(code.to_owned()))
            }

            fn visit_u64<E: serde::de::Error>(self, code: u64) -> Result<Code, E> {
                Ok(Code(code.to_string()))
            }

            fn visit_i64<E: serde::de::Error>(self, code: i64) -> Result<Code, E> {
                Ok(Code(code.to_string()))
            }

            fn visit_f64<E: serde::de::Error>(self, code: f64) -> Result<Code, E> {
                Ok(Code(code.to_string()))
            }
        }

        deserializer.deserialize_any(CodeVisitor)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        deserializer.deserialize_map(ObjectVisitor(PhantomData)).map(Object)
    }
}

/// Names what is wrong with a payload the typed parse rejected as the wrong shape.
/// Cold path: it parses the payload again, into a `Value`, to find the offending
/// field, or the place the JSON breaks.
fn shape_problem(data: &str) -> ChunkError {
    match serde_json::from_str::<Value>(data) {
        Ok(value) => ChunkError::UnexpectedShape(wrong_field(&value)),
        Err(error) => ChunkError::NotJson(error.to_string()),
    }
}

fn wrong_field(value: &Value) -> &'static str {
    const UNKNOWN: &str = "neither a chat.completion.chunk nor an error object";
    let is_text = |value: Option<&Value>| matches!(value, None | Some(Value::Null | Value::String(_)));
    let Value::Object(payload) = value else { return "expected a JSON object" };
    if !is_text(payload.get("object")) {
        return "`object` is not a string";
    }
    match payload.get("error") {
        None | Some(Value::Null | Value::String(_)) => {}
        Some(Value::Object(error)) => {
            if !is_text(error.get("message")) {
                return "`error.message` is not a string";
            }
            if !is_text(error.get("type")) {
                return "`error.type` is not a string";
            }
            if !matches!(error.get("code"), None | Some(Value::Null | Value::String(_) | Value::Number(_))) {
                return "`error.code` is neither a string nor a number";
            }
        }
        Some(_) => return "`error` is neither an object nor a string",
    }
    let first = match payload.get("choices") {
        None | Some(Value::Null) => return UNKNOWN,
        Some(Value::Array(choices)) => choices.first(),
        Some(_) => return "`choices` is not an array",
    };
    let choice = match first {
        None => return UNKNOWN,
        Some(Value::Object(choice)) => choice,
        Some(_) => return "`choices[0]` is not an object",
    };
    if !is_text(choice.get("finish_reason")) {
        return "`choices[0].finish_reason` is not a string";
    }
    match choice.get("delta") {
        None | Some(Value::Null) => UNKNOWN,
        Some(Value::Object(delta)) if !is_text(delta.get("content")) => {
            "`choices[0].delta.content` is not a string"
        }
        Some(Value::Object(delta)) if !is_text(delta.get("reasoning_content")) => {
            "`choices[0].delta.reasoning_content` is not a string"
        }
        Some(Value::Object(_)) => UNKNOWN,
        Some(_) => "`choices[0].delta` is not an object",
    }
}
