//! The backend request head (HTTP/1.1 transport only; HTTP/2 builds its own).

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

use super::client::put_header;
use super::is_clean_value;

/// What the backend request head needs.
#[derive(Debug, Clone, Copy)]
pub struct BackendRequest<'a> {
    /// `host` or `host:port` as it goes in the Host header.
    pub authority: &'a str,
    /// Absolute path, e.g. `/v1/chat/completions`.
    pub path: &'a str,
    /// Sent as `Authorization: Bearer {key}`; no header when `None`.
    pub api_key: Option<&'a str>,
    /// The handoff's `test_pattern`, sent as `X-Test-Pattern` (mock-llm's
    /// behaviours, for tests).
    pub test_pattern: Option<&'a str>,
    /// The handoff's `request_id`, sent as `X-Request-Id`.
    pub request_id: Option<&'a str>,
    /// The JSON body's length in bytes, sent as `Content-Length`.
    pub content_length: usize,
    /// The backend's configured headers, written after the daemon's own (a pair
    /// with CR, LF or another control character is dropped).
    pub extra_headers: &'a [(String, String)],
}

/// `POST {path} HTTP/1.1` with Host, Content-Type: application/json,
/// Content-Length, Accept: text/event-stream, Authorization (when a key is set),
/// X-Test-Pattern and X-Request-Id (when given) and Connection: keep-alive. Values with CR/LF are
/// never written (the caller validated them; this drops the header defensively).
/// Likewise a path byte that would break the request line (a control character or
/// space) is percent-encoded, as a URL parser would have done.
pub fn request_head(request: &BackendRequest<'_>) -> Bytes {
    let mut out = BytesMut::with_capacity(256 + request.path.len());
    out.put_slice(b"POST ");
    if request.path.is_empty() {
        out.put_u8(b'/');
    }
    for &b in request.path.as_bytes() {
        if b <= b' ' || b == 0x7f {
            let _ = write!(out, "%{b:02X}");
        } else {
            out.put_u8(b);
        }
    }
    out.put_slice(b" HTTP/1.1\r\n");
    if is_clean_value(request.authority) {
        put_header(&mut out, "Host", request.authority);
    }
    out.put_slice(b"Content-Type: application/json\r\n");
    // Writing into a BytesMut cannot fail.
    let _ = write!(out, "Content-Length: {}\r\n", request.content_length);
    out.put_slice(b"Accept: text/event-stream\r\n");
    if let Some(key) = request.api_key.filter(|key| is_clean_value(key)) {
        out.put_slice(b"Authorization: Bearer ");
        out.put_slice(key.as_bytes());
        out.put_slice(b"\r\n");
    }
    if let Some(pattern) = request.test_pattern.filter(|pattern| is_clean_value(pattern)) {
        put_header(&mut out, "X-Test-Pattern", pattern);
    }
    if let Some(id) = request.request_id.filter(|id| is_clean_value(id)) {
        put_header(&mut out, "X-Request-Id", id);
    }
    for (name, value) in request.extra_headers {
        if is_clean_value(name) && !name.contains(':') && is_clean_value(value) {
            put_header(&mut out, name, value);
        }
    }
    out.put_slice(b"Connection: keep-alive\r\n\r\n");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>() -> BackendRequest<'a> {
        BackendRequest {
            authority: "api.example.com:8443",
            path: "/v1/chat/completions",
            api_key: Some("sk-test"),
            test_pattern: Some("slow-start"),
            request_id: Some("req-42"),
            content_length: 123,
            extra_headers: &[],
        }
    }

    fn text(head: &Bytes) -> String {
        String::from_utf8(head.to_vec()).unwrap()
    }

    #[test]
    fn full_request_head() {
        assert_eq!(
            text(&request_head(&request())),
            "POST /v1/chat/completions HTTP/1.1\r\n\
             Host: api.example.com:8443\r\n\
             Content-Type: application/json\r\n\
             Content-Length: 123\r\n\
             Accept: text/event-stream\r\n\
             Authorization: Bearer sk-test\r\n\
             X-Test-Pattern: slow-start\r\n\
             X-Request-Id: req-42\r\n\
             Connection: keep-alive\r\n\
             \r\n"
        );
    }

    #[test]
    fn optional_headers_are_left_out_when_absent() {
        let head = text(&request_head(&BackendRequest {
            api_key: None,
            test_pattern: None,
            request_id: None,
            ..request()
        }));
        assert!(!head.contains("Authorization"));
        assert!(!head.contains("X-Test-Pattern"));
        assert!(!head.contains("X-Request-Id"));
        assert!(head.ends_with("Connection: keep-alive\r\n\r\n"));
    }

    #[test]
    fn a_backends_configured_headers_follow_the_daemons_own() {
        let extra =
            [("X-Tenant".to_owned(), "a".to_owned()), ("X-Bad".to_owned(), "v\r\nX-Injected: 3".to_owned())];
        let head = text(&request_head(&BackendRequest { extra_headers: &extra, ..request() }));
        assert!(
            head.ends_with("X-Request-Id: req-42\r\nX-Tenant: a\r\nConnection: keep-alive\r\n\r\n"),
            "{head}"
        );
        assert!(!head.contains("Injected") && !head.contains("X-Bad"));
    }

    #[test]
    fn values_with_line_breaks_are_dropped_not_written() {
        let head = text(&request_head(&BackendRequest {
            api_key: Some("sk\r\nX-Injected: 1"),
            test_pattern: Some("p\nq"),
            request_id: Some("r\r\nX-Injected: 2"),
            ..request()
        }));
        assert!(!head.contains("X-Request-Id"));
        assert!(!head.contains("Injected"));
        assert!(!head.contains("Authorization"));
        assert!(!head.contains("X-Test-Pattern"));
        assert_eq!(head.matches("\r\n\r\n").count(), 1);
        assert!(head.ends_with("\r\n\r\n"));
    }

    #[test]
    fn a_path_cannot_break_the_request_line() {
        let head = text(&request_head(&BackendRequest { path: "/v1/a b\r\nX: y", ..request() }));
        assert!(head.starts_with("POST /v1/a%20b%0D%0AX:%20y HTTP/1.1\r\nHost:"));
        let head = text(&request_head(&BackendRequest { path: "", ..request() }));
        assert!(head.starts_with("POST / HTTP/1.1\r\n"));
    }
}
