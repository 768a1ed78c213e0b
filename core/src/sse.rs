//! Server-Sent Events: an incremental WHATWG event-stream decoder for what the
//! backend sends, and the encoder for the events we send the client.
//!
//! SKELETON: the API below is the contract; bodies are being written.

use bytes::BytesMut;

/// Bounds on what one peer can make us buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseLimits {
    /// Longest line (without its terminator) accepted, in bytes.
    pub max_line: usize,
    /// Largest `data` buffer of one event, in bytes.
    pub max_event: usize,
}

impl Default for SseLimits {
    fn default() -> Self {
        SseLimits { max_line: 256 * 1024, max_event: 1024 * 1024 }
    }
}

/// One dispatched event. Borrows the decoder (and possibly the input): valid until
/// the next call to [`SseDecoder::decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event` field; empty when the event had none ("message").
    pub event_type: &'a str,
    /// The joined `data` lines, without the final LF.
    pub data: &'a str,
    /// The last event id seen so far on this stream (WHATWG: persists across events).
    pub last_event_id: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SseError {
    /// A line grew past `SseLimits::max_line` before its terminator arrived.
    LineTooLong { limit: usize },
    /// An event's data grew past `SseLimits::max_event`.
    EventTooLarge { limit: usize },
}

impl std::fmt::Display for SseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SseError::LineTooLong { limit } => write!(f, "SSE line longer than {limit} bytes"),
            SseError::EventTooLarge { limit } => write!(f, "SSE event larger than {limit} bytes"),
        }
    }
}

impl std::error::Error for SseError {}

/// Incremental event-stream decoder (WHATWG HTML §9.2.6). Feed it the body bytes
/// as they arrive, split anywhere.
#[derive(Debug)]
pub struct SseDecoder {
    limits: SseLimits,
}

impl SseDecoder {
    pub fn new(limits: SseLimits) -> Self {
        SseDecoder { limits }
    }

    /// Consumes a prefix of `input`. Returns how many bytes were consumed and, when
    /// that prefix completed an event, the event. Call again with the rest of the
    /// input until it returns `(input.len(), None)`: every byte is either consumed
    /// into the decoder's state or part of a returned event, never both, so total
    /// work stays O(n) however the input is split. After an error the decoder is
    /// unusable (the stream must be failed).
    pub fn decode<'a>(&'a mut self, input: &'a [u8]) -> Result<(usize, Option<SseEvent<'a>>), SseError> {
        let _ = (input, self.limits);
        todo!("sse decode")
    }

    /// The stream ended. An incomplete event is discarded (WHATWG); returns true if
    /// there was one (useful to tell a truncated upstream from a clean one).
    pub fn finish(&mut self) -> bool {
        todo!("sse finish")
    }

    /// Bytes of heap this decoder holds (for the per-stream memory bound).
    pub fn buffered_capacity(&self) -> usize {
        todo!("sse buffered_capacity")
    }
}

/// The last event of a successful stream.
pub const DONE: &[u8] = b"data: [DONE]\n\n";
/// Sent while the upstream is silent, so proxies do not time the connection out.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Appends `data: {"content":"..."}\n\n`.
pub fn encode_content(out: &mut BytesMut, content: &str) {
    let _ = (out, content);
    todo!("encode_content")
}

/// Appends `data: {"content":"...","index":N}\n\n` (the mock backend's events).
pub fn encode_indexed_content(out: &mut BytesMut, content: &str, index: u32) {
    let _ = (out, content, index);
    todo!("encode_indexed_content")
}

/// Appends `event: error\ndata: {"error":{"message":..,"type":..,"code":..}}\n\n`.
pub fn encode_error(out: &mut BytesMut, message: &str, error_type: &str, code: Option<&str>) {
    let _ = (out, message, error_type, code);
    todo!("encode_error")
}
