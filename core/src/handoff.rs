//! The handoff message: what mod_socket_handoff sends with the client's fd.
//!
//! The payload is the `X-Handoff-Data` JSON object (up to 64 KiB; a lone NUL when
//! PHP set none). Every field is optional, `null` means absent, and unknown fields
//! are ignored; a known field of the wrong type fails the whole handoff (the client
//! gets a 400) except `response_headers` entries, which are dropped one by one with
//! a reason for the log. Decoding borrows raw JSON from the payload and builds no
//! `serde_json::Value` tree. JSON that is forwarded as JSON (message contents,
//! `stop`, `tools`, `tool_choice`, `response_format`) is parsed and written back
//! compactly ([`Json`]), so nothing PHP sent is spliced into the request as text.

use std::borrow::Cow;

use serde_json::value::RawValue;

use crate::http1;

mod compact;
mod messages;
mod object;
mod options;

pub use compact::Json;

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
    /// The `role` (`system`, `user`, `assistant`, `tool`, ...): required, any
    /// string, not checked against a list.
    pub role: String,
    /// The `content`: a string, an array of content parts (objects with a string
    /// `type`), or null (also when absent, as for an assistant message that only
    /// carried tool calls).
    pub content: Json,
    /// `name`, when given.
    pub name: Option<String>,
    /// `tool_call_id` (the answer to which tool call a `tool` message is).
    pub tool_call_id: Option<String>,
    /// `tool_calls` of an assistant message: an array of objects.
    pub tool_calls: Option<Json>,
}

impl Message {
    /// A message with only a role and a content.
    pub fn new(role: impl Into<String>, content: Json) -> Message {
        Message { role: role.into(), content, name: None, tool_call_id: None, tool_calls: None }
    }
}

/// What the client's events carry (`format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Format {
    /// `data: {"content":"..."}` per piece of text (the default).
    #[default]
    Content,
    /// Each upstream `chat.completion.chunk` as its JSON, for an OpenAI SDK's
    /// stream parser (tool calls and reasoning deltas included).
    OpenAi,
}

/// How a stream's events are written for its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Delivery {
    /// What each event carries (`format`; [`Format::Content`] when absent).
    pub format: Format,
    /// In [`Format::Content`], forward `reasoning_content` deltas as
    /// `event: reasoning` (`reasoning: true`); dropped otherwise.
    pub reasoning: bool,
    /// In [`Format::Content`], write the backend's usage as one `event: usage`
    /// before `data: [DONE]` (`usage_event: true`); not written otherwise.
    pub usage_event: bool,
}

/// A decoded, validated handoff.
#[derive(Debug, Clone, Default)]
pub struct Handoff {
    /// From `messages`, or built from `system` and `prompt` (a system message, then
    /// a user message); empty when the handoff had none of them.
    pub messages: Vec<Message>,
    /// `None` also when the handoff gave an empty string, so the default applies.
    pub model: Option<String>,
    /// `user_id` as text (JSON integers are accepted and rendered in decimal).
    pub user_id: Option<String>,
    /// A valid header value (sent upstream as `X-Request-Id`); `None` when empty.
    pub request_id: Option<String>,
    /// `max_tokens`, forwarded as given (0 to `u32::MAX`).
    pub max_tokens: Option<u32>,
    /// `max_completion_tokens`, forwarded as given (0 to `u32::MAX`); set
    /// independently of `max_tokens`, both are sent when both are given.
    pub max_completion_tokens: Option<u32>,
    /// From 0 to 2.
    pub temperature: Option<f64>,
    /// From 0 to 1.
    pub top_p: Option<f64>,
    /// `seed`, any 64-bit signed integer.
    pub seed: Option<i64>,
    /// From -2 to 2.
    pub presence_penalty: Option<f64>,
    /// From -2 to 2.
    pub frequency_penalty: Option<f64>,
    /// A string, or an array of strings.
    pub stop: Option<Json>,
    /// An object with a string `type`.
    pub response_format: Option<Json>,
    /// An array of objects, each with a string `type`.
    pub tools: Option<Json>,
    /// A string (`"auto"`, `"none"`, `"required"`) or an object.
    pub tool_choice: Option<Json>,
    /// The end user for the provider's abuse monitoring; `None` when empty.
    pub user: Option<String>,
    /// What the client's events carry.
    pub delivery: Delivery,
    /// A valid header value (surrounding spaces trimmed); `None` when empty.
    pub test_pattern: Option<String>,
    /// Valid `response_headers`, in the order given.
    pub response_headers: Vec<(String, String)>,
    /// Headers dropped by validation, with why, for the log.
    pub rejected_headers: Vec<HeaderRejection>,
    /// `images`, `image_paths` and `attachments`, not yet read: taken out by
    /// [`crate::attachments::Plan::new`] and put into `messages` by its `apply`.
    pub attachments: crate::attachments::Requested,
    /// The named backend to serve it ([`crate::backends::select`]); `None` (or
    /// empty) for the default one.
    pub backend: Option<String>,
    /// A passthrough backend's request body (a JSON object, forwarded as given).
    pub body: Option<Json>,
    /// A passthrough backend's path under its base URL, checked against its
    /// configured prefixes ([`crate::backends::check_handoff`]).
    pub path: Option<String>,
    /// Keep the assistant's text in this stream's completion record (`record_text`).
    pub record_text: bool,
}

