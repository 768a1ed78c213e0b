//! HTTP/1.1 framing: the client response head and error responses we write, the
//! backend request head, and the backend response head and body we read.
//!
//! SKELETON: the API below is the contract; bodies are being written.

use bytes::Bytes;

/// The default client response head, written as soon as a handoff is accepted.
pub const CLIENT_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
Content-Type: text/event-stream\r\n\
Cache-Control: no-cache\r\n\
Connection: close\r\n\
X-Accel-Buffering: no\r\n\
\r\n";

/// The client response head with the handoff's validated extra headers appended in
/// order; the static [`CLIENT_HEAD`] (no allocation) when there are none.
pub fn client_head(extra_headers: &[(String, String)]) -> Bytes {
    let _ = extra_headers;
    todo!("client_head")
}

/// Why a `response_headers` entry may not be sent; `None` when it may.
/// Rejects: names that are not RFC 9110 tokens, values with control characters
/// (CR, LF, NUL, ...), hop-by-hop and framing headers (Connection, Keep-Alive,
/// Transfer-Encoding, Content-Length, Upgrade, TE, Trailer, Proxy-*), the headers
/// that define the SSE response (Content-Type, Cache-Control, X-Accel-Buffering),
/// and over-long names or values.
pub fn header_rejection(name: &str, value: &str) -> Option<&'static str> {
    let _ = (name, value);
    todo!("header_rejection")
}

/// Error statuses the daemon answers with before the head is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStatus {
    BadRequest,
    BadGateway,
    ServiceUnavailable,
    GatewayTimeout,
}

impl ErrorStatus {
    pub fn code(self) -> u16 {
        match self {
            ErrorStatus::BadRequest => 400,
            ErrorStatus::BadGateway => 502,
            ErrorStatus::ServiceUnavailable => 503,
            ErrorStatus::GatewayTimeout => 504,
        }
    }
}

/// A complete error response: status line, `Content-Type: application/json`,
/// `Content-Length`, `Connection: close`, `Retry-After` when given, and the body
/// `{"error":{"message":..,"type":..,"code":..}}`.
pub fn error_response(
    status: ErrorStatus,
    message: &str,
    error_type: &str,
    code: Option<&str>,
    retry_after_secs: Option<u32>,
) -> Bytes {
    let _ = (status, message, error_type, code, retry_after_secs);
    todo!("error_response")
}

/// What the backend request head needs.
#[derive(Debug, Clone, Copy)]
pub struct BackendRequest<'a> {
    /// `host` or `host:port` as it goes in the Host header.
    pub authority: &'a str,
    /// Absolute path, e.g. `/v1/chat/completions`.
    pub path: &'a str,
    pub api_key: Option<&'a str>,
    pub test_pattern: Option<&'a str>,
    pub content_length: usize,
}

/// `POST {path} HTTP/1.1` with Host, Content-Type: application/json,
/// Content-Length, Accept: text/event-stream, Authorization (when a key is set),
/// X-Test-Pattern (when given) and Connection: keep-alive. Values with CR/LF are
/// never written (the caller validated them; this drops the header defensively).
pub fn request_head(request: &BackendRequest<'_>) -> Bytes {
    let _ = request;
    todo!("request_head")
}

/// Largest response head accepted from a backend.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    ContentLength(u64),
    Chunked,
    /// Until the connection closes (no length, not chunked).
    UntilClose,
}

/// A parsed backend response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub framing: BodyFraming,
    /// False when the backend said `Connection: close`, framed the body by close,
    /// or spoke HTTP/1.0 without keep-alive.
    pub keep_alive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpError {
    /// httparse rejected the head.
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

/// Incremental response head parser. Feed it the whole buffer read so far (the
/// caller keeps it); it remembers how far it has looked for the end of the head,
/// so trickled input is not rescanned from byte 0.
#[derive(Debug, Default)]
pub struct ResponseHeadParser {
    scanned: usize,
}

impl ResponseHeadParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// `Ok(None)`: need more bytes. `Ok(Some((head, len)))`: the head was the first
    /// `len` bytes of `buf`. A 1xx informational head is skipped (its bytes are
    /// counted in the next call's `len`).
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HttpError> {
        let _ = (buf, self.scanned);
        todo!("parse response head")
    }
}

/// What the body decoder found in the bytes given to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEvent<'a> {
    /// Body bytes (a slice of the input).
    Data(&'a [u8]),
    /// Everything given was consumed; give more.
    NeedData,
    /// The body is complete; bytes after it belong to the next response.
    End,
}

/// Incremental body decoder for one of the three framings.
#[derive(Debug)]
pub struct BodyDecoder {
    framing: BodyFraming,
}

impl BodyDecoder {
    pub fn new(framing: BodyFraming) -> Self {
        BodyDecoder { framing }
    }

    /// Consumes a prefix of `input`, returning its length and what it held. Call
    /// again with the rest until `NeedData` or `End`. Chunk extensions and trailers
    /// are skipped; every split of the input gives the same data.
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<(usize, BodyEvent<'a>), HttpError> {
        let _ = (input, self.framing);
        todo!("body decode")
    }

    /// The connection closed: `Ok` when that ends the body cleanly (until-close
    /// framing, or already at `End`), `Err(Truncated)` otherwise.
    pub fn finish(&mut self) -> Result<(), HttpError> {
        todo!("body finish")
    }
}
