//! Server-Sent Events: an incremental WHATWG event-stream decoder for what the
//! backend sends ([`SseDecoder`]), and the encoder for the events we send the client.
//!
//! The decoder follows HTML §9.2.6 exactly (BOM, CR/LF/CRLF split across reads,
//! comments, `event`, `id`, `retry`, multi-line `data`, lossy UTF-8) and bounds what
//! one peer can make us buffer ([`SseLimits`]). Its work is O(n) in the bytes fed,
//! however the input is split.

mod decode;
mod encode;
mod raw;

pub use decode::SseDecoder;
pub use encode::{
    encode_content, encode_data, encode_error, encode_indexed_content, encode_reasoning, encode_usage,
};
pub use raw::RawEvents;

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

/// Why the decoder gave up on the stream: a bound of [`SseLimits`] was passed.
/// Every later [`SseDecoder::decode`] returns the same error; the stream must
/// be failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SseError {
    /// A line grew past [`SseLimits::max_line`] before its terminator arrived.
    LineTooLong {
        /// The line limit in force, in bytes ([`SseLimits::max_line`], at most 1 GiB).
        limit: usize,
    },
    /// An event's data grew past [`SseLimits::max_event`].
    EventTooLarge {
        /// The event limit in force, in bytes ([`SseLimits::max_event`], at most 1 GiB).
        limit: usize,
    },
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

/// The last event of a successful stream.
pub const DONE: &[u8] = b"data: [DONE]\n\n";
/// Sent while the upstream is silent, so proxies do not time the connection out.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
