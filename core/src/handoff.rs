//! The handoff message: what mod_socket_handoff sends with the client's fd.
//!
//! The payload is the `X-Handoff-Data` JSON object (up to 64 KiB; a lone NUL when
//! PHP set none). Every field is optional and unknown fields are ignored.
//!
//! SKELETON: the API below is the contract; bodies are being written.

use serde_json::value::RawValue;

/// Largest handoff payload accepted, in bytes (the module's own limit).
pub const MAX_HANDOFF_BYTES: usize = 64 * 1024;

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
    pub model: Option<String>,
    /// `user_id` as text (JSON numbers are accepted and rendered in decimal).
    pub user_id: Option<String>,
    pub request_id: Option<String>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub test_pattern: Option<String>,
    /// Valid `response_headers`, in the order given.
    pub response_headers: Vec<(String, String)>,
    /// Headers dropped by validation, with why, for the log.
    pub rejected_headers: Vec<HeaderRejection>,
}

impl Handoff {
    /// The text of the last user message when it is a plain string ("" otherwise);
    /// the mock backend echoes it.
    pub fn last_user_text(&self) -> &str {
        todo!("last_user_text")
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
    /// The kernel cut the message (MSG_TRUNC): the runtime reports it with this.
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
            HandoffError::Truncated => write!(f, "handoff message was truncated"),
            HandoffError::NotJson(why) => write!(f, "handoff data is not valid JSON: {why}"),
            HandoffError::NotObject => write!(f, "handoff data is not a JSON object"),
            HandoffError::InvalidField { field, reason } => {
                write!(f, "handoff field `{field}` is invalid: {reason}")
            }
        }
    }
}

impl std::error::Error for HandoffError {}

/// Decodes a handoff payload. Trailing (and leading) NUL bytes are trimmed; what
/// remains empty means all defaults.
pub fn decode(data: &[u8]) -> Result<Handoff, HandoffError> {
    let _ = data;
    todo!("handoff decode")
}
