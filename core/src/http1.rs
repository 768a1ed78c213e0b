//! HTTP/1.1 framing: the client response head and error responses we write, the
//! backend request head, the backend response head and body we read, and the
//! request head of a client that talks to us directly (the development front).
//!
//! Writers build complete heads as [`Bytes`](bytes::Bytes) (the default client head is
//! static). Readers are incremental and never copy body bytes: the caller keeps its
//! read buffer, [`ResponseHeadParser`] remembers how far it has looked, and
//! [`BodyDecoder`] hands out slices of the caller's input.

mod body;
mod client;
mod head;
mod incoming;
mod request;

pub use body::{BodyDecoder, BodyEvent};
pub use client::{
    client_head, error_response, header_rejection, ErrorStatus, CLIENT_HEAD, MAX_HEADER_NAME_BYTES,
    MAX_HEADER_VALUE_BYTES,
};
pub use head::ResponseHeadParser;
pub use incoming::{parse_request_head, ParsedRequest, RequestHead};
pub use request::{request_head, BackendRequest};

/// Largest response head accepted from a backend, counting any 1xx heads before it.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyFraming {
    /// Exactly this many bytes (`Content-Length`; always 0 for a 204 or 304).
    ContentLength(u64),
    /// `Transfer-Encoding: chunked` as the last coding.
    Chunked,
    /// Until the connection closes (no length, not chunked).
    UntilClose,
}

/// A parsed backend response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The final status, 200..=999 (1xx heads are skipped, never returned).
    pub status: u16,
    /// How the body that follows the head is delimited.
    pub framing: BodyFraming,
    /// False when the backend said `Connection: close`, framed the body by close,
    /// or spoke HTTP/1.0 without keep-alive.
    pub keep_alive: bool,
}

/// Why a backend's HTTP/1.1 response head or body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpError {
    /// httparse rejected the head (or it was a head we cannot use, such as 101).
    BadHead(String),
    /// The head grew past [`MAX_RESPONSE_HEAD`].
    HeadTooLarge,
    /// Conflicting or invalid Content-Length / Transfer-Encoding.
    BadFraming(&'static str),
    /// Malformed chunk size line, chunk terminator or trailer.
    BadChunk(&'static str),
    /// The connection closed before the body's declared end.
    Truncated,
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::BadHead(why) => write!(f, "bad HTTP response head: {why}"),
            HttpError::HeadTooLarge => write!(f, "HTTP response head over {MAX_RESPONSE_HEAD} bytes"),
            HttpError::BadFraming(why) => write!(f, "bad HTTP body framing: {why}"),
            HttpError::BadChunk(why) => write!(f, "bad chunked encoding: {why}"),
            HttpError::Truncated => write!(f, "HTTP body ended before its declared length"),
        }
    }
}

impl std::error::Error for HttpError {}

/// Field-value bytes we will write: visible ASCII, SP, HTAB and obs-text (UTF-8);
/// no other control character (so never CR, LF, NUL or DEL).
fn is_clean_value(value: &str) -> bool {
    value.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}
