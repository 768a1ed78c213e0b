//! HTTP/1.1 connections, by hand over httparse: keep-alive, `Content-Length` request
//! bodies, chunked event-stream responses. Between chunks the connection reads, so a
//! client that closes is noticed while the stream waits, not at its next write.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::recorder::{ConnectionGuard, Protocol, RecordedRequest, StreamOutcome};
use super::request::{decide, error_reply, MAX_REQUEST_BODY};
use super::server::Shared;
use super::stream::{play, ClientGone, ResponseSink};

/// Request heads above this get `431`.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;
/// Bytes a client may pipeline behind a streaming request before the mock stops reading
/// (and so stops noticing a close) until the stream ends.
const MAX_PIPELINED: usize = 64 * 1024;
const READ_CHUNK: usize = 4096;

/// A transport that can be closed with a TCP reset instead of a FIN.
pub(crate) trait AbruptClose {
    /// Makes the coming close (drop) send RST.
    fn set_abrupt_close(&self);
}

impl AbruptClose for TcpStream {
    fn set_abrupt_close(&self) {
        // Best effort: without it the close is a FIN, still abrupt for a chunked body.
        let _ = self.set_zero_linger();
    }
}

impl AbruptClose for tokio_rustls::server::TlsStream<TcpStream> {
    fn set_abrupt_close(&self) {
        self.get_ref().0.set_abrupt_close();
    }
}

/// Serves HTTP/1.1 requests on one connection; `already_read` holds bytes consumed
/// while detecting the protocol.
pub(crate) async fn serve<T>(
    io: T,
    already_read: BytesMut,
    protocol: Protocol,
    shared: Arc<Shared>,
    connection: ConnectionGuard,
) where
    T: AsyncRead + AsyncWrite + AbruptClose + Unpin,
{
    let mut conn = Http1Connection { io, read_buf: already_read, out: Vec::new(), keep_alive: true };
    loop {
        let head = match conn.read_head(connection.recorder().is_recording_requests()).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(HeadError::Closed) => return,
            Err(HeadError::Reject(status)) => {
                conn.keep_alive = false;
                let reply = error_reply(status, "mock-llm: malformed request head", "invalid_request_head");
                let mut sink = Http1Sink { conn: &mut conn };
                let _ = play(reply, &mut sink).await;
                return;
            }
        };
        let guard = connection.open_stream();
        conn.keep_alive = head.version == 1 && !head.connection_close;
        let body = match conn.read_body(&head).await {
            Ok(BodyRead::Complete(body)) => body,
            Ok(BodyRead::Rejected(status, message)) => {
                conn.keep_alive = false;
                let reply = error_reply(status, message, "invalid_request");
                let outcome = play(reply, &mut Http1Sink { conn: &mut conn }).await;
                guard.finish(outcome);
                return;
            }
            Err(ClientGone) => return guard.finish(StreamOutcome::Cancelled),
        };
        let recorder = connection.recorder();
        if recorder.is_recording_requests() {
            let kept = body.len().min(recorder.body_capacity());
            recorder.record_request(RecordedRequest {
                protocol,
                method: head.method.clone(),
                path: head.path.clone(),
                headers: head.headers,
                body: body.slice(..kept),
                body_len: body.len(),
            });
        }
        let reply =
            decide(shared.defaults, guard.number(), &head.method, &head.path, head.pattern.as_deref(), &body);
        let outcome = play(reply, &mut Http1Sink { conn: &mut conn }).await;
        guard.finish(outcome);
        match outcome {
            StreamOutcome::Completed if conn.keep_alive => {}
            StreamOutcome::Completed => {
                let _ = conn.io.shutdown().await;
                return;
            }
            StreamOutcome::Cancelled => return,
            StreamOutcome::Reset => {
                conn.io.set_abrupt_close();
                return;
            }
        }
    }
}

struct Http1Connection<T> {
    io: T,
    read_buf: BytesMut,
    /// Reused for every write on this connection.
    out: Vec<u8>,
    keep_alive: bool,
}

/// What the mock keeps of a request head.
struct RequestHead {
    method: String,
    path: String,
    version: u8,
    /// `Err` when a value is not a number or repeated values disagree.
    content_length: Result<Option<usize>, ()>,
    has_transfer_encoding: bool,
    connection_close: bool,
    expects_continue: bool,
    pattern: Option<String>,
    /// Every header, only when the recorder keeps requests.
    headers: Vec<(String, String)>,
}

