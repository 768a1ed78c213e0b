//! What we write to the browser: the SSE response head (with the handoff's extra
//! headers) and complete JSON error responses.

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

use super::is_clean_value;
use crate::json;

/// The default client response head, written as soon as a handoff is accepted.
pub const CLIENT_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
Content-Type: text/event-stream\r\n\
Cache-Control: no-cache\r\n\
Connection: close\r\n\
X-Accel-Buffering: no\r\n\
\r\n";

/// Longest extra header name accepted, in bytes.
pub const MAX_HEADER_NAME_BYTES: usize = 64;
/// Longest extra header value accepted, in bytes.
pub const MAX_HEADER_VALUE_BYTES: usize = 1024;

/// The client response head with the handoff's validated extra headers appended in
/// order; the static [`CLIENT_HEAD`] (no allocation) when there are none.
///
/// Headers are expected to have passed [`header_rejection`] already; any that do
/// not are skipped here too, so a caller's mistake can never split the response.
pub fn client_head(extra_headers: &[(String, String)]) -> Bytes {
    if extra_headers.is_empty() {
        return Bytes::from_static(CLIENT_HEAD);
    }
    let (fixed, blank_line) = CLIENT_HEAD.split_at(CLIENT_HEAD.len() - 2);
    let extra_len: usize = extra_headers.iter().map(|(name, value)| name.len() + value.len() + 4).sum();
    let mut out = BytesMut::with_capacity(CLIENT_HEAD.len() + extra_len);
    out.put_slice(fixed);
    for (name, value) in extra_headers {
        if header_rejection(name, value).is_none() {
            put_header(&mut out, name, value);
        }
    }
    out.put_slice(blank_line);
    out.freeze()
}

pub(super) fn put_header(out: &mut BytesMut, name: &str, value: &str) {
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    out.put_slice(value.as_bytes());
    out.put_slice(b"\r\n");
}

/// Why a `response_headers` entry may not be sent; `None` when it may.
/// Rejects: names that are not RFC 9110 tokens, values with control characters
/// (CR, LF, NUL, DEL, ...; HTAB is allowed), values with leading or trailing
/// spaces or tabs (not part of a field value on the wire; [`crate::handoff::decode`]
/// trims them before asking), hop-by-hop and framing headers (Connection,
/// Keep-Alive, Transfer-Encoding, Content-Length, Content-Encoding, Upgrade, TE,
/// Trailer, Proxy-*), Host, the headers that define the SSE response (Content-Type,
/// Cache-Control, X-Accel-Buffering), and names over [`MAX_HEADER_NAME_BYTES`] or
/// values over [`MAX_HEADER_VALUE_BYTES`]. Set-Cookie, Date and other end-to-end
/// headers are allowed; names compare case-insensitively.
pub fn header_rejection(name: &str, value: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("empty header name");
    }
    if name.len() > MAX_HEADER_NAME_BYTES {
        return Some("header name longer than 64 bytes");
    }
    if !name.bytes().all(is_tchar) {
        return Some("header name is not an RFC 9110 token");
    }
    if let Some(reason) = denied_name(name) {
        return Some(reason);
    }
    if value.len() > MAX_HEADER_VALUE_BYTES {
        return Some("header value longer than 1024 bytes");
    }
    if !is_clean_value(value) {
        return Some("header value contains a control character");
    }
    if value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']) {
        return Some("header value has leading or trailing whitespace");
    }
    None
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

const FRAMING_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "upgrade",
    "te",
    "trailer",
];
const SSE_HEADERS: &[&str] = &["content-type", "cache-control", "x-accel-buffering"];

fn denied_name(name: &str) -> Option<&'static str> {
    let is = |list: &[&str]| list.iter().any(|denied| name.eq_ignore_ascii_case(denied));
    let is_proxy = name.get(..6).is_some_and(|prefix| prefix.eq_ignore_ascii_case("proxy-"));
    if is(FRAMING_HEADERS) || is_proxy {
        Some("hop-by-hop or framing header")
    } else if is(SSE_HEADERS) {
        Some("header defines the SSE response")
    } else if name.eq_ignore_ascii_case("host") {
        Some("Host is a request header")
    } else {
        None
    }
}