impl Handoff {
    /// The text of the last user message when it is a plain string ("" otherwise);
    /// the mock backend echoes it. Borrowed from the content's JSON unless the
    /// string has escapes (quotes, backslashes, control characters), which are decoded.
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
    /// Why it was dropped (invalid name or value, duplicate, over the count
    /// or size cap), for the log line.
    pub reason: &'static str,
}

/// Why a handoff was refused as a whole: no stream starts, and the client is
/// answered `400` with the `Display` text (key-like parts redacted).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandoffError {
    /// The payload is larger than [`MAX_HANDOFF_BYTES`].
    TooLarge {
        /// The payload's size, in bytes.
        len: usize,
    },
    /// The message was longer than [`MAX_HANDOFF_BYTES`], so the runtime received
    /// only part of it (MSG_TRUNC, or a stream past the limit).
    Truncated,
    /// Not valid JSON; the message says where.
    NotJson(String),
    /// JSON, but not an object.
    NotObject,
    /// A known field with the wrong type or an out-of-range value.
    InvalidField {
        /// The field's name as it appears in the JSON (`messages` for any
        /// problem inside a message).
        field: &'static str,
        /// What is wrong, for the client and the log (`must be a string`).
        reason: String,
    },
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
    "system",
    "max_completion_tokens",
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "stop",
    "response_format",
    "tools",
    "tool_choice",
    "user",
    "format",
    "reasoning",
    "images",
    "image_paths",
    "attachments",
    "backend",
    "body",
    "path",
    "usage_event",
    "record_text",
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
    let [prompt, messages, model, user_id, request_id, max_tokens, temperature, test_pattern, response_headers, system, max_completion_tokens, top_p, seed, presence_penalty, frequency_penalty, stop, response_format, tools, tool_choice, user, format, reasoning, images, image_paths, attachments, backend, body, path, usage_event, record_text] =
        std::array::from_fn(field);

    let prompt = string_field("prompt", prompt)?;
    let system = string_field("system", system)?;
    let mut handoff = Handoff {
        messages: match messages {
            Some(raw) => messages::decode(raw)?,
            None => Vec::new(),
        },
        model: string_field("model", model)?.filter(|model| !model.is_empty()),
        user_id: user_id.map(decode_user_id).transpose()?,
        request_id: string_field("request_id", request_id)?
            .map(|id| header_value("request_id", "X-Request-Id", id.trim_matches([' ', '\t'])))
            .transpose()?
            .flatten(),
        max_tokens: max_tokens.map(|raw| options::token_count("max_tokens", raw)).transpose()?,
        max_completion_tokens: max_completion_tokens
            .map(|raw| options::token_count("max_completion_tokens", raw))
            .transpose()?,
        temperature: temperature.map(|raw| options::number_in("temperature", raw, 0.0, 2.0)).transpose()?,
        top_p: top_p.map(|raw| options::number_in("top_p", raw, 0.0, 1.0)).transpose()?,
        seed: seed.map(options::seed).transpose()?,
        presence_penalty: presence_penalty
            .map(|raw| options::number_in("presence_penalty", raw, -2.0, 2.0))
            .transpose()?,
        frequency_penalty: frequency_penalty
            .map(|raw| options::number_in("frequency_penalty", raw, -2.0, 2.0))
            .transpose()?,
        stop: stop.map(options::stop).transpose()?,
        response_format: response_format.map(options::response_format).transpose()?,
        tools: tools.map(options::tools).transpose()?,
        tool_choice: tool_choice.map(options::tool_choice).transpose()?,
        user: string_field("user", user)?.filter(|user| !user.is_empty()),
        delivery: Delivery {
            format: format.map(options::format).transpose()?.unwrap_or_default(),
            reasoning: reasoning.map(|raw| options::boolean("reasoning", raw)).transpose()?.unwrap_or(false),
            usage_event: usage_event
                .map(|raw| options::boolean("usage_event", raw))
                .transpose()?
                .unwrap_or(false),
        },
        record_text: record_text
            .map(|raw| options::boolean("record_text", raw))
            .transpose()?
            .unwrap_or(false),
        test_pattern: string_field("test_pattern", test_pattern)?
            .map(|pattern| header_value("test_pattern", "X-Test-Pattern", pattern.trim_matches([' ', '\t'])))
            .transpose()?
            .flatten(),
        response_headers: Vec::new(),
        rejected_headers: Vec::new(),
        attachments: crate::attachments::decode_fields(images, image_paths, attachments)?,
        backend: string_field("backend", backend)?.filter(|name| !name.is_empty()),
        body: body.map(options::body).transpose()?,
        path: string_field("path", path)?.filter(|path| !path.is_empty()),
    };
    if handoff.messages.is_empty() {
        // `messages` is the whole conversation when given; `system` and `prompt`
        // are the short way to write one.
        if let Some(system) = system {
            handoff.messages.push(Message::new("system", Json::string(&system)));
        }
        if let Some(prompt) = prompt {
            handoff.messages.push(Message::new("user", Json::string(&prompt)));
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

/// `value` as it will go in header `name`: `None` when empty.
fn header_value(field: &'static str, name: &str, value: &str) -> Result<Option<String>, HandoffError> {
    if value.is_empty() {
        return Ok(None);
    }
    match http1::header_rejection(name, value) {
        None => Ok(Some(value.to_owned())),
        Some(reason) => Err(invalid(field, reason)),
    }
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
