//! Small clients for the mock-llm tests: raw HTTP/1.1 over any stream, an h2 client,
//! a rustls client trusting the mock's CA, and an SSE body reader.
#![allow(dead_code)] // Each test file uses part of this module.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use handoff_bench::mockllm::{MockLlm, MockLlmConfig};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::{client::TlsStream, rustls, TlsConnector};

/// Bound for every wait in these tests (a hang fails instead of blocking CI).
pub const PATIENCE: Duration = Duration::from_secs(20);

pub const MODEL: &str = "gpt-4o-mini";

/// A fast mock: 1 ms between tokens, 5 tokens.
pub async fn start_mock(tls: bool) -> MockLlm {
    let config =
        MockLlmConfig { tls, token_delay: Duration::from_millis(1), tokens: 5, ..MockLlmConfig::default() };
    MockLlm::start(config).await.expect("mock-llm starts on loopback")
}

/// A chat request body as the daemon sends it.
pub fn chat_body(max_tokens: Option<u32>) -> String {
    let mut body = serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello"}],
        "stream": true,
    });
    if let Some(max) = max_tokens {
        body["max_tokens"] = max.into();
    }
    body.to_string()
}

/// One event of an OpenAI stream body.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Chunk(Value),
    Error(Value),
    Done,
}

/// Splits a body into `data:` events; every event must be `data: ...\n\n`.
pub fn parse_events(body: &[u8]) -> Vec<Event> {
    let text = std::str::from_utf8(body).expect("event stream is UTF-8");
    let mut events = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (event, after) = rest.split_once("\n\n").expect("every event ends with a blank line");
        let data = event.strip_prefix("data: ").expect("every event is one data line");
        assert!(!data.contains('\n'), "one line per event: {event:?}");
        events.push(if data == "[DONE]" {
            Event::Done
        } else {
            let value: Value = serde_json::from_str(data).expect("event data is JSON");
            if value.get("error").is_some() {
                Event::Error(value)
            } else {
                Event::Chunk(value)
            }
        });
        rest = after;
    }
    events
}

/// What a stream delivered, checked against OpenAI's chunk format.
#[derive(Debug)]
pub struct StreamSummary {
    pub content: String,
    pub content_chunks: usize,
    pub finish_reason: Option<String>,
    pub error: Option<Value>,
    pub done: bool,
}

/// Checks every chunk's shape (id, object, model, one choice), that the role chunk
/// comes first, and that nothing follows `[DONE]`; returns what the stream said.
pub fn summarize(events: &[Event]) -> StreamSummary {
    let mut summary = StreamSummary {
        content: String::new(),
        content_chunks: 0,
        finish_reason: None,
        error: None,
        done: false,
    };
    let mut id = None;
    for (index, event) in events.iter().enumerate() {
        assert!(!summary.done, "event after [DONE]: {event:?}");
        match event {
            Event::Done => summary.done = true,
            Event::Error(value) => {
                let error = &value["error"];
                assert!(error["message"].is_string() && error["type"].is_string(), "{value}");
                summary.error = Some(value.clone());
            }
            Event::Chunk(chunk) => {
                assert_eq!(chunk["object"], "chat.completion.chunk");
                assert_eq!(chunk["model"], MODEL);
                let chunk_id = chunk["id"].as_str().expect("id is a string");
                assert!(chunk_id.starts_with("chatcmpl-mock-"), "{chunk_id}");
                assert_eq!(*id.get_or_insert_with(|| chunk_id.to_owned()), chunk_id, "one id per stream");
                let choices = chunk["choices"].as_array().expect("choices");
                assert_eq!(choices.len(), 1);
                let choice = &choices[0];
                assert_eq!(choice["index"], 0);
                let delta = &choice["delta"];
                if index == 0 {
                    assert_eq!(delta["role"], "assistant", "the first chunk carries the role");
                } else {
                    assert!(delta.get("role").is_none(), "only the first chunk carries the role");
                }
                if let Some(content) = delta.get("content") {
                    summary.content.push_str(content.as_str().expect("content is a string"));
                    summary.content_chunks += 1;
                }
                if let Some(reason) = choice["finish_reason"].as_str() {
                    assert_eq!(delta, &serde_json::json!({}), "the finishing chunk has an empty delta");
                    summary.finish_reason = Some(reason.to_owned());
                } else {
                    assert!(choice["finish_reason"].is_null());
                }
            }
        }
    }
    assert!(matches!(events.first(), Some(Event::Chunk(_))), "a stream starts with the role chunk");
    summary
}

// ---------------------------------------------------------------- HTTP/1.1

/// How an HTTP/1.1 response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// The framing said the body was complete (last chunk or Content-Length).
    Complete,
    /// The connection ended (EOF or reset) inside the body.
    Cut,
}

#[derive(Debug)]
pub struct Http1Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub end: BodyEnd,
}