/// Error statuses the daemon answers with before the head is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorStatus {
    /// 400 Bad Request: the request (the handoff) itself is wrong.
    BadRequest,
    /// 429 Too Many Requests: this user has too many streams open; worth a retry.
    TooManyRequests,
    /// 503 Service Unavailable: not now (at capacity or draining); worth a retry.
    ServiceUnavailable,
}

impl ErrorStatus {
    /// The numeric status code (400, 429 or 503).
    pub fn code(self) -> u16 {
        match self {
            ErrorStatus::BadRequest => 400,
            ErrorStatus::TooManyRequests => 429,
            ErrorStatus::ServiceUnavailable => 503,
        }
    }

    /// The reason phrase of the status line.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorStatus::BadRequest => "Bad Request",
            ErrorStatus::TooManyRequests => "Too Many Requests",
            ErrorStatus::ServiceUnavailable => "Service Unavailable",
        }
    }
}

/// A complete error response: status line, `Content-Type: application/json`,
/// `Content-Length`, `Connection: close`, `Cache-Control: no-store`, `Retry-After`
/// when given, and the body `{"error":{"message":..,"type":..,"code":..}}`.
pub fn error_response(
    status: ErrorStatus,
    message: &str,
    error_type: &str,
    code: Option<&str>,
    retry_after_secs: Option<u32>,
) -> Bytes {
    let mut body = BytesMut::new();
    json::write_error_object(&mut body, message, error_type, code);
    let mut out = BytesMut::with_capacity(body.len() + 192);
    // Writing into a BytesMut cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\
         Cache-Control: no-store\r\n",
        status.code(),
        status.reason(),
        body.len()
    );
    if let Some(secs) = retry_after_secs {
        let _ = write!(out, "Retry-After: {secs}\r\n");
    }
    out.put_slice(b"\r\n");
    out.put_slice(&body);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &Bytes) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn default_head_is_the_static_sse_head() {
        let head = client_head(&[]);
        assert_eq!(&head[..], CLIENT_HEAD);
        assert!(text(&head).ends_with("X-Accel-Buffering: no\r\n\r\n"));
    }

    #[test]
    fn extra_headers_go_before_the_blank_line_in_order() {
        let head = client_head(&headers(&[("X-Request-Id", "abc"), ("Set-Cookie", "a=b; Path=/")]));
        assert_eq!(
            text(&head),
            "HTTP/1.1 200 OK\r\n\
             Content-Type: text/event-stream\r\n\
             Cache-Control: no-cache\r\n\
             Connection: close\r\n\
             X-Accel-Buffering: no\r\n\
             X-Request-Id: abc\r\n\
             Set-Cookie: a=b; Path=/\r\n\
             \r\n"
        );
    }

    #[test]
    fn client_head_never_writes_a_header_that_fails_validation() {
        let head = client_head(&headers(&[("X-Evil", "a\r\nContent-Length: 0"), ("X-Ok", "1")]));
        let text = text(&head);
        assert!(!text.contains("X-Evil"));
        assert!(text.ends_with("X-Ok: 1\r\n\r\n"));
    }

    #[test]
    fn accepts_ordinary_end_to_end_headers() {
        for (name, value) in [
            ("X-Request-Id", "req-123"),
            ("Set-Cookie", "session=abc; HttpOnly; Secure"),
            ("Date", "Tue, 15 Nov 1994 08:12:31 GMT"),
            ("Access-Control-Allow-Origin", "*"),
            ("X-Weird!#$%&'*+-.^_`|~1", "v"),
            ("X-Tabbed", "a\tb"),
            ("X-Unicode", "héllo"),
            ("X-Empty", ""),
        ] {
            assert_eq!(header_rejection(name, value), None, "{name}: {value:?}");
        }
    }

    #[test]
    fn rejects_names_that_are_not_tokens() {
        for name in ["", "X Space", "X:Colon", "X\r\nInjected", "X(paren)", "X\"quote", "Ünï", "X/Slash"] {
            assert!(header_rejection(name, "v").is_some(), "{name:?}");
        }
    }

    #[test]
    fn rejects_control_characters_in_values() {
        for value in ["a\rb", "a\nb", "a\r\nX-Injected: 1", "nul\0", "del\x7f", "bell\x07"] {
            assert_eq!(
                header_rejection("X-Test", value),
                Some("header value contains a control character"),
                "{value:?}"
            );
        }
    }

    #[test]
    fn rejects_untrimmed_values() {
        for value in [" a", "a ", "\ta", "a\t"] {
            assert_eq!(
                header_rejection("X-Test", value),
                Some("header value has leading or trailing whitespace")
            );
        }
    }

    #[test]
    fn rejects_hop_by_hop_framing_and_sse_headers_in_any_case() {
        for name in [
            "Connection",
            "keep-alive",
            "TRANSFER-ENCODING",
            "Content-Length",
            "Content-Encoding",
            "Upgrade",
            "TE",
            "Trailer",
            "Proxy-Connection",
            "proxy-authenticate",
            "Proxy-Authorization",
        ] {
            assert_eq!(header_rejection(name, "x"), Some("hop-by-hop or framing header"), "{name}");
        }
        for name in ["Content-Type", "cache-control", "X-Accel-Buffering"] {
            assert_eq!(header_rejection(name, "x"), Some("header defines the SSE response"), "{name}");
        }
        assert!(header_rejection("Host", "example.com").is_some());
        // Only the exact names: longer names that merely start the same are fine.
        assert_eq!(header_rejection("Content-Language", "en"), None);
        assert_eq!(header_rejection("Tea", "green"), None);
        assert_eq!(header_rejection("Proxy", "x"), None);
    }

    #[test]
    fn bounds_name_and_value_length() {
        let name = "X".repeat(MAX_HEADER_NAME_BYTES);
        assert_eq!(header_rejection(&name, "v"), None);
        assert!(header_rejection(&format!("{name}Y"), "v").is_some());
        let value = "v".repeat(MAX_HEADER_VALUE_BYTES);
        assert_eq!(header_rejection("X-Long", &value), None);
        assert!(header_rejection("X-Long", &format!("{value}v")).is_some());
    }

    fn split_response(bytes: &Bytes) -> (&str, &str) {
        text(bytes).split_once("\r\n\r\n").unwrap()
    }

    #[test]
    fn error_response_is_a_complete_closed_json_response() {
        let response = error_response(
            ErrorStatus::BadRequest,
            "bad \"data\"",
            "invalid_request_error",
            Some("bad_handoff"),
            None,
        );
        let (head, body) = split_response(&response);
        assert_eq!(
            head,
            format!(
                "HTTP/1.1 400 Bad Request\r\n\
                 Content-Type: application/json\r\n\
                 Content-Length: {}\r\n\
                 Connection: close\r\n\
                 Cache-Control: no-store",
                body.len()
            )
        );
        let parsed: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(parsed["error"]["message"], "bad \"data\"");
        assert_eq!(parsed["error"]["type"], "invalid_request_error");
        assert_eq!(parsed["error"]["code"], "bad_handoff");
    }

    #[test]
    fn error_response_status_lines_and_retry_after() {
        let response = error_response(ErrorStatus::ServiceUnavailable, "busy", "overloaded", None, Some(5));
        let (head, body) = split_response(&response);
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(head.ends_with("\r\nRetry-After: 5"));
        assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
        let parsed: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(parsed["error"]["code"].is_null());

        let response = error_response(ErrorStatus::TooManyRequests, "m", "t", None, Some(1));
        assert!(text(&response).starts_with("HTTP/1.1 429 Too Many Requests\r\n"));
        assert!(text(&response).contains("\r\nRetry-After: 1\r\n"));

        let response = error_response(ErrorStatus::BadRequest, "m", "t", None, None);
        assert!(text(&response).starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(!text(&response).contains("Retry-After"), "only a 503 says when to retry");
    }

    #[test]
    fn error_response_content_length_counts_bytes_not_characters() {
        let response = error_response(ErrorStatus::BadRequest, "ünïcödé 😀", "t", None, None);
        let (head, body) = split_response(&response);
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(body.len() > body.chars().count());
    }
}
