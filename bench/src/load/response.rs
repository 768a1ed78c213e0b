//! Judging a handoff response as a browser's `EventSource` would, without keeping the body.
//!
//! The scanner is fed whatever each read returned. It keeps the response head only until
//! the head is complete (bounded by [`MAX_HEAD_BYTES`]), then tallies the SSE body line by
//! line, remembering at most a short prefix of the current line: enough to recognise
//! `data: [DONE]` and `event: error` even when a read boundary splits them.

/// A response head longer than this is not one a handoff daemon would write.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// How many headers the head may carry.
const MAX_HEADERS: usize = 64;

/// The longest line prefix a decision needs: `data: [DONE]` and `event: error` are 12.
const LINE_PREFIX: usize = 16;

/// The response could not be read as HTTP/1.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MalformedResponse {
    /// The head is not a valid HTTP/1.x status line and header block.
    Head(String),
    /// No end of head within [`MAX_HEAD_BYTES`].
    HeadTooLarge,
}

impl std::fmt::Display for MalformedResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Head(reason) => write!(f, "response head is not HTTP/1.1: {reason}"),
            Self::HeadTooLarge => write!(f, "response head is longer than {MAX_HEAD_BYTES} bytes"),
        }
    }
}

impl std::error::Error for MalformedResponse {}

/// Incremental reader of one client response.
#[derive(Debug)]
pub struct ResponseScanner {
    head: Head,
    body: SseTally,
    bytes: u64,
}

#[derive(Debug)]
enum Head {
    /// Bytes of the head so far, and how far the search for its end has gone.
    Reading {
        buf: Vec<u8>,
        searched: usize,
    },
    Parsed {
        status: u16,
    },
    Malformed,
}

impl Default for ResponseScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseScanner {
    pub fn new() -> Self {
        Self { head: Head::Reading { buf: Vec::new(), searched: 0 }, body: SseTally::default(), bytes: 0 }
    }

    /// Takes the next bytes read from the client socket.
    ///
    /// After an error the scanner ignores further input.
    pub fn handle_bytes(&mut self, bytes: &[u8]) -> Result<(), MalformedResponse> {
        self.bytes = self.bytes.saturating_add(bytes.len() as u64);
        match &mut self.head {
            Head::Parsed { .. } => {
                self.body.handle_bytes(bytes);
                Ok(())
            }
            Head::Malformed => Ok(()),
            Head::Reading { buf, searched } => {
                let room = MAX_HEAD_BYTES.saturating_sub(buf.len());
                let (taken, rest) = bytes.split_at(bytes.len().min(room));
                buf.extend_from_slice(taken);
                let Some(end) = find_head_end(buf, *searched) else {
                    if buf.len() >= MAX_HEAD_BYTES {
                        self.head = Head::Malformed;
                        return Err(MalformedResponse::HeadTooLarge);
                    }
                    // A terminator may straddle this read and the next.
                    *searched = buf.len().saturating_sub(3);
                    return Ok(());
                };
                let buf = std::mem::take(buf);
                match parse_status(buf.get(..end).unwrap_or_default()) {
                    Ok(status) => {
                        self.head = Head::Parsed { status };
                        self.body.handle_bytes(buf.get(end..).unwrap_or_default());
                        self.body.handle_bytes(rest);
                        Ok(())
                    }
                    Err(error) => {
                        self.head = Head::Malformed;
                        Err(error)
                    }
                }
            }
        }
    }

    /// The status code, once the head is complete.
    pub fn status(&self) -> Option<u16> {
        match self.head {
            Head::Parsed { status } => Some(status),
            _ => None,
        }
    }

    /// Content events seen: events with data, other than `[DONE]` and `event: error`.
    pub fn events(&self) -> u64 {
        self.body.events
    }

    /// `event: error` events seen.
    pub fn error_events(&self) -> u64 {
        self.body.error_events
    }

    /// Whether the body so far ends with the `data: [DONE]` event, blank line included.
    pub fn is_done(&self) -> bool {
        self.body.is_done()
    }

