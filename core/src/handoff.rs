//! The handoff message: what mod_socket_handoff sends with the client's fd.
//!
//! The payload is the `X-Handoff-Data` JSON object (up to 64 KiB; a lone NUL when
//! PHP set none). Every field is optional, `null` means absent, and unknown fields
//! are ignored; a known field of the wrong type fails the whole handoff (the client
//! gets a 400) except `response_headers` entries, which are dropped one by one with
//! a reason for the log. Decoding borrows raw JSON from the payload and builds no
//! `serde_json::Value` tree; message contents are kept as the raw JSON given.

use std::borrow::Cow;

use serde_json::value::RawValue;

use crate::http1;

mod object;

/// Largest handoff payload accepted, in bytes (the module's own limit).
pub const MAX_HANDOFF_BYTES: usize = 64 * 1024;

/// Most `response_headers` entries kept; later ones are rejected.
pub const MAX_RESPONSE_HEADERS: usize = 32;

/// Most bytes the kept `response_headers` may add to the client head
/// (`Name: value\r\n` each); entries that would go over are rejected.
pub const MAX_RESPONSE_HEADER_BYTES: usize = 8 * 1024;

/// Longest header name kept in a [`HeaderRejection`], in bytes.
const MAX_REJECTED_NAME_BYTES: usize = 64;

/// One chat message, forwarded to the backend as given.
#[derive(Debug, Clone)]
pub struct Message {
    pub role: String,
    /// The `content` value as raw JSON (a string, an array of parts, or null), so
    /// it is forwarded byte for byte.
    pub content: Box<RawValue>,
}

/// A decoded, validated handoff.
#[derive(Debug, Clone, Default)]
pub struct Handoff {
    /// From `messages`, or a single user message built from `prompt`; empty when
    /// the handoff had neither.
    pub messages: Vec<Message>,
    /// `None` also when the handoff gave an empty string, so the default applies.
    pub model: Option<String>,
    /// `user_id` as text (JSON integers are accepted and rendered in decimal).
    pub user_id: Option<String>,
    pub request_id: Option<String>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    /// A valid header value (surrounding spaces trimmed); `None` when empty.
    pub test_pattern: Option<String>,
    /// Valid `response_headers`, in the order given.
    pub response_headers: Vec<(String, String)>,
    /// Headers dropped by validation, with why, for the log.
    pub rejected_headers: Vec<HeaderRejection>,
}

impl Handoff {
    /// The text of the last user message when it is a plain string ("" otherwise);
    /// the mock backend echoes it. Borrowed from the raw content unless the string
    /// has JSON escapes (PHP escapes `/` and non-ASCII by default), which are decoded.
    pub fn last_user_text(&self) -> Cow<'_, str> {
        let Some(message) = self.messages.iter().rev().find(|message| message.role == "user") else {
            return Cow::Borrowed("");
        };
        let raw = message.content.get();
        let unescaped = raw.strip_prefix('"').and_then(|rest| rest.strip_suffix('"'));
        match unescaped {
            Some(text) if !text.contains('\\') => Cow::Borrowed(text),
            Some(_) => serde_json::from_str(raw).map_or(Cow::Borrowed(""), Cow::Owned),
            None => Cow::Borrowed(""),
        }
    }
}

/// A `response_headers` entry that was dropped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRejection {
    /// The name as given (cut to a bounded length for logging).
    pub name: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandoffError {
    /// The payload is larger than [`MAX_HANDOFF_BYTES`].
    TooLarge { len: usize },
    /// The message was longer than [`MAX_HANDOFF_BYTES`], so the runtime received
    /// only part of it (MSG_TRUNC, or a stream past the limit).
    Truncated,
    /// Not valid JSON; the message says where.
    NotJson(String),
    /// JSON, but not an object.
    NotObject,
    /// A known field with the wrong type or an out-of-range value.
    InvalidField { field: &'static str, reason: String },
}

impl std::fmt::Display for HandoffError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandoffError::TooLarge { len } => {
                write!(f, "handoff data is {len} bytes, over the {MAX_HANDOFF_BYTES}-byte limit")
            }
            HandoffError::Truncated => {
                write!(f, "handoff message is larger than the {MAX_HANDOFF_BYTES}-byte limit")
            }
            HandoffError::NotJson(why) => write!(f, "handoff data is not valid JSON: {why}"),
            HandoffError::NotObject => write!(f, "handoff data is not a JSON object"),
            HandoffError::InvalidField { field, reason } => {
                write!(f, "handoff field `{field}` is invalid: {reason}")
            }
        }
    }
}

impl std::error::Error for HandoffError {}

/// The fields a handoff may have, in the order [`object::named_fields`] returns them.
const FIELDS: &[&str] = &[
    "prompt",
    "messages",
    "model",
    "user_id",
    "request_id",
    "max_tokens",
    "temperature",
    "test_pattern",
    "response_headers",
];