impl Http1Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Writes a POST with a Content-Length body and extra header lines.
pub async fn write_http1_request<S: AsyncWrite + Unpin>(
    io: &mut S,
    path: &str,
    extra: &[(&str, &str)],
    body: &str,
) {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         authorization: Bearer sk-test\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in extra {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    io.write_all(request.as_bytes()).await.expect("request written");
}

/// Reads one response (head, then a chunked or Content-Length body); bytes after it
/// stay in `buf` for the next response on a kept-alive connection.
pub async fn read_http1_response<S: AsyncRead + Unpin>(io: &mut S, buf: &mut BytesMut) -> Http1Response {
    tokio::time::timeout(PATIENCE, read_http1_response_unbounded(io, buf))
        .await
        .expect("response within patience")
}

async fn read_more<S: AsyncRead + Unpin>(io: &mut S, buf: &mut BytesMut) -> bool {
    buf.reserve(4096);
    matches!(io.read_buf(buf).await, Ok(n) if n > 0)
}

async fn read_http1_response_unbounded<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
) -> Http1Response {
    let (status, headers) = loop {
        let mut header_slots = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut header_slots);
        if let httparse::Status::Complete(len) = response.parse(buf).expect("valid response head") {
            let status = response.code.expect("status code");
            let headers: Vec<(String, String)> = response
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                .collect();
            buf.advance(len);
            break (status, headers);
        }
        assert!(read_more(io, buf).await, "connection ended inside the response head");
    };
    let mut response = Http1Response { status, headers, body: Bytes::new(), end: BodyEnd::Complete };
    if response.header("transfer-encoding") == Some("chunked") {
        let mut body = BytesMut::new();
        loop {
            // Chunk size line, data, CRLF; "0\r\n\r\n" ends the body.
            let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else {
                if !read_more(io, buf).await {
                    response.end = BodyEnd::Cut;
                    break;
                }
                continue;
            };
            let size_text = std::str::from_utf8(&buf[..line_end]).expect("chunk size is ASCII");
            let size = usize::from_str_radix(size_text, 16).expect("chunk size is hex");
            let needed = line_end + 2 + size + 2;
            if buf.len() < needed {
                if !read_more(io, buf).await {
                    response.end = BodyEnd::Cut;
                    break;
                }
                continue;
            }
            assert_eq!(&buf[needed - 2..needed], b"\r\n", "chunk data ends with CRLF");
            body.extend_from_slice(&buf[line_end + 2..needed - 2]);
            buf.advance(needed);
            if size == 0 {
                break;
            }
        }
        response.body = body.freeze();
    } else {
        let length: usize =
            response.header("content-length").expect("content-length").parse().expect("number");
        while buf.len() < length {
            if !read_more(io, buf).await {
                response.end = BodyEnd::Cut;
                break;
            }
        }
        response.body = buf.split_to(length.min(buf.len())).freeze();
    }
    response
}

/// Reads until the peer closes; true when it closed with a reset rather than a FIN.
pub async fn read_until_closed<S: AsyncRead + Unpin>(io: &mut S) -> std::io::Result<usize> {
    let mut sink = [0u8; 4096];
    let mut total = 0;
    loop {
        match tokio::time::timeout(PATIENCE, io.read(&mut sink)).await.expect("close within patience")? {
            0 => return Ok(total),
            n => total += n,
        }
    }
}

// ---------------------------------------------------------------- HTTP/2

pub struct H2Response {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// `Some(reason)` when the stream ended with RST_STREAM instead of END_STREAM.
    pub reset: Option<h2::Reason>,
}

/// Does the h2 handshake over `io` and drives the connection on a task.
pub async fn h2_connect<S>(io: S) -> h2::client::SendRequest<Bytes>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = h2::client::handshake(io).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send
}

/// Starts a POST to /v1/chat/completions with the given pattern header.
pub async fn h2_post(
    send: &mut h2::client::SendRequest<Bytes>,
    authority: &str,
    scheme: &str,
    pattern: Option<&str>,
    body: &str,
) -> h2::client::ResponseFuture {
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("{scheme}://{authority}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-test");
    if let Some(pattern) = pattern {
        request = request.header("x-test-pattern", pattern);
    }
    let request = request.body(()).expect("request");
    let mut ready = send.clone().ready().await.expect("connection ready for a stream");
    let (response, mut stream) = ready.send_request(request, false).expect("request sent");
    stream.send_data(Bytes::copy_from_slice(body.as_bytes()), true).expect("body sent");
    *send = ready;
    response
}

/// Reads a whole response, noting a reset instead of failing on it.
pub async fn h2_read(response: h2::client::ResponseFuture) -> H2Response {
    tokio::time::timeout(PATIENCE, async {
        let response = response.await.expect("response head");
        let (parts, mut body) = response.into_parts();
        let mut collected = BytesMut::new();
        let mut reset = None;
        while let Some(data) = body.data().await {
            match data {
                Ok(data) => {
                    let _ = body.flow_control().release_capacity(data.len());
                    collected.extend_from_slice(&data);
                }
                Err(e) => {
                    reset = Some(e.reason().expect("a stream error carries a reason"));
                    break;
                }
            }
        }
        H2Response { status: parts.status.as_u16(), headers: parts.headers, body: collected.freeze(), reset }
    })
    .await
    .expect("response within patience")
}

// ---------------------------------------------------------------- TLS

/// A TLS client that trusts only the mock's CA and offers `alpn`.
pub async fn tls_connect(
    addr: std::net::SocketAddr,
    server_name: &str,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM parses")).expect("CA accepted as a root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(server_name.to_owned()).expect("server name");
    TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("TLS handshake with the mock's CA")
}
