//! The backend response body: content-length, chunked (RFC 9112 §7.1) or
//! until-close, decoded byte by byte into slices of the caller's input.
//!
//! The decoder never buffers: all it remembers between calls is a few integers, so
//! where the input is split cannot change what comes out.

use super::{BodyFraming, HttpError};

/// Longest chunk size line (size plus extensions) accepted.
const MAX_CHUNK_LINE: u16 = 4096;
/// Longest trailer field line accepted.
const MAX_TRAILER_LINE: u16 = 4096;
/// Largest trailer section accepted, all lines together.
const MAX_TRAILER_SECTION: u16 = 16 * 1024;

/// What the body decoder found in the bytes given to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length {
        remaining: u64,
    },
    UntilClose,
    /// In a chunk size line: the hex digits, then optional whitespace, then `;` and
    /// extensions, which are skipped.
    ChunkSize {
        size: u64,
        digits: bool,
        part: SizeLinePart,
        line: u16,
    },
    /// A CR ended the size line; the LF must follow.
    ChunkSizeLf {
        size: u64,
    },
    ChunkData {
        remaining: u64,
    },
    /// After chunk data: CRLF or a bare LF.
    ChunkDataEnd {
        saw_cr: bool,
    },
    /// After the last chunk: trailer lines until an empty one.
    Trailer {
        line: u16,
        saw_cr: bool,
        section: u16,
    },
    Done,
    /// A malformed chunked body; sticky.
    Failed(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SizeLinePart {
    Digits,
    /// Whitespace after the digits (RFC 9112's BWS before `;`).
    Space,
    Extensions,
}

impl BodyDecoder {
    /// A decoder for a body with this framing, positioned at its first byte (a
    /// `ContentLength(0)` body is already at `End`).
    pub fn new(framing: BodyFraming) -> Self {
        let state = match framing {
            BodyFraming::ContentLength(0) => State::Done,
            BodyFraming::ContentLength(remaining) => State::Length { remaining },
            BodyFraming::Chunked => {
                State::ChunkSize { size: 0, digits: false, part: SizeLinePart::Digits, line: 0 }
            }
            BodyFraming::UntilClose => State::UntilClose,
        };
        BodyDecoder { state }
    }

    /// Consumes a prefix of `input`, returning its length and what it held. Call
    /// again with the rest until `NeedData` or `End`. Chunk extensions and trailers
    /// are skipped; every split of the input gives the same data. Only `End` leaves
    /// input unconsumed; after `End` every call returns `(0, End)`.
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<(usize, BodyEvent<'a>), HttpError> {
        let mut pos = 0;
        loop {
            match self.state {
                State::Done => return Ok((pos, BodyEvent::End)),
                State::Failed(why) => return Err(HttpError::BadChunk(why)),
                State::UntilClose => {
                    let rest = input.get(pos..).unwrap_or_default();
                    let event = if rest.is_empty() { BodyEvent::NeedData } else { BodyEvent::Data(rest) };
                    return Ok((input.len(), event));
                }
                State::Length { remaining } => {
                    let (taken, data) = take(input, pos, remaining);
                    if taken == remaining {
                        self.state = State::Done;
                    } else {
                        self.state = State::Length { remaining: remaining - taken };
                    }
                    return Ok(match data {
                        Some(data) => (pos + data.len(), BodyEvent::Data(data)),
                        None => (pos, BodyEvent::NeedData),
                    });
                }
                State::ChunkData { remaining } => {
                    let Some(data) = take(input, pos, remaining).1 else {
                        return Ok((pos, BodyEvent::NeedData));
                    };
                    self.state = match remaining - data.len() as u64 {
                        0 => State::ChunkDataEnd { saw_cr: false },
                        remaining => State::ChunkData { remaining },
                    };
                    return Ok((pos + data.len(), BodyEvent::Data(data)));
                }
                _ => {
                    let Some(&byte) = input.get(pos) else {
                        return Ok((pos, BodyEvent::NeedData));
                    };
                    pos += 1;
                    if let Err(why) = self.handle_framing_byte(byte) {
                        self.state = State::Failed(why);
                        return Err(HttpError::BadChunk(why));
                    }
                }
            }
        }
    }

    /// Advances the chunked framing by one byte outside chunk data.
    fn handle_framing_byte(&mut self, byte: u8) -> Result<(), &'static str> {
        self.state = match self.state {
            State::ChunkSize { size, digits, part, line } => {
                let line_end = byte == b'\r' || byte == b'\n';
                if line_end && !digits {
                    return Err("missing chunk size");
                }
                if !line_end && line >= MAX_CHUNK_LINE {
                    return Err("chunk size line too long");
                }
                let line = line + 1;
                match (byte, part) {
                    (b'\r', _) => State::ChunkSizeLf { size },
                    (b'\n', _) => after_size_line(size),
                    (_, SizeLinePart::Digits) if byte.is_ascii_hexdigit() => {
                        let digit = u64::from(hex_value(byte));
                        let size = size.checked_mul(16).and_then(|s| s.checked_add(digit));
                        let size = size.ok_or("chunk size overflows")?;
                        State::ChunkSize { size, digits: true, part, line }
                    }
                    (b' ' | b'\t', SizeLinePart::Digits | SizeLinePart::Space) if digits => {
                        State::ChunkSize { size, digits, part: SizeLinePart::Space, line }
                    }
                    (b';', SizeLinePart::Digits | SizeLinePart::Space) if digits => {
                        State::ChunkSize { size, digits, part: SizeLinePart::Extensions, line }
                    }
                    (_, SizeLinePart::Extensions) => State::ChunkSize { size, digits, part, line },
                    _ => return Err("invalid chunk size"),
                }
            }
            State::ChunkSizeLf { size } => match byte {
                b'\n' => after_size_line(size),
                _ => return Err("CR without LF in chunk size line"),
            },
            State::ChunkDataEnd { saw_cr } => match byte {
                b'\n' => State::ChunkSize { size: 0, digits: false, part: SizeLinePart::Digits, line: 0 },
                b'\r' if !saw_cr => State::ChunkDataEnd { saw_cr: true },
                _ => return Err("chunk data not followed by CRLF"),
            },
            State::Trailer { line, saw_cr, section } => {
                if section >= MAX_TRAILER_SECTION {
                    return Err("trailer section too large");
                }
                let section = section + 1;
                match byte {
                    b'\n' if line == 0 => State::Done,
                    b'\n' => State::Trailer { line: 0, saw_cr: false, section },
                    _ if saw_cr => return Err("CR without LF in trailer"),
                    b'\r' => State::Trailer { line, saw_cr: true, section },
                    _ if line >= MAX_TRAILER_LINE => return Err("trailer line too long"),
                    _ => State::Trailer { line: line + 1, saw_cr, section },
                }
            }
            // Data, length and until-close states never reach here.
            other => other,
        };
        Ok(())
    }

    /// The connection closed: `Ok` when that ends the body cleanly (until-close
    /// framing, or already at `End`), `Err(Truncated)` otherwise (or the chunk
    /// error, if the body was already malformed).
    pub fn finish(&mut self) -> Result<(), HttpError> {
        match self.state {
            State::Done => Ok(()),
            State::UntilClose => {
                self.state = State::Done;
                Ok(())
            }
            State::Failed(why) => Err(HttpError::BadChunk(why)),
            _ => Err(HttpError::Truncated),
        }
    }
}