/// Decodes a handoff payload. Trailing (and leading) NUL bytes and ASCII whitespace
/// are trimmed; what remains empty means all defaults. The size limit applies to
/// the payload as received.
pub fn decode(data: &[u8]) -> Result<Handoff, HandoffError> {
    if data.len() > MAX_HANDOFF_BYTES {
        return Err(HandoffError::TooLarge { len: data.len() });
    }
    let is_padding = |b: &u8| *b == 0 || b.is_ascii_whitespace();
    let start = data.iter().position(|b| !is_padding(b)).unwrap_or(data.len());
    let end = data.iter().rposition(|b| !is_padding(b)).map_or(start, |last| last + 1);
    let (prefix, json) = match (data.get(..start), data.get(start..end)) {
        (Some(prefix), Some(json)) if !json.is_empty() => (prefix, json),
        _ => return Ok(Handoff::default()),
    };
    let fields = match object::named_fields(json, FIELDS) {
        Ok(Some(fields)) => fields,
        Ok(None) => return Err(HandoffError::NotObject),
        Err(e) => return Err(not_json(&e, prefix)),
    };
    let field = |index: usize| fields.get(index).copied().flatten();
    let [prompt, messages, model, user_id, request_id, max_tokens, temperature, test_pattern, response_headers] =
        std::array::from_fn(field);

    let prompt = prompt.map(|raw| string_value("prompt", raw).map(|_| raw)).transpose()?;
    let mut handoff = Handoff {
        messages: match messages {
            Some(raw) => decode_messages(raw)?,
            None => Vec::new(),
        },
        model: string_field("model", model)?.filter(|model| !model.is_empty()),
        user_id: user_id.map(decode_user_id).transpose()?,
        request_id: string_field("request_id", request_id)?,
        max_tokens: max_tokens
            .map(|raw| {
                serde_json::from_str(raw.get())
                    .map_err(|_| invalid("max_tokens", format!("must be an integer from 0 to {}", u32::MAX)))
            })
            .transpose()?,
        temperature: temperature.map(decode_temperature).transpose()?,
        test_pattern: string_field("test_pattern", test_pattern)?
            .map(|pattern| decode_test_pattern(&pattern))
            .transpose()?
            .flatten(),
        response_headers: Vec::new(),
        rejected_headers: Vec::new(),
    };
    if handoff.messages.is_empty() {
        if let Some(raw) = prompt {
            handoff.messages.push(Message { role: "user".to_owned(), content: raw.to_owned() });
        }
    }
    if let Some(raw) = response_headers {
        decode_response_headers(raw, &mut handoff)?;
    }
    Ok(handoff)
}

/// serde_json's error, with its position counted from the start of the payload
/// rather than from the start of the trimmed JSON.
fn not_json(error: &serde_json::Error, trimmed_prefix: &[u8]) -> HandoffError {
    let message = error.to_string();
    if error.line() == 0 {
        return HandoffError::NotJson(message);
    }
    let position = format!(" at line {} column {}", error.line(), error.column());
    let what = message.strip_suffix(&position).unwrap_or(&message);
    let prefix_lines = trimmed_prefix.iter().filter(|b| **b == b'\n').count();
    let prefix_columns = trimmed_prefix.iter().rev().take_while(|b| **b != b'\n').count();
    let (line, column) = if error.line() == 1 {
        (1 + prefix_lines, error.column() + prefix_columns)
    } else {
        (error.line() + prefix_lines, error.column())
    };
    HandoffError::NotJson(format!("{what} at line {line} column {column}"))
}

fn invalid(field: &'static str, reason: impl Into<String>) -> HandoffError {
    HandoffError::InvalidField { field, reason: reason.into() }
}

fn string_value(field: &'static str, raw: &RawValue) -> Result<String, HandoffError> {
    serde_json::from_str(raw.get()).map_err(|_| invalid(field, "must be a string"))
}

fn string_field(field: &'static str, raw: Option<&RawValue>) -> Result<Option<String>, HandoffError> {
    raw.map(|raw| string_value(field, raw)).transpose()
}

fn decode_user_id(raw: &RawValue) -> Result<String, HandoffError> {
    let json = raw.get();
    if let Ok(text) = serde_json::from_str::<String>(json) {
        Ok(text)
    } else if let Ok(number) = serde_json::from_str::<u64>(json) {
        Ok(number.to_string())
    } else if let Ok(number) = serde_json::from_str::<i64>(json) {
        Ok(number.to_string())
    } else {
        Err(invalid("user_id", "must be a string or an integer"))
    }
}

fn decode_temperature(raw: &RawValue) -> Result<f64, HandoffError> {
    serde_json::from_str::<f64>(raw.get())
        .ok()
        .filter(|temperature| (0.0..=2.0).contains(temperature))
        .ok_or_else(|| invalid("temperature", "must be a number from 0 to 2"))
}

/// The pattern as it will go in `X-Test-Pattern`: trimmed, `None` when empty.
fn decode_test_pattern(pattern: &str) -> Result<Option<String>, HandoffError> {
    let pattern = pattern.trim_matches([' ', '\t']);
    if pattern.is_empty() {
        return Ok(None);
    }
    match http1::header_rejection("X-Test-Pattern", pattern) {
        None => Ok(Some(pattern.to_owned())),
        Some(reason) => Err(invalid("test_pattern", reason)),
    }
}

