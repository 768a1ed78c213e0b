//! Reading a client's HTTP/1.1 request head (httparse), for the servers that take
//! requests: the development front hands the connection on once it has read one.
//! Bodies are framed by `Content-Length` only; the caller bounds them.

/// Headers a request may carry before it is refused with 431.
const MAX_HEADERS: usize = 64;

/// A complete request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method as sent, case kept (`GET`, `POST`, ...).
    pub method: String,
    /// The request target as sent (`/path?query`).
    pub target: String,
    /// The body length; `None` when the request has no `Content-Length`.
    pub content_length: Option<u64>,
    /// Every header, names as sent, values lossily decoded as UTF-8.
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The target's path, without the query.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(self.target.as_str(), |(path, _)| path)
    }

    /// The target's query (after `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, query)| query)
    }

    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What the bytes read so far amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParsedRequest {
    /// The head is not complete yet and within the bound: read more.
    Incomplete,
    /// A complete head of `len` bytes; any body follows it.
    Complete {
        /// The parsed head.
        head: RequestHead,
        /// The head's length in bytes, blank line included: the body starts at `buf[len..]`.
        len: usize,
    },
    /// Answer with this status and close: 400 malformed, 411 a body framed other than
    /// by `Content-Length`, 431 a head over the bound or with too many headers,
    /// 505 not HTTP/1.1.
    Refused(u16),
}

/// Reads the request head at the start of `buf` (everything received so far); a head
/// longer than `max_head` bytes is refused.
pub fn parse_request_head(buf: &[u8], max_head: usize) -> ParsedRequest {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > max_head => return ParsedRequest::Refused(431),
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= max_head => return ParsedRequest::Refused(431),
        Ok(httparse::Status::Partial) => return ParsedRequest::Incomplete,
        Err(httparse::Error::TooManyHeaders) => return ParsedRequest::Refused(431),
        Err(_) => return ParsedRequest::Refused(400),
    };
    if request.version != Some(1) {
        return ParsedRequest::Refused(505);
    }
    let mut content_length = None;
    let mut fields = Vec::with_capacity(request.headers.len());
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return ParsedRequest::Refused(411);
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            // Repeated lengths must agree (RFC 9112 section 6.3); digits only.
            let parsed = std::str::from_utf8(header.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            match (content_length, parsed) {
                (_, None) => return ParsedRequest::Refused(400),
                (Some(previous), Some(n)) if previous != n => return ParsedRequest::Refused(400),
                (_, Some(n)) => content_length = Some(n),
            }
        }
        fields.push((header.name.to_owned(), String::from_utf8_lossy(header.value).into_owned()));
    }
    let head = RequestHead {
        method: request.method.unwrap_or_default().to_owned(),
        target: request.path.unwrap_or_default().to_owned(),
        content_length,
        headers: fields,
    };
    ParsedRequest::Complete { head, len }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (RequestHead, usize) {
        match parse_request_head(buf, 8192) {
            ParsedRequest::Complete { head, len } => (head, len),
            other => panic!("{:?} parsed as {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    #[test]
    fn a_get_with_a_query_and_a_cookie() {
        let buf = b"GET /api/stream?prompt=hi HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\n\r\nrest";
        let (head, len) = complete(buf);
        assert_eq!(len, buf.len() - "rest".len());
        assert_eq!(
            (head.method.as_str(), head.path(), head.query()),
            ("GET", "/api/stream", Some("prompt=hi"))
        );
        assert_eq!(head.header("cookie"), Some("a=1"));
        assert_eq!(head.content_length, None);
    }

    #[test]
    fn a_post_carries_its_length() {
        let (head, _) =
            complete(b"POST /api/stream HTTP/1.1\r\nContent-Length: 12\r\ncontent-length: 12\r\n\r\n");
        assert_eq!(head.content_length, Some(12));
        assert_eq!(head.query(), None);
    }

    #[test]
    fn partial_heads_wait_until_the_bound() {
        assert_eq!(parse_request_head(b"GET / HTTP/1.1\r\nHost:", 8192), ParsedRequest::Incomplete);
        assert_eq!(parse_request_head(b"GET / HTTP/1.1\r\nHost:", 10), ParsedRequest::Refused(431));
        assert_eq!(parse_request_head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 10), ParsedRequest::Refused(431));
    }

    #[test]
    fn bad_heads_are_refused_with_their_status() {
        let cases: [(&[u8], u16); 6] = [
            (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
            (b"GET / HTTP/1.0\r\n\r\n", 505),
        ];
        for (buf, status) in cases {
            assert_eq!(
                parse_request_head(buf, 8192),
                ParsedRequest::Refused(status),
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let buf = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse_request_head(buf.as_bytes(), 1 << 20), ParsedRequest::Refused(431));
    }
}