enum HeadError {
    /// The client closed mid-head or the read failed.
    Closed,
    /// Answer this status and close.
    Reject(u16),
}

enum BodyRead {
    Complete(Bytes),
    Rejected(u16, &'static str),
}

impl<T: AsyncRead + AsyncWrite + Unpin> Http1Connection<T> {
    /// Reads one request head; `None` at a clean end of the connection between requests.
    async fn read_head(&mut self, record_headers: bool) -> Result<Option<RequestHead>, HeadError> {
        loop {
            if !self.read_buf.is_empty() {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut request = httparse::Request::new(&mut headers);
                match request.parse(&self.read_buf) {
                    Ok(httparse::Status::Complete(len)) => {
                        let head = RequestHead::new(&request, record_headers);
                        self.read_buf.advance(len);
                        return Ok(Some(head));
                    }
                    Ok(httparse::Status::Partial) if self.read_buf.len() > MAX_HEAD => {
                        return Err(HeadError::Reject(431));
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(httparse::Error::TooManyHeaders) => return Err(HeadError::Reject(431)),
                    Err(_) => return Err(HeadError::Reject(400)),
                }
            }
            match self.read_more().await {
                Ok(0) if self.read_buf.is_empty() => return Ok(None),
                Ok(0) | Err(_) => return Err(HeadError::Closed),
                Ok(_) => {}
            }
        }
    }

    async fn read_body(&mut self, head: &RequestHead) -> Result<BodyRead, ClientGone> {
        if head.version != 1 {
            return Ok(BodyRead::Rejected(505, "mock-llm speaks HTTP/1.1 only"));
        }
        if head.has_transfer_encoding {
            return Ok(BodyRead::Rejected(501, "mock-llm takes request bodies with Content-Length only"));
        }
        let Ok(length) = head.content_length.map(|length| length.unwrap_or(0)) else {
            return Ok(BodyRead::Rejected(400, "mock-llm: invalid Content-Length"));
        };
        if length > MAX_REQUEST_BODY {
            return Ok(BodyRead::Rejected(413, "mock-llm: request body over the limit"));
        }
        if head.expects_continue && self.read_buf.len() < length {
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        while self.read_buf.len() < length {
            match self.read_more().await {
                Ok(0) | Err(_) => return Err(ClientGone),
                Ok(_) => {}
            }
        }
        Ok(BodyRead::Complete(self.read_buf.split_to(length).freeze()))
    }

    async fn read_more(&mut self) -> std::io::Result<usize> {
        self.read_buf.reserve(READ_CHUNK);
        self.io.read_buf(&mut self.read_buf).await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ClientGone> {
        self.io.write_all(bytes).await.map_err(|_| ClientGone)?;
        // TLS buffers records until flushed.
        self.io.flush().await.map_err(|_| ClientGone)
    }

    async fn write_out(&mut self) -> Result<(), ClientGone> {
        let out = std::mem::take(&mut self.out);
        let written = self.write(&out).await;
        self.out = out;
        self.out.clear();
        written
    }

    fn put_status_line(&mut self, status: u16) {
        let reason =
            http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
        self.out.clear();
        self.out.extend_from_slice(b"HTTP/1.1 ");
        self.out.extend_from_slice(status.to_string().as_bytes());
        self.out.push(b' ');
        self.out.extend_from_slice(reason.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        if !self.keep_alive {
            self.out.extend_from_slice(b"connection: close\r\n");
        }
    }
}

impl RequestHead {
    fn new(request: &httparse::Request<'_, '_>, record_headers: bool) -> RequestHead {
        let mut head = RequestHead {
            method: request.method.unwrap_or("").to_owned(),
            path: request.path.unwrap_or("").to_owned(),
            version: request.version.unwrap_or(1),
            content_length: Ok(None),
            has_transfer_encoding: false,
            connection_close: false,
            expects_continue: false,
            pattern: None,
            headers: Vec::new(),
        };
        for header in request.headers.iter() {
            let (name, value) = (header.name, header.value);
            if name.eq_ignore_ascii_case("content-length") {
                let parsed = std::str::from_utf8(value).ok().and_then(|v| v.trim().parse::<usize>().ok());
                // Repeated Content-Length headers must agree (RFC 9112 section 6.3).
                head.content_length = match (head.content_length, parsed) {
                    (Ok(None), Some(n)) => Ok(Some(n)),
                    (Ok(Some(previous)), Some(n)) if previous == n => Ok(Some(n)),
                    _ => Err(()),
                };
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                head.has_transfer_encoding = true;
            } else if name.eq_ignore_ascii_case("connection") {
                head.connection_close |= has_token(value, "close");
            } else if name.eq_ignore_ascii_case("expect") {
                head.expects_continue |= value.eq_ignore_ascii_case(b"100-continue");
            } else if name.eq_ignore_ascii_case("x-test-pattern") {
                head.pattern = std::str::from_utf8(value).ok().map(str::to_owned);
            }
            if record_headers {
                head.headers.push((name.to_ascii_lowercase(), String::from_utf8_lossy(value).into_owned()));
            }
        }
        head
    }
}

fn has_token(value: &[u8], token: &str) -> bool {
    value.split(|b| *b == b',').any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Appends `n` in lowercase hex (chunk sizes).
fn put_hex(out: &mut Vec<u8>, n: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut shift = (usize::BITS - 4) as usize;
    while shift > 0 && (n >> shift) & 0xf == 0 {
        shift -= 4;
    }
    loop {
        out.push(DIGITS[(n >> shift) & 0xf]);
        if shift == 0 {
            break;
        }
        shift -= 4;
    }
}

struct Http1Sink<'c, T> {
    conn: &'c mut Http1Connection<T>,
}

impl<T: AsyncRead + AsyncWrite + AbruptClose + Unpin> ResponseSink for Http1Sink<'_, T> {
    async fn idle_until(&mut self, deadline: Instant) -> Result<(), ClientGone> {
        let sleep = tokio::time::sleep_until(deadline);
        tokio::pin!(sleep);
        let conn = &mut *self.conn;
        loop {
            if conn.read_buf.len() >= MAX_PIPELINED {
                sleep.as_mut().await;
                return Ok(());
            }
            conn.read_buf.reserve(READ_CHUNK);
            tokio::select! {
                _ = sleep.as_mut() => return Ok(()),
                read = conn.io.read_buf(&mut conn.read_buf) => match read {
                    // A pipelined request: kept for after this response.
                    Ok(n) if n > 0 => {}
                    _ => return Err(ClientGone),
                },
            }
        }
    }

    async fn send_error(&mut self, status: u16, body: Bytes) -> Result<(), ClientGone> {
        let conn = &mut *self.conn;
        conn.put_status_line(status);
        conn.out.extend_from_slice(b"content-type: application/json\r\ncontent-length: ");
        conn.out.extend_from_slice(body.len().to_string().as_bytes());
        conn.out.extend_from_slice(b"\r\n");
        if status == 429 || status == 503 {
            conn.out.extend_from_slice(b"retry-after: 1\r\n");
        }
        conn.out.extend_from_slice(b"\r\n");
        conn.out.extend_from_slice(&body);
        conn.write_out().await
    }

    async fn send_stream_head(&mut self) -> Result<(), ClientGone> {
        let conn = &mut *self.conn;
        conn.put_status_line(200);
        conn.out.extend_from_slice(
            b"content-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n",
        );
        conn.write_out().await
    }

    async fn send_event(&mut self, event: Bytes, is_last: bool) -> Result<(), ClientGone> {
        let conn = &mut *self.conn;
        conn.out.clear();
        put_hex(&mut conn.out, event.len());
        conn.out.extend_from_slice(b"\r\n");
        conn.out.extend_from_slice(&event);
        conn.out.extend_from_slice(b"\r\n");
        if is_last {
            conn.out.extend_from_slice(b"0\r\n\r\n");
        }
        conn.write_out().await
    }

    async fn end(&mut self) -> Result<(), ClientGone> {
        self.conn.write(b"0\r\n\r\n").await
    }

    fn reset(&mut self) {
        self.conn.io.set_abrupt_close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_lowercase_hex() {
        for (n, hex) in [(0, "0"), (9, "9"), (10, "a"), (255, "ff"), (4096, "1000"), (0x1f2e3, "1f2e3")] {
            let mut out = Vec::new();
            put_hex(&mut out, n);
            assert_eq!(out, hex.as_bytes(), "{n}");
        }
    }

    #[test]
    fn connection_header_tokens_are_matched_whole() {
        assert!(has_token(b"keep-alive, Close", "close"));
        assert!(!has_token(b"closed", "close"));
    }
}
