//! The backend response head: found incrementally, parsed by httparse, framed per
//! RFC 9112 §6.

use super::{BodyFraming, HttpError, ResponseHead, MAX_RESPONSE_HEAD};

/// Header fields httparse may fill; a head with more is refused.
const MAX_HEADERS: usize = 64;

/// Incremental response head parser. Feed it the whole buffer read so far (the
/// caller keeps it); it remembers how far it has looked for the end of the head,
/// so trickled input is not rescanned from byte 0 and total work stays O(n).
/// httparse runs once per head, when its blank line has arrived.
///
/// After it returns a head the parser is reset, ready for the next response on a
/// fresh buffer (HTTP/1.1 keep-alive).
#[derive(Debug, Default)]
pub struct ResponseHeadParser {
    /// Where the head being looked for starts: after any 1xx heads already skipped
    /// and any blank lines before a status line.
    start: usize,
    /// Every position before this has been checked for the blank line ending the head.
    scanned: usize,
}

impl ResponseHeadParser {
    /// A parser at the start of a fresh buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// `Ok(None)`: need more bytes. `Ok(Some((head, len)))`: the head was the first
    /// `len` bytes of `buf`. A 1xx informational head is skipped (its bytes are
    /// counted in the next call's `len`); 101 Switching Protocols is an error, since
    /// we never ask to upgrade. [`MAX_RESPONSE_HEAD`] bounds all heads together.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HttpError> {
        let limit = buf.len().min(MAX_RESPONSE_HEAD);
        loop {
            // httparse skips blank lines before a status line; skip them here too so
            // they are not mistaken for the blank line that ends a head.
            while buf.get(self.start).is_some_and(|&b| b == b'\r' || b == b'\n') && self.start < limit {
                self.start += 1;
            }
            let Some(end) = self.find_head_end(buf, limit) else {
                self.scanned = limit.max(self.start);
                return if buf.len() >= MAX_RESPONSE_HEAD { Err(HttpError::HeadTooLarge) } else { Ok(None) };
            };
            let head_bytes = buf.get(self.start..end).unwrap_or_default();
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            let len = match response.parse(head_bytes) {
                Ok(httparse::Status::Complete(len)) => len,
                // Not the end as httparse sees it: keep looking past this point.
                Ok(httparse::Status::Partial) => {
                    self.scanned = end;
                    continue;
                }
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(HttpError::BadHead(format!("more than {MAX_HEADERS} header fields")));
                }
                Err(e) => return Err(HttpError::BadHead(e.to_string())),
            };
            let status = response.code.unwrap_or_default();
            let http10 = response.version == Some(0);
            match status {
                101 => return Err(HttpError::BadHead("unexpected 101 Switching Protocols".into())),
                100..=199 => {
                    self.start += len;
                    self.scanned = self.start;
                    continue;
                }
                0..=99 => return Err(HttpError::BadHead(format!("status code {status} out of range"))),
                _ => {}
            }
            let head = read_head(status, http10, response.headers)?;
            let total = self.start + len;
            *self = Self::default();
            return Ok(Some((head, total)));
        }
    }

    /// The end (exclusive) of the first blank line after `start`, looking only at
    /// positions not checked before. A blank line is LF LF or LF CR LF.
    fn find_head_end(&self, buf: &[u8], limit: usize) -> Option<usize> {
        let region = buf.get(self.start..limit)?;
        let mut from = self.scanned.saturating_sub(self.start);
        while let Some(offset) = region.get(from..).and_then(|rest| rest.iter().position(|&b| b == b'\n')) {
            let lf = from + offset;
            let before = region.get(..lf).unwrap_or_default();
            if before.ends_with(b"\n") || before.ends_with(b"\n\r") {
                return Some(self.start + lf + 1);
            }
            from = lf + 1;
        }
        None
    }
}

