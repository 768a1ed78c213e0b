//! OpenAI chat completions: the streaming request body, and the `data:` payloads
//! of the streamed response (`chat.completion.chunk` objects, `[DONE]`, errors).
//!
//! SKELETON: the API below is the contract; bodies are being written.

use std::borrow::Cow;

use bytes::Bytes;

use crate::handoff::Handoff;

/// The JSON body of `POST {base}/chat/completions`:
/// `{"model":..,"messages":[..],"stream":true}` plus `max_tokens` and
/// `temperature` when the handoff has them. `model` falls back to `default_model`.
pub fn request_body(handoff: &Handoff, default_model: &str) -> Bytes {
    let _ = (handoff, default_model);
    todo!("request_body")
}

/// What one SSE `data` payload of the upstream means.
#[derive(Debug, Clone, PartialEq)]
pub enum ChunkEvent<'a> {
    /// A `chat.completion.chunk`. Role-only first chunks, usage chunks with empty
    /// `choices`, and `tool_calls` deltas come out with `content: None`.
    Delta {
        /// `choices[0].delta.content`, when present and non-null.
        content: Option<Cow<'a, str>>,
        /// `choices[0].finish_reason`, when present and non-null.
        finish_reason: Option<Cow<'a, str>>,
    },
    /// The literal `[DONE]` sentinel.
    Done,
    /// An `{"error":{...}}` object in the stream.
    Error(UpstreamError),
}

/// An error the upstream reported, in OpenAI's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError {
    pub message: String,
    pub error_type: String,
    pub code: Option<String>,
}

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

/// Interprets one SSE event's `data` from the upstream.
pub fn parse_chunk(data: &str) -> Result<ChunkEvent<'_>, ChunkError> {
    let _ = data;
    todo!("parse_chunk")
}

/// The error to report for a non-2xx upstream response, from its status and (up
/// to a bound) its body: the body's OpenAI error object when it has one, else a
/// message naming the status.
pub fn error_from_status(status: u16, body: &[u8]) -> UpstreamError {
    let _ = (status, body);
    todo!("error_from_status")
}