fn decode_messages(raw: &RawValue) -> Result<Vec<Message>, HandoffError> {
    let elements: Vec<&RawValue> = serde_json::from_str(raw.get())
        .map_err(|_| invalid("messages", "must be an array of {\"role\", \"content\"} objects"))?;
    elements
        .iter()
        .enumerate()
        .map(|(index, element)| {
            let fields = object::named_fields(element.get().as_bytes(), &["role", "content"])
                .ok()
                .flatten()
                .ok_or_else(|| invalid("messages", format!("message {index} is not an object")))?;
            let [role, content] = std::array::from_fn(|i| fields.get(i).copied().flatten());
            let role = role
                .and_then(|role| serde_json::from_str::<String>(role.get()).ok())
                .ok_or_else(|| invalid("messages", format!("message {index} needs a string `role`")))?;
            // A missing content is sent as null, as for an assistant message that
            // only carried tool calls.
            let content = content.unwrap_or(RawValue::NULL);
            if !decodes_cleanly(content) {
                return Err(invalid(
                    "messages",
                    format!("message {index} content is not strict JSON (a lone \\u surrogate or a number beyond f64)"),
                ));
            }
            Ok(Message { role, content: content.to_owned() })
        })
        .collect()
}

/// Raw content is forwarded without being decoded, and a raw value's syntax check
/// neither decodes `\u` escapes nor reads numbers: a lone surrogate (`"\ud800"`) or
/// a number beyond f64 (`1e400`) would reach the backend as JSON that strict
/// parsers refuse. One pass that decodes every string and number, building nothing,
/// proves the content is well formed.
fn decodes_cleanly(content: &RawValue) -> bool {
    serde_json::from_str::<WellFormed>(content.get()).is_ok()
}

/// Deserializes any JSON value by visiting every part of it and keeping nothing.
struct WellFormed;

impl<'de> serde::Deserialize<'de> for WellFormed {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(WellFormedVisitor)
    }
}

struct WellFormedVisitor;

impl<'de> serde::de::Visitor<'de> for WellFormedVisitor {
    type Value = WellFormed;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any well-formed JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<WellFormed, E> {
        Ok(WellFormed)
    }

    fn visit_i64<E>(self, _: i64) -> Result<WellFormed, E> {
        Ok(WellFormed)
    }

    fn visit_u64<E>(self, _: u64) -> Result<WellFormed, E> {
        Ok(WellFormed)
    }

    fn visit_f64<E>(self, _: f64) -> Result<WellFormed, E> {
        Ok(WellFormed)
    }

    fn visit_str<E>(self, _: &str) -> Result<WellFormed, E> {
        Ok(WellFormed)
    }

    fn visit_unit<E>(self) -> Result<WellFormed, E> {
        Ok(WellFormed)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<WellFormed, A::Error> {
        while seq.next_element::<WellFormed>()?.is_some() {}
        Ok(WellFormed)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<WellFormed, A::Error> {
        while map.next_entry::<WellFormed, WellFormed>()?.is_some() {}
        Ok(WellFormed)
    }
}

/// Keeps the valid `response_headers` in document order and records the rest with
/// a reason. Values are trimmed of surrounding spaces and tabs (they are not part
/// of a field value on the wire); duplicate names keep the first; the count and
/// size caps reject whatever comes after them.
fn decode_response_headers(raw: &RawValue, handoff: &mut Handoff) -> Result<(), HandoffError> {
    let entries = object::entries(raw.get())
        .ok()
        .flatten()
        .ok_or_else(|| invalid("response_headers", "must be an object of header names to string values"))?;
    let mut size = 0;
    for (name, raw_value) in entries {
        let reason = match serde_json::from_str::<String>(raw_value.get()) {
            Err(_) => Some("header value is not a string"),
            Ok(value) => {
                let value = value.trim_matches([' ', '\t']);
                let line_size = name.len() + value.len() + 4;
                if let Some(reason) = http1::header_rejection(&name, value) {
                    Some(reason)
                } else if handoff.response_headers.iter().any(|(kept, _)| kept.eq_ignore_ascii_case(&name)) {
                    Some("duplicate header name")
                } else if handoff.response_headers.len() >= MAX_RESPONSE_HEADERS {
                    Some("more than 32 response headers")
                } else if size + line_size > MAX_RESPONSE_HEADER_BYTES {
                    Some("response headers over 8 KiB in total")
                } else {
                    size += line_size;
                    handoff.response_headers.push((name.clone().into_owned(), value.to_owned()));
                    None
                }
            }
        };
        if let Some(reason) = reason {
            handoff.rejected_headers.push(HeaderRejection { name: cut_name(&name), reason });
        }
    }
    Ok(())
}

fn cut_name(name: &str) -> String {
    let mut end = name.len().min(MAX_REJECTED_NAME_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.get(..end).unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests;