/// Framing and persistence from the header fields (RFC 9112 §6.3, §9.3).
fn read_head(status: u16, http10: bool, headers: &[httparse::Header<'_>]) -> Result<ResponseHead, HttpError> {
    let mut has_transfer_coding = false;
    let mut chunked_last = false;
    let mut content_length: Option<u64> = None;
    let mut close = false;
    let mut keep_alive = false;
    for header in headers {
        let name = header.name;
        if name.eq_ignore_ascii_case("transfer-encoding") {
            for coding in list_elements(header.value) {
                if chunked_last {
                    return Err(HttpError::BadFraming("chunked is not the last transfer coding"));
                }
                has_transfer_coding = true;
                chunked_last = coding.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            // A list of identical values ("5, 5", or the header twice) is one length.
            for element in header.value.split(|&b| b == b',').map(trim_ows) {
                let length = parse_decimal(element).ok_or(HttpError::BadFraming("invalid Content-Length"))?;
                if content_length.is_some_and(|seen| seen != length) {
                    return Err(HttpError::BadFraming("conflicting Content-Length values"));
                }
                content_length = Some(length);
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for option in list_elements(header.value) {
                close |= option.eq_ignore_ascii_case(b"close");
                keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let framing = if status == 204 || status == 304 {
        // No body whatever the headers say (a 304's Content-Length describes the
        // representation it stands for).
        BodyFraming::ContentLength(0)
    } else if has_transfer_coding {
        if content_length.is_some() {
            return Err(HttpError::BadFraming("both Transfer-Encoding and Content-Length"));
        }
        if chunked_last {
            BodyFraming::Chunked
        } else {
            BodyFraming::UntilClose
        }
    } else if let Some(length) = content_length {
        BodyFraming::ContentLength(length)
    } else {
        BodyFraming::UntilClose
    };
    // HTTP/1.0 with Transfer-Encoding is faulty framing: finish the message, then
    // close (RFC 9112 §6.1).
    let http10_keeps_alive = keep_alive && !has_transfer_coding;
    let keep_alive = !close && (!http10 || http10_keeps_alive) && framing != BodyFraming::UntilClose;
    Ok(ResponseHead { status, framing, keep_alive })
}

/// The non-empty elements of a comma-separated header list, trimmed.
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows).filter(|element| !element.is_empty())
}

fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !is_ows(b)).map_or(start, |last| last + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// `1*DIGIT` as a u64; `None` when empty, not all digits, or too large.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let digit = u64::from(b.checked_sub(b'0').filter(|d| *d <= 9)?);
        n.checked_mul(10)?.checked_add(digit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<(ResponseHead, usize)>, HttpError> {
        ResponseHeadParser::new().parse(text.as_bytes())
    }

    fn head(text: &str) -> ResponseHead {
        let (head, len) = parse(text).unwrap().expect("a complete head");
        assert_eq!(len, text.len(), "the whole input is the head");
        head
    }

    fn framing(headers: &str) -> Result<BodyFraming, HttpError> {
        let text = format!("HTTP/1.1 200 OK\r\n{headers}\r\n");
        parse(&text).map(|parsed| parsed.expect("a complete head").0.framing)
    }

    #[test]
    fn content_length_response() {
        let parsed = head("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 42\r\n\r\n");
        assert_eq!(
            parsed,
            ResponseHead { status: 200, framing: BodyFraming::ContentLength(42), keep_alive: true }
        );
    }

    #[test]
    fn head_length_excludes_the_body_that_follows() {
        let text = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let (_, len) = parse(text).unwrap().unwrap();
        assert_eq!(&text[len..], "hello");
    }

    #[test]
    fn chunked_response() {
        assert_eq!(framing("Transfer-Encoding: chunked\r\n"), Ok(BodyFraming::Chunked));
        assert_eq!(framing("transfer-encoding: CHUNKED\r\n"), Ok(BodyFraming::Chunked));
        assert_eq!(framing("Transfer-Encoding: gzip, chunked\r\n"), Ok(BodyFraming::Chunked));
        assert_eq!(
            framing("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"),
            Ok(BodyFraming::Chunked)
        );
    }

    #[test]
    fn chunked_must_be_the_last_coding_and_only_once() {
        let bad = Err(HttpError::BadFraming("chunked is not the last transfer coding"));
        assert_eq!(framing("Transfer-Encoding: chunked, gzip\r\n"), bad);
        assert_eq!(framing("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n"), bad);
        assert_eq!(framing("Transfer-Encoding: chunked, chunked\r\n"), bad);
    }

    #[test]
    fn transfer_coding_without_chunked_reads_until_close() {
        assert_eq!(framing("Transfer-Encoding: gzip\r\n"), Ok(BodyFraming::UntilClose));
        let parsed = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert!(!parsed.keep_alive);
    }

    #[test]
    fn no_length_means_until_close_and_no_keep_alive() {
        let parsed = head("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n");
        assert_eq!(parsed, ResponseHead { status: 200, framing: BodyFraming::UntilClose, keep_alive: false });
    }

    #[test]
    fn content_length_with_transfer_encoding_is_refused() {
        assert_eq!(
            framing("Transfer-Encoding: chunked\r\nContent-Length: 10\r\n"),
            Err(HttpError::BadFraming("both Transfer-Encoding and Content-Length"))
        );
        assert_eq!(
            framing("Content-Length: 10\r\nTransfer-Encoding: chunked\r\n"),
            Err(HttpError::BadFraming("both Transfer-Encoding and Content-Length"))
        );
    }

    #[test]
    fn repeated_equal_content_lengths_are_one_length() {
        assert_eq!(framing("Content-Length: 7, 7\r\n"), Ok(BodyFraming::ContentLength(7)));
        assert_eq!(framing("Content-Length: 7\r\nContent-Length: 7\r\n"), Ok(BodyFraming::ContentLength(7)));
    }

    #[test]
    fn conflicting_or_invalid_content_lengths_are_refused() {
        let conflict = Err(HttpError::BadFraming("conflicting Content-Length values"));
        assert_eq!(framing("Content-Length: 7, 8\r\n"), conflict);
        assert_eq!(framing("Content-Length: 7\r\nContent-Length: 8\r\n"), conflict);
        for value in ["abc", "-1", "+5", "5 5", "0x10", "5,", "99999999999999999999999"] {
            assert_eq!(
                framing(&format!("Content-Length: {value}\r\n")),
                Err(HttpError::BadFraming("invalid Content-Length")),
                "{value}"
            );
        }
        assert_eq!(
            framing("Content-Length: 18446744073709551615\r\n"),
            Ok(BodyFraming::ContentLength(u64::MAX))
        );
    }

    #[test]
    fn no_content_statuses_have_empty_bodies_whatever_the_headers() {
        let parsed = head("HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(
            parsed,
            ResponseHead { status: 204, framing: BodyFraming::ContentLength(0), keep_alive: true }
        );
        let parsed = head("HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\n\r\n");
        assert_eq!(parsed.framing, BodyFraming::ContentLength(0));
        assert!(parsed.keep_alive);
    }

    #[test]
    fn connection_close_ends_keep_alive() {
        assert!(!head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(
            !head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: Upgrade, CLOSE\r\n\r\n").keep_alive
        );
        // close wins over keep-alive.
        assert!(
            !head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive
        );
    }

    #[test]
    fn http10_keeps_alive_only_when_asked_and_framed() {
        assert!(!head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
        assert!(head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(!head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        let chunked = head("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(chunked.framing, BodyFraming::Chunked);
        assert!(!chunked.keep_alive);
    }

    #[test]
    fn informational_heads_are_skipped_and_counted() {
        let text = "HTTP/1.1 100 Continue\r\n\r\n\
                    HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
                    HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
        let (parsed, len) = parse(text).unwrap().unwrap();
        assert_eq!(parsed.status, 200);
        assert_eq!(parsed.framing, BodyFraming::ContentLength(2));
        assert_eq!(&text[len..], "hi");
    }

    #[test]
    fn informational_head_alone_needs_more_data() {
        let mut parser = ResponseHeadParser::new();
        let mut buf = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
        assert_eq!(parser.parse(&buf), Ok(None));
        buf.extend_from_slice(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
        let (parsed, len) = parser.parse(&buf).unwrap().unwrap();
        assert_eq!((parsed.status, len), (201, buf.len()));
    }

    #[test]
    fn switching_protocols_is_an_error() {
        assert!(matches!(
            parse("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
            Err(HttpError::BadHead(_))
        ));
    }

    #[test]
    fn bare_lf_heads_and_leading_blank_lines_are_accepted() {
        let parsed = head("HTTP/1.1 200 OK\nContent-Length: 3\n\n");
        assert_eq!(parsed.framing, BodyFraming::ContentLength(3));
        let parsed = head("HTTP/1.1 200 OK\r\nContent-Length: 3\n\r\n");
        assert_eq!(parsed.framing, BodyFraming::ContentLength(3));
        let parsed = head("\r\n\r\n\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(parsed.framing, BodyFraming::ContentLength(3));
    }

    #[test]
    fn garbage_is_a_bad_head() {
        for text in ["SSH-2.0-OpenSSH_9.6\r\n\r\n", "HTTP/2 200\r\n\r\n", "HTTP/1.1 2000 OK\r\n\r\n"] {
            assert!(matches!(parse(text), Err(HttpError::BadHead(_))), "{text:?}");
        }
        assert!(matches!(parse("HTTP/1.1 099 Low\r\n\r\n"), Err(HttpError::BadHead(_))));
    }

    #[test]
    fn too_many_header_fields_is_a_bad_head() {
        let mut text = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..=MAX_HEADERS {
            text.push_str(&format!("X-{i}: v\r\n"));
        }
        text.push_str("\r\n");
        assert_eq!(parse(&text), Err(HttpError::BadHead(format!("more than {MAX_HEADERS} header fields"))));
    }

    fn head_of_exact_size(size: usize) -> String {
        let fixed = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Pad: \r\n\r\n".len();
        format!("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Pad: {}\r\n\r\n", "p".repeat(size - fixed))
    }

    #[test]
    fn head_size_is_bounded() {
        let largest = head_of_exact_size(MAX_RESPONSE_HEAD);
        assert_eq!(largest.len(), MAX_RESPONSE_HEAD);
        assert_eq!(head(&largest).framing, BodyFraming::ContentLength(0));
        let too_large = head_of_exact_size(MAX_RESPONSE_HEAD + 1);
        assert_eq!(parse(&too_large), Err(HttpError::HeadTooLarge));
        // No end in sight: refused as soon as the limit is reached.
        let endless = format!("HTTP/1.1 200 OK\r\nX-Pad: {}", "p".repeat(MAX_RESPONSE_HEAD));
        assert_eq!(parse(&endless[..MAX_RESPONSE_HEAD - 1]), Ok(None));
        assert_eq!(parse(&endless[..MAX_RESPONSE_HEAD]), Err(HttpError::HeadTooLarge));
    }

    #[test]
    fn trickled_input_is_scanned_once() {
        let text = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 9\r\n\r\n";
        let mut parser = ResponseHeadParser::new();
        for end in 1..text.len() {
            assert_eq!(parser.parse(&text[..end]), Ok(None));
            // Everything given has been looked at; the next call starts from here.
            assert_eq!(parser.scanned, end);
        }
        let (parsed, len) = parser.parse(text).unwrap().unwrap();
        assert_eq!((parsed.framing, len), (BodyFraming::ContentLength(9), text.len()));
    }

    #[test]
    fn parser_is_ready_for_the_next_response_after_a_head() {
        let mut parser = ResponseHeadParser::new();
        let first = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert!(parser.parse(first).unwrap().is_some());
        let second = b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n";
        let (parsed, len) = parser.parse(second).unwrap().unwrap();
        assert_eq!((parsed.status, len), (500, second.len()));
    }
}
