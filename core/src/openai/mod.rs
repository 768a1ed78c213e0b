//! OpenAI chat completions: the streaming request body, and the `data:` payloads
//! of the streamed response (`chat.completion.chunk` objects, `[DONE]`, errors).
//!
//! Parsing a typical content chunk is one serde pass that borrows the content from
//! the payload (no allocation unless the text has JSON escapes) and skips every
//! field it does not need unread.

mod chunk;
mod request;
mod usage;

pub use chunk::{error_from_status, parse_chunk};
pub use request::{request_body, RequestDefaults};
pub use usage::Usage;

use std::borrow::Cow;

/// What one SSE `data` payload of the upstream means.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ChunkEvent<'a> {
    /// A `chat.completion.chunk`. Role-only first chunks, usage chunks with empty
    /// `choices`, and `tool_calls` deltas come out with `content: None`.
    Delta {
        /// `choices[0].delta.content`, when present and non-null.
        content: Option<Cow<'a, str>>,
        /// `choices[0].delta.reasoning_content` (reasoning models), when present
        /// and non-null.
        reasoning: Option<Cow<'a, str>>,
        /// `choices[0].finish_reason`, when present, non-null and non-empty (some
        /// compatible servers send `""` on every chunk before the last).
        finish_reason: Option<Cow<'a, str>>,
        /// `usage` (with `stream_options.include_usage`, the last chunk before
        /// `[DONE]` carries it, usually with empty `choices`). A usage object of
        /// an unexpected shape reads as `None` rather than failing the stream.
        usage: Option<Usage>,
        /// The chunk's `id` (the same on every chunk of one response).
        id: Option<Cow<'a, str>>,
        /// The chunk's `model`: the model that answered.
        model: Option<Cow<'a, str>>,
    },
    /// The literal `[DONE]` sentinel.
    Done,
    /// An `{"error":{...}}` object in the stream (also `{"error":"text"}`, and the
    /// flat `{"object":"error","message":..}` some compatible servers send).
    Error(UpstreamError),
}

/// An error the upstream reported, in OpenAI's shape, with anything key-like in
/// its text already redacted, so it may be forwarded to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError {
    /// `error.message`; a fixed text when the upstream gave none.
    pub message: String,
    /// `error.type`; `upstream_error` when the upstream gave none.
    pub error_type: String,
    /// `error.code` (a number is rendered as text), when given.
    pub code: Option<String>,
}

/// Why a `data` payload could not be read as a chunk: the stream ends with an
/// `upstream_protocol` error event for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkError {
    /// The payload is not JSON (the message says where it broke).
    NotJson(String),
    /// JSON, but neither a chunk object, an error object nor `[DONE]`.
    UnexpectedShape(&'static str),
}

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkError::NotJson(why) => write!(f, "upstream chunk is not JSON: {why}"),
            ChunkError::UnexpectedShape(what) => write!(f, "upstream chunk has an unexpected shape: {what}"),
        }
    }
}

impl std::error::Error for ChunkError {}
