//! Whole events cut out of an event stream byte for byte, for a passthrough
//! backend whose events (types, ids, `retry`, comments) go to the client
//! unchanged.
//!
//! Only complete events are released: bytes up to and including the blank line
//! that ends an event (a line terminator right after another; CR, LF or CRLF as
//! WHATWG allows). So whatever the daemon writes after them (its own
//! `event: error`) starts on an event boundary, never inside an upstream event.

use bytes::{BufMut, BytesMut};

use super::SseError;

/// Holds the bytes of the event not yet ended; an event (held or not) longer
/// than `max_event` bytes is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvents {
    pending: Vec<u8>,
    /// Bytes of the current line so far (0 right after a terminator).
    line_len: usize,
    /// The last byte looked at was a CR, so an LF next belongs to it.
    after_cr: bool,
    max_event: usize,
}

impl RawEvents {
    /// A splitter that refuses an event longer than `max_event` bytes.
    pub fn new(max_event: usize) -> RawEvents {
        RawEvents { pending: Vec::new(), line_len: 0, after_cr: false, max_event }
    }

    /// Appends to `out` every event `data` completes (with any held from
    /// earlier); returns how many. The rest waits for more bytes.
    pub fn feed(&mut self, data: &[u8], out: &mut BytesMut) -> Result<u32, SseError> {
        let mut events = 0u32;
        let mut start = 0;
        let mut at = 0;
        while let Some(offset) = data.get(at..).and_then(|rest| memchr::memchr2(b'\r', b'\n', rest)) {
            let index = at + offset;
            let byte = data.get(index).copied().unwrap_or(b'\n');
            let lf_of_crlf = byte == b'\n' && self.after_cr && index == at && self.line_len == 0;
            self.after_cr = byte == b'\r';
            let line_len = self.line_len + (index - at);
            at = index + 1;
            if lf_of_crlf {
                continue;
            }
            self.line_len = 0;
            if line_len == 0 {
                // A blank line: the event ends here, if it is within the limit
                // however the reads fell.
                if self.pending.len() + (at - start) > self.max_event {
                    return Err(SseError::EventTooLarge { limit: self.max_event });
                }
                if !self.pending.is_empty() {
                    out.put_slice(&self.pending);
                    self.pending.clear();
                }
                out.put_slice(data.get(start..at).unwrap_or_default());
                start = at;
                events = events.saturating_add(1);
            }
        }
        if at < data.len() {
            self.line_len += data.len() - at;
            self.after_cr = false;
        }
        let rest = data.get(start..).unwrap_or_default();
        if self.pending.len() + rest.len() > self.max_event {
            return Err(SseError::EventTooLarge { limit: self.max_event });
        }
        self.pending.extend_from_slice(rest);
        Ok(events)
    }

    /// Bytes of heap held for the unfinished event.
    pub fn buffered_capacity(&self) -> usize {
        self.pending.capacity()
    }

    /// True when bytes of an unfinished event are held (a stream ending now
    /// cut it off; WHATWG drops such an event, and so does the client).
    pub fn has_partial_event(&self) -> bool {
        self.pending.iter().any(|&byte| byte != b'\r' && byte != b'\n')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pieces: &[&[u8]]) -> (Vec<Vec<u8>>, RawEvents) {
        let mut raw = RawEvents::new(1024);
        let mut events = Vec::new();
        for piece in pieces {
            let mut out = BytesMut::new();
            let count = raw.feed(piece, &mut out).unwrap();
            if count > 0 {
                events.push(out.to_vec());
            } else {
                assert!(out.is_empty(), "nothing released without a whole event");
            }
        }
        (events, raw)
    }

    const STREAM: &[u8] = b"event: metadata\nid: 1\ndata: {\"run\":1}\n\n: ping\n\nretry: 10\r\ndata: a\r\ndata: b\r\n\r\nevent: end\rdata: null\r\r";

    #[test]
    fn events_come_out_whole_and_unchanged_however_the_bytes_are_split() {
        let (whole, raw) = split(&[STREAM]);
        assert_eq!(whole.concat(), STREAM, "every byte, comments and ids included");
        assert!(!raw.has_partial_event());
        for cut in 0..STREAM.len() {
            let (parts, _) = split(&[&STREAM[..cut], &STREAM[cut..]]);
            assert_eq!(parts.concat(), STREAM, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        let (single, _) = split(&bytes);
        assert_eq!(single.concat(), STREAM, "one byte at a time");
    }

    #[test]
    fn a_crlf_split_between_reads_is_one_terminator() {
        let (events, raw) = split(&[b"data: x\r", b"\n\r", b"\n"]);
        assert_eq!(events.concat(), b"data: x\r\n\r".to_vec(), "the event ends at the blank line's CR");
        assert!(!raw.has_partial_event(), "the trailing LF is not an event");
        let (events, raw) = split(&[b"data: x\r\ndata: y\r\n", b"\r\n"]);
        assert_eq!(
            events.concat(),
            b"data: x\r\ndata: y\r\n\r".to_vec(),
            "its LF follows with the next bytes"
        );
        assert!(!raw.has_partial_event());
    }

    #[test]
    fn an_unfinished_event_is_held_and_reported() {
        let (events, raw) = split(&[b"data: one\n\ndata: tw"]);
        assert_eq!(events.concat(), b"data: one\n\n".to_vec());
        assert!(raw.has_partial_event());
    }

    #[test]
    fn an_event_longer_than_the_limit_is_refused() {
        let mut raw = RawEvents::new(16);
        let mut out = BytesMut::new();
        assert_eq!(raw.feed(b"data: 0123456789", &mut out), Ok(0));
        assert_eq!(raw.feed(b"abc", &mut out), Err(SseError::EventTooLarge { limit: 16 }));
        let mut whole = RawEvents::new(16);
        let refused = whole.feed(b"data: 0123456789abcdef\n\n", &mut out);
        assert_eq!(refused, Err(SseError::EventTooLarge { limit: 16 }), "in one read as in many");
        let mut fits = RawEvents::new(16);
        assert_eq!(fits.feed(b"data: 012345\n\n", &mut out), Ok(1));
    }
}