    /// Every byte handed in, head included.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Index just past the blank line that ends the head (`\n\n` or `\n\r\n`), searching from `from`.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(offset) = buf.get(i..)?.iter().position(|&b| b == b'\n') {
        let lf = i + offset;
        match (buf.get(lf + 1), buf.get(lf + 2)) {
            (Some(b'\n'), _) => return Some(lf + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(lf + 3),
            _ => i = lf + 1,
        }
    }
    None
}

fn parse_status(head: &[u8]) -> Result<u16, MalformedResponse> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(head) {
        Ok(httparse::Status::Complete(_)) => {
            response.code.ok_or_else(|| MalformedResponse::Head("no status code".to_owned()))
        }
        Ok(httparse::Status::Partial) => Err(MalformedResponse::Head("head ends early".to_owned())),
        Err(error) => Err(MalformedResponse::Head(error.to_string())),
    }
}

/// Line-by-line tally of an event stream (WHATWG line endings: LF, CRLF or a lone CR).
#[derive(Debug, Default)]
struct SseTally {
    prefix: [u8; LINE_PREFIX],
    line_len: usize,
    /// The previous byte ended a line with CR; an LF right after it belongs to that line end.
    after_cr: bool,
    event_data_lines: u32,
    event_is_done: bool,
    event_is_error: bool,
    last_dispatch_was_done: bool,
    events: u64,
    error_events: u64,
}

impl SseTally {
    fn handle_bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            match byte {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = byte == b'\r';
                    self.handle_line_end();
                }
                _ => {
                    self.after_cr = false;
                    if let Some(slot) = self.prefix.get_mut(self.line_len) {
                        *slot = byte;
                    }
                    self.line_len = self.line_len.saturating_add(1);
                }
            }
        }
    }

    fn handle_line_end(&mut self) {
        let line_len = std::mem::take(&mut self.line_len);
        if line_len == 0 {
            self.dispatch();
            return;
        }
        let line = self.prefix.get(..line_len.min(LINE_PREFIX)).unwrap_or_default();
        let whole = line_len <= LINE_PREFIX;
        if let Some(value) = field_value(line, b"data") {
            self.event_data_lines = self.event_data_lines.saturating_add(1);
            self.event_is_done = whole && value == b"[DONE]";
        } else if let Some(value) = field_value(line, b"event") {
            self.event_is_error = whole && value == b"error";
        }
        // Comments (`: keep-alive`), `id`, `retry` and unknown fields decide nothing here.
    }

    fn dispatch(&mut self) {
        let data_lines = std::mem::take(&mut self.event_data_lines);
        let is_done = std::mem::take(&mut self.event_is_done);
        let is_error = std::mem::take(&mut self.event_is_error);
        if data_lines == 0 {
            return;
        }
        self.last_dispatch_was_done = is_done && data_lines == 1 && !is_error;
        if is_error {
            self.error_events += 1;
        } else if !self.last_dispatch_was_done {
            self.events += 1;
        }
    }

    fn is_done(&self) -> bool {
        self.last_dispatch_was_done && self.line_len == 0 && self.event_data_lines == 0
    }
}