fn after_size_line(size: u64) -> State {
    if size == 0 {
        State::Trailer { line: 0, saw_cr: false, section: 0 }
    } else {
        State::ChunkData { remaining: size }
    }
}

/// Up to `remaining` bytes of `input` from `pos`, with how many were taken; `None`
/// when there are none.
fn take(input: &[u8], pos: usize, remaining: u64) -> (u64, Option<&[u8]>) {
    let rest = input.get(pos..).unwrap_or_default();
    let len = usize::try_from(remaining).map_or(rest.len(), |remaining| remaining.min(rest.len()));
    match rest.get(..len) {
        Some(data) if !data.is_empty() => (len as u64, Some(data)),
        _ => (0, None),
    }
}

fn hex_value(byte: u8) -> u8 {
    match byte {
        b'0'..=b'9' => byte - b'0',
        b'a'..=b'f' => byte - b'a' + 10,
        b'A'..=b'F' => byte - b'A' + 10,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` one after another the way a connection reader would (keeping
    /// unconsumed bytes), returning the body, the bytes left after `End` (if it
    /// came) and the error, if any.
    fn decode_pieces(
        framing: BodyFraming,
        pieces: &[&[u8]],
    ) -> (Vec<u8>, Option<Vec<u8>>, Option<HttpError>) {
        let mut decoder = BodyDecoder::new(framing);
        let mut body = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for piece in pieces {
            pending.extend_from_slice(piece);
            loop {
                match decoder.decode(&pending) {
                    Err(e) => return (body, None, Some(e)),
                    Ok((used, BodyEvent::Data(data))) => {
                        assert!(!data.is_empty());
                        body.extend_from_slice(data);
                        pending.drain(..used);
                    }
                    Ok((used, BodyEvent::NeedData)) => {
                        pending.drain(..used);
                        break;
                    }
                    Ok((used, BodyEvent::End)) => {
                        pending.drain(..used);
                        let mut rest = pending.clone();
                        for later in pieces.iter().skip_while(|p| !std::ptr::eq(**p, *piece)).skip(1) {
                            rest.extend_from_slice(later);
                        }
                        return (body, Some(rest), None);
                    }
                }
            }
        }
        (body, None, None)
    }

    fn whole(framing: BodyFraming, input: &[u8]) -> (Vec<u8>, Option<Vec<u8>>, Option<HttpError>) {
        decode_pieces(framing, &[input])
    }

    fn bytewise(framing: BodyFraming, input: &[u8]) -> (Vec<u8>, Option<Vec<u8>>, Option<HttpError>) {
        let pieces: Vec<&[u8]> = input.chunks(1).collect();
        decode_pieces(framing, &pieces)
    }

    /// Whole and byte-at-a-time must agree; returns the whole result.
    fn decode(framing: BodyFraming, input: &[u8]) -> (Vec<u8>, Option<Vec<u8>>, Option<HttpError>) {
        let result = whole(framing, input);
        assert_eq!(bytewise(framing, input), result, "byte-at-a-time differs from whole");
        result
    }

    fn chunked_body(input: &[u8]) -> Vec<u8> {
        let (body, rest, error) = decode(BodyFraming::Chunked, input);
        assert_eq!(error, None);
        assert_eq!(rest.as_deref(), Some(&b""[..]), "the body ends at the end of the input");
        body
    }

    fn chunk_error(input: &[u8]) -> HttpError {
        decode(BodyFraming::Chunked, input).2.expect("an error")
    }

    #[test]
    fn content_length_ends_exactly_at_the_length() {
        let (body, rest, error) = decode(BodyFraming::ContentLength(5), b"helloHTTP/1.1 200 OK");
        assert_eq!(
            (body.as_slice(), rest.as_deref(), error),
            (&b"hello"[..], Some(&b"HTTP/1.1 200 OK"[..]), None)
        );
    }

    #[test]
    fn content_length_data_borrows_the_input() {
        let input = b"abcdef";
        let mut decoder = BodyDecoder::new(BodyFraming::ContentLength(4));
        let (used, event) = decoder.decode(input).unwrap();
        assert_eq!(used, 4);
        let BodyEvent::Data(data) = event else { panic!("expected data, got {event:?}") };
        assert_eq!(data.as_ptr(), input.as_ptr());
        assert_eq!(decoder.decode(&input[4..]).unwrap(), (0, BodyEvent::End));
        assert_eq!(decoder.decode(b"").unwrap(), (0, BodyEvent::End));
        assert_eq!(decoder.finish(), Ok(()));
    }

    #[test]
    fn zero_content_length_is_already_at_end() {
        let mut decoder = BodyDecoder::new(BodyFraming::ContentLength(0));
        assert_eq!(decoder.decode(b"next").unwrap(), (0, BodyEvent::End));
        assert_eq!(decoder.finish(), Ok(()));
    }

    #[test]
    fn content_length_cut_short_is_truncated() {
        let mut decoder = BodyDecoder::new(BodyFraming::ContentLength(10));
        assert_eq!(decoder.decode(b"abc").unwrap(), (3, BodyEvent::Data(b"abc")));
        assert_eq!(decoder.decode(b"").unwrap(), (0, BodyEvent::NeedData));
        assert_eq!(decoder.finish(), Err(HttpError::Truncated));
    }

    #[test]
    fn until_close_takes_everything_and_close_ends_it() {
        let mut decoder = BodyDecoder::new(BodyFraming::UntilClose);
        assert_eq!(decoder.decode(b"data: x\n\n").unwrap(), (9, BodyEvent::Data(b"data: x\n\n")));
        assert_eq!(decoder.decode(b"").unwrap(), (0, BodyEvent::NeedData));
        assert_eq!(decoder.finish(), Ok(()));
        assert_eq!(decoder.decode(b"more").unwrap(), (0, BodyEvent::End));
    }

    #[test]
    fn chunked_body_with_crlf() {
        assert_eq!(chunked_body(b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"), b"hello, world");
    }

    #[test]
    fn chunked_sizes_are_hex_in_either_case() {
        let data = "x".repeat(0x1af);
        let input = format!("1aF\r\n{data}\r\n0\r\n\r\n");
        assert_eq!(chunked_body(input.as_bytes()), data.as_bytes());
        assert_eq!(chunked_body(b"0005\r\nhello\r\n000\r\n\r\n"), b"hello");
    }

    #[test]
    fn chunked_accepts_bare_lf() {
        assert_eq!(chunked_body(b"5\nhello\n0\n\n"), b"hello");
        assert_eq!(chunked_body(b"5\r\nhello\n0\n\r\n"), b"hello");
    }

    #[test]
    fn chunk_extensions_are_skipped() {
        assert_eq!(
            chunked_body(b"5;name=value\r\nhello\r\n3 ; a=\"q;\\\"x\"\r\nabc\r\n0;last\r\n\r\n"),
            b"helloabc"
        );
        assert_eq!(chunked_body(b"5 \r\nhello\r\n0\t\r\n\r\n"), b"hello");
    }

    #[test]
    fn trailers_are_skipped_until_the_blank_line() {
        let input = b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\n\r\nHTTP/1.1";
        let (body, rest, error) = decode(BodyFraming::Chunked, input);
        assert_eq!((body.as_slice(), rest.as_deref(), error), (&b"hello"[..], Some(&b"HTTP/1.1"[..]), None));
    }

    #[test]
    fn bytes_after_the_last_chunk_belong_to_the_next_response() {
        let (body, rest, _) = decode(BodyFraming::Chunked, b"2\r\nhi\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n");
        assert_eq!((body.as_slice(), rest.as_deref()), (&b"hi"[..], Some(&b"HTTP/1.1 200 OK\r\n"[..])));
    }

    #[test]
    fn malformed_size_lines_are_refused() {
        assert_eq!(chunk_error(b"\r\nhello"), HttpError::BadChunk("missing chunk size"));
        assert_eq!(chunk_error(b";ext\r\n"), HttpError::BadChunk("invalid chunk size"));
        assert_eq!(chunk_error(b"5x\r\nhello"), HttpError::BadChunk("invalid chunk size"));
        assert_eq!(chunk_error(b"-5\r\n"), HttpError::BadChunk("invalid chunk size"));
        assert_eq!(chunk_error(b" 5\r\n"), HttpError::BadChunk("invalid chunk size"));
        assert_eq!(chunk_error(b"1 0\r\n"), HttpError::BadChunk("invalid chunk size"));
        assert_eq!(chunk_error(b"0x5\r\n"), HttpError::BadChunk("invalid chunk size"));
        assert_eq!(chunk_error(b"5\rhello"), HttpError::BadChunk("CR without LF in chunk size line"));
    }

    #[test]
    fn chunk_size_overflow_is_refused() {
        assert_eq!(chunk_error(b"10000000000000000\r\n"), HttpError::BadChunk("chunk size overflows"));
        // The largest size still parses (and then waits for its data).
        let (_, _, error) = decode(BodyFraming::Chunked, b"ffffffffffffffff\r\nabc");
        assert_eq!(error, None);
    }

    #[test]
    fn chunk_size_line_is_bounded() {
        let mut line = b"5;".to_vec();
        line.resize(MAX_CHUNK_LINE as usize, b'x');
        line.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        assert_eq!(chunked_body(&line), b"hello");
        let mut line = b"5;".to_vec();
        line.resize(MAX_CHUNK_LINE as usize + 1, b'x');
        line.extend_from_slice(b"\r\n");
        assert_eq!(chunk_error(&line), HttpError::BadChunk("chunk size line too long"));
    }

    #[test]
    fn chunk_data_must_end_with_a_line_break() {
        assert_eq!(
            chunk_error(b"5\r\nhelloX\r\n0\r\n\r\n"),
            HttpError::BadChunk("chunk data not followed by CRLF")
        );
        assert_eq!(chunk_error(b"5\r\nhello\r\r\n"), HttpError::BadChunk("chunk data not followed by CRLF"));
    }

    #[test]
    fn trailers_are_bounded() {
        let mut input = b"0\r\nX-Long: ".to_vec();
        input.resize(input.len() + MAX_TRAILER_LINE as usize, b'x');
        input.extend_from_slice(b"\r\n\r\n");
        assert_eq!(chunk_error(&input), HttpError::BadChunk("trailer line too long"));

        let mut input = b"0\r\n".to_vec();
        for _ in 0..MAX_TRAILER_SECTION / 8 {
            input.extend_from_slice(b"X-A: 1\r\n");
        }
        input.extend_from_slice(b"\r\n");
        assert_eq!(chunk_error(&input), HttpError::BadChunk("trailer section too large"));
        assert_eq!(chunk_error(b"0\r\nX: 1\rX"), HttpError::BadChunk("CR without LF in trailer"));
    }

    #[test]
    fn chunk_errors_are_sticky() {
        let mut decoder = BodyDecoder::new(BodyFraming::Chunked);
        assert!(decoder.decode(b"zz\r\n").is_err());
        assert_eq!(decoder.decode(b"5\r\nhello"), Err(HttpError::BadChunk("invalid chunk size")));
        assert_eq!(decoder.finish(), Err(HttpError::BadChunk("invalid chunk size")));
    }

    #[test]
    fn chunked_cut_short_is_truncated_anywhere_before_the_blank_line() {
        let input = b"5\r\nhello\r\n0\r\nX: 1\r\n\r\n";
        for end in 0..input.len() {
            let mut decoder = BodyDecoder::new(BodyFraming::Chunked);
            let mut pos = 0;
            while let Ok((used, event)) = decoder.decode(&input[pos..end]) {
                pos += used;
                if event == BodyEvent::NeedData {
                    break;
                }
            }
            assert_eq!(decoder.finish(), Err(HttpError::Truncated), "cut at {end}");
        }
        let mut decoder = BodyDecoder::new(BodyFraming::Chunked);
        let mut pos = 0;
        while pos < input.len() {
            pos += decoder.decode(&input[pos..]).unwrap().0;
        }
        assert_eq!(decoder.finish(), Ok(()));
    }

    #[test]
    fn chunked_data_borrows_the_input() {
        let input = b"3\r\nabc\r\n0\r\n\r\n";
        let mut decoder = BodyDecoder::new(BodyFraming::Chunked);
        let (used, event) = decoder.decode(input).unwrap();
        assert_eq!((used, event), (6, BodyEvent::Data(b"abc")));
        let BodyEvent::Data(data) = event else { unreachable!() };
        assert_eq!(data.as_ptr(), input[3..].as_ptr());
        assert_eq!(decoder.decode(&input[6..]).unwrap(), (7, BodyEvent::End));
    }
}