/// The value of field `name` on this line: after `name:` and one optional space.
fn field_value<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let rest = line.strip_prefix(name)?.strip_prefix(b":")?;
    Some(rest.strip_prefix(b" ").unwrap_or(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
                        Connection: close\r\nX-Accel-Buffering: no\r\n\r\n";

    /// Feeds `input` in pieces of `chunk` bytes, as separate reads would deliver it.
    fn scan(input: &[u8], chunk: usize) -> (ResponseScanner, Result<(), MalformedResponse>) {
        let mut scanner = ResponseScanner::new();
        let mut result = Ok(());
        for piece in input.chunks(chunk) {
            result = result.and(scanner.handle_bytes(piece));
        }
        (scanner, result)
    }

    fn every_split(input: &str, check: impl Fn(&ResponseScanner, &Result<(), MalformedResponse>)) {
        for chunk in [input.len().max(1), 1, 2, 3, 7, 13] {
            let (scanner, result) = scan(input.as_bytes(), chunk);
            check(&scanner, &result);
            assert_eq!(scanner.bytes(), input.len() as u64, "chunk {chunk}");
        }
    }

    #[test]
    fn complete_stream_is_done_with_its_events_counted() {
        let response = format!(
            "{HEAD}data: {{\"content\":\"Hello\",\"index\":0}}\n\n\
             data: {{\"content\":\" world\",\"index\":1}}\n\n: keep-alive\n\n\
             data: {{\"content\":\"!\",\"index\":2}}\n\ndata: [DONE]\n\n"
        );
        every_split(&response, |scanner, result| {
            assert_eq!(result, &Ok(()));
            assert_eq!(scanner.status(), Some(200));
            assert_eq!(scanner.events(), 3);
            assert!(scanner.is_done());
        });
    }

    #[test]
    fn done_needs_the_blank_line_that_dispatches_it() {
        every_split(&format!("{HEAD}data: {{\"content\":\"a\"}}\n\ndata: [DONE]\n"), |scanner, _| {
            assert_eq!(scanner.events(), 1);
            assert!(!scanner.is_done());
        });
    }

    #[test]
    fn stream_cut_short_is_not_done() {
        every_split(
            &format!("{HEAD}data: {{\"content\":\"a\"}}\n\ndata: {{\"content\":\"b\"}}\n\n"),
            |s, _| {
                assert_eq!(s.events(), 2);
                assert!(!s.is_done());
            },
        );
    }

    #[test]
    fn error_event_is_counted_apart_and_is_not_done() {
        let response = format!(
            "{HEAD}data: {{\"content\":\"a\"}}\n\n\
             event: error\ndata: {{\"error\":{{\"message\":\"cut\",\"type\":\"upstream_truncated\"}}}}\n\n"
        );
        every_split(&response, |scanner, _| {
            assert_eq!(scanner.events(), 1);
            assert_eq!(scanner.error_events(), 1);
            assert!(!scanner.is_done());
        });
    }

    #[test]
    fn events_after_done_undo_it() {
        every_split(&format!("{HEAD}data: [DONE]\n\ndata: {{\"content\":\"late\"}}\n\n"), |scanner, _| {
            assert_eq!(scanner.events(), 1);
            assert!(!scanner.is_done());
        });
    }

    #[test]
    fn crlf_and_lone_cr_line_endings_and_no_space_after_colon() {
        every_split(&format!("{HEAD}data:{{\"content\":\"a\"}}\r\n\r\ndata:[DONE]\r\r"), |scanner, _| {
            assert_eq!(scanner.events(), 1);
            assert!(scanner.is_done());
        });
    }

    #[test]
    fn done_with_extra_text_is_an_ordinary_event() {
        every_split(&format!("{HEAD}data: [DONE] not really\n\n"), |scanner, _| {
            assert_eq!(scanner.events(), 1);
            assert!(!scanner.is_done());
        });
    }

    #[test]
    fn error_status_is_reported_with_its_code() {
        let response = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
                        Retry-After: 1\r\nContent-Length: 13\r\n\r\n{\"error\":{}}\n";
        every_split(response, |scanner, result| {
            assert_eq!(result, &Ok(()));
            assert_eq!(scanner.status(), Some(503));
            assert!(!scanner.is_done());
        });
    }

    #[test]
    fn head_split_before_its_end_waits_for_more() {
        let (scanner, result) = scan(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n", 1024);
        assert_eq!(result, Ok(()));
        assert_eq!(scanner.status(), None);
    }

    #[test]
    fn garbage_head_is_malformed() {
        every_split("SSH-2.0-OpenSSH\r\n\r\ndata: [DONE]\n\n", |scanner, result| {
            assert!(matches!(result, Err(MalformedResponse::Head(_))), "{result:?}");
            assert_eq!(scanner.status(), None);
            assert!(!scanner.is_done());
        });
    }

    #[test]
    fn endless_head_is_malformed_once_it_passes_the_limit() {
        let mut scanner = ResponseScanner::new();
        assert_eq!(scanner.handle_bytes(b"HTTP/1.1 200 OK\r\n"), Ok(()));
        let header = b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        let mut result = Ok(());
        for _ in 0..(MAX_HEAD_BYTES / header.len() + 1) {
            result = result.and(scanner.handle_bytes(header));
        }
        assert_eq!(result, Err(MalformedResponse::HeadTooLarge));
    }
}
