//! The WHATWG event-stream decoder (HTML §9.2.6, "Parsing an event stream").

use std::borrow::Cow;
use std::time::Duration;

use memchr::{memchr, memchr2};

use super::{SseError, SseEvent, SseLimits};

const BOM: &[u8; 3] = b"\xEF\xBB\xBF";
/// `bom_matched` once the stream start is behind us (BOM stripped, or absent).
const PAST_START: u8 = 3;
/// Buffers grown past this are released after use, so idle streams hold little.
const RETAINED_CAPACITY: usize = 4 * 1024;
/// Limits are kept as u32 to keep the decoder small. A 1 GiB ceiling is far beyond any
/// sane limit and keeps `id_len` (at most 3 bytes per line byte after U+FFFD
/// replacement) within u32.
const LIMIT_CEILING: usize = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    LineTooLong,
    EventTooLarge,
}

/// Incremental event-stream decoder (WHATWG HTML §9.2.6). Feed it the body bytes
/// as they arrive, split anywhere.
///
/// Only a line split across reads is copied (into the line buffer); an event whose
/// lines all lie in one input with a single `data` line is returned borrowing that
/// input. Bytes already buffered are never scanned again.
#[derive(Debug)]
pub struct SseDecoder {
    /// The partial line: bytes after the last line end, none of them CR or LF.
    line: Vec<u8>,
    /// The WHATWG data buffer: every `data` value followed by LF.
    data: String,
    /// The last event id buffer, then the event type buffer: one allocation for both,
    /// split at `id_len`.
    meta: String,
    /// The last valid `retry` value in milliseconds (saturating).
    retry_ms: Option<u32>,
    max_line: u32,
    max_event: u32,
    id_len: u32,
    /// BOM bytes matched (and held back) at the stream start; `PAST_START` after.
    bom_matched: u8,
    /// The last line ended with a CR at the end of an input: an LF opening the next
    /// input belongs to it.
    after_cr: bool,
    /// An event was returned borrowing `data` and `meta`; they are cleared at the next
    /// call instead.
    dispatched: bool,
    failed: Option<Failure>,
}

/// What one pass over an input found.
enum Step<'a> {
    NeedData,
    /// An event ended `consumed` bytes into the input. `borrowed` is its data when it
    /// was a single line of that input (then the data buffer is empty).
    Dispatch {
        consumed: usize,
        borrowed: Option<&'a str>,
    },
}

impl Default for SseDecoder {
    fn default() -> Self {
        SseDecoder::new(SseLimits::default())
    }
}

impl SseDecoder {
    /// A decoder for one stream, bounded by `limits` (each capped at 1 GiB).
    /// Its buffers start empty and grow only as a line or event needs them.
    pub fn new(limits: SseLimits) -> Self {
        let clamp = |limit: usize| u32::try_from(limit.min(LIMIT_CEILING)).unwrap_or(u32::MAX);
        SseDecoder {
            line: Vec::new(),
            data: String::new(),
            meta: String::new(),
            retry_ms: None,
            max_line: clamp(limits.max_line),
            max_event: clamp(limits.max_event),
            id_len: 0,
            bom_matched: 0,
            after_cr: false,
            dispatched: false,
            failed: None,
        }
    }

    /// Consumes a prefix of `input`. Returns how many bytes were consumed and, when
    /// that prefix completed an event, the event. Call again with the rest of the
    /// input until it returns `(input.len(), None)`: every byte is either consumed
    /// into the decoder's state or part of a returned event, never both, so total
    /// work stays O(n) however the input is split. After an error the decoder is
    /// unusable (the stream must be failed).
    ///
    /// An event's `consumed` count ends just after the blank line that dispatched it.
    /// A decoder that returned an event releases the event's buffers on the next
    /// call, so keep calling until `(input.len(), None)` (with an empty slice if need
    /// be) before going idle.
    pub fn decode<'a>(&'a mut self, input: &'a [u8]) -> Result<(usize, Option<SseEvent<'a>>), SseError> {
        if let Some(failure) = self.failed {
            return Err(self.error(failure));
        }
        if self.dispatched {
            self.reset_event();
        }
        let mut pos = self.skip_bom(input);
        if self.bom_matched < PAST_START {
            return Ok((input.len(), None));
        }
        if self.after_cr {
            if let Some(&byte) = input.get(pos) {
                self.after_cr = false;
                if byte == b'\n' {
                    note_scanned(1);
                    pos += 1;
                }
            }
        }
        match self.decode_lines(input, pos) {
            Ok(Step::NeedData) => Ok((input.len(), None)),
            Ok(Step::Dispatch { consumed, borrowed }) => {
                self.dispatched = true;
                Ok((consumed, Some(self.event(borrowed))))
            }
            Err(failure) => {
                self.failed = Some(failure);
                self.release_buffers();
                Err(self.error(failure))
            }
        }
    }

    /// The stream ended. An incomplete event is discarded (WHATWG); returns true if
    /// there was one (useful to tell a truncated upstream from a clean one): a partial
    /// line, or data or an event type not yet dispatched by a blank line.
    pub fn finish(&mut self) -> bool {
        if self.dispatched {
            self.reset_event();
        }
        let held_bom = (1..PAST_START).contains(&self.bom_matched);
        let incomplete = held_bom
            || !self.line.is_empty()
            || !self.data.is_empty()
            || self.meta.len() > self.id_len as usize;
        self.release_buffers();
        self.bom_matched = PAST_START;
        self.after_cr = false;
        incomplete
    }

    /// Bytes of heap this decoder holds (for the per-stream memory bound).
    pub fn buffered_capacity(&self) -> usize {
        self.line.capacity() + self.data.capacity() + self.meta.capacity()
    }

    /// The reconnection time the stream asked for with `retry`, if any.
    pub fn retry(&self) -> Option<Duration> {
        self.retry_ms.map(|ms| Duration::from_millis(u64::from(ms)))
    }

    /// The last event id buffer: the id the next dispatched event will carry.
    pub fn last_event_id(&self) -> &str {
        self.meta.get(..self.id_len as usize).unwrap_or_default()
    }

    /// Strips a UTF-8 BOM at the stream start, even when it arrives split; returns
    /// where the lines begin. Bytes that turn out not to be a BOM go to the line.
    fn skip_bom(&mut self, input: &[u8]) -> usize {
        let mut pos = 0;
        while self.bom_matched < PAST_START {
            let Some(&byte) = input.get(pos) else { break };
            if BOM.get(usize::from(self.bom_matched)) == Some(&byte) {
                note_scanned(1);
                self.bom_matched += 1;
                pos += 1;
            } else {
                let held = BOM.get(..usize::from(self.bom_matched)).unwrap_or_default();
                note_buffered(held.len());
                self.line.extend_from_slice(held);
                self.bom_matched = PAST_START;
            }
        }
        pos
    }

    /// Processes the lines of `input` from `pos` until an event dispatches or the
    /// input ends (then a trailing partial line is buffered).
    fn decode_lines<'a>(&mut self, input: &'a [u8], mut pos: usize) -> Result<Step<'a>, Failure> {
        // The data of the event so far when it is one line of this input, not yet
        // copied; copied into `data` only if a second data line or the input end comes.
        let mut borrowed: Option<&'a str> = None;
        loop {
            let rest = input.get(pos..).unwrap_or_default();
            let Some(at) = memchr2(b'\n', b'\r', rest) else {
                note_scanned(rest.len());
                self.keep_borrowed(&mut borrowed);
                self.buffer_partial_line(rest)?;
                return Ok(Step::NeedData);
            };
            note_scanned(at + 1);
            let (line, terminator) = rest.split_at(at);
            pos += at + 1;
            if terminator.first() == Some(&b'\r') {
                match input.get(pos) {
                    Some(b'\n') => {
                        note_scanned(1);
                        pos += 1;
                    }
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }

            if !self.line.is_empty() {
                // The line began in an earlier input; it is never blank.
                self.complete_buffered_line(line)?;
                continue;
            }
            self.check_line(line.len())?;
            if line.is_empty() {
                if borrowed.is_some() || !self.data.is_empty() {
                    return Ok(Step::Dispatch { consumed: pos, borrowed });
                }
                // Nothing to dispatch; the event type still resets.
                self.meta.truncate(self.id_len as usize);
                continue;
            }
            let Some((name, value)) = split_field(line) else { continue };
            if name == b"data" {
                if borrowed.is_none() && self.data.is_empty() {
                    if let Ok(text) = std::str::from_utf8(value) {
                        self.check_event(text.len() + 1)?;
                        borrowed = Some(text);
                        continue;
                    }
                }
                self.keep_borrowed(&mut borrowed);
            }
            self.handle_field(name, value)?;
        }
    }

    /// Appends the end of a line that began in an earlier input, and processes it.
    fn complete_buffered_line(&mut self, tail: &[u8]) -> Result<(), Failure> {
        self.check_line(self.line.len() + tail.len())?;
        note_buffered(tail.len());
        self.line.extend_from_slice(tail);
        let line = std::mem::take(&mut self.line);
        let handled = match split_field(&line) {
            Some((name, value)) => self.handle_field(name, value),
            None => Ok(()),
        };
        self.line = line;
        self.line.clear();
        if self.line.capacity() > RETAINED_CAPACITY {
            self.line = Vec::new();
        }
        handled
    }

    fn buffer_partial_line(&mut self, partial: &[u8]) -> Result<(), Failure> {
        if !partial.is_empty() {
            self.check_line(self.line.len() + partial.len())?;
            note_buffered(partial.len());
            self.line.extend_from_slice(partial);
        }
        Ok(())
    }

    /// Copies a borrowed single data line into the data buffer (its size was checked).
    fn keep_borrowed(&mut self, borrowed: &mut Option<&str>) {
        if let Some(text) = borrowed.take() {
            note_buffered(text.len() + 1);
            self.data.reserve(text.len() + 1);
            self.data.push_str(text);
            self.data.push('\n');
        }
    }

    /// "Process the field" (WHATWG). Values are decoded per line: CR, LF and `:` are
    /// ASCII, so lossy decoding per line equals decoding the whole stream first.
    fn handle_field(&mut self, name: &[u8], value: &[u8]) -> Result<(), Failure> {
        match name {
            b"data" => {
                let text = String::from_utf8_lossy(value);
                self.check_event(self.data.len() + text.len() + 1)?;
                note_buffered(text.len() + 1);
                self.data.push_str(&text);
                self.data.push('\n');
            }
            b"event" => {
                self.meta.truncate(self.id_len as usize);
                self.meta.push_str(&String::from_utf8_lossy(value));
            }
            b"id" if !value.contains(&0) => {
                let id: Cow<'_, str> = String::from_utf8_lossy(value);
                self.meta.replace_range(..self.id_len as usize, &id);
                // At most 3 bytes per line byte, and lines are under LIMIT_CEILING.
                self.id_len = u32::try_from(id.len()).unwrap_or(u32::MAX);
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                let ms = value
                    .iter()
                    .fold(0u32, |ms, digit| ms.saturating_mul(10).saturating_add(u32::from(digit - b'0')));
                self.retry_ms = Some(ms);
            }
            _ => {}
        }
        Ok(())
    }

    fn check_line(&self, len: usize) -> Result<(), Failure> {
        if len > self.max_line as usize {
            return Err(Failure::LineTooLong);
        }
        Ok(())
    }

    fn check_event(&self, len: usize) -> Result<(), Failure> {
        if len > self.max_event as usize {
            return Err(Failure::EventTooLarge);
        }
        Ok(())
    }

    fn event<'a>(&'a self, borrowed: Option<&'a str>) -> SseEvent<'a> {
        let data = match borrowed {
            Some(text) => text,
            None => self.data.strip_suffix('\n').unwrap_or(&self.data),
        };
        let (last_event_id, event_type) =
            self.meta.split_at_checked(self.id_len as usize).unwrap_or_default();
        SseEvent { event_type, data, last_event_id }
    }

    /// Clears the data and event type buffers after a dispatch; the id persists.
    fn reset_event(&mut self) {
        self.dispatched = false;
        self.data.clear();
        if self.data.capacity() > RETAINED_CAPACITY {
            self.data = String::new();
        }
        self.meta.truncate(self.id_len as usize);
        if self.meta.capacity() > RETAINED_CAPACITY {
            self.meta.shrink_to_fit();
        }
    }

    fn release_buffers(&mut self) {
        self.line = Vec::new();
        self.data = String::new();
        self.meta.truncate(self.id_len as usize);
        self.meta.shrink_to_fit();
    }

    fn error(&self, failure: Failure) -> SseError {
        match failure {
            Failure::LineTooLong => SseError::LineTooLong { limit: self.max_line as usize },
            Failure::EventTooLarge => SseError::EventTooLarge { limit: self.max_event as usize },
        }
    }
}

/// Splits a non-blank line into field name and value, stripping exactly one space
/// after the colon; `None` for a comment. No colon: the whole line names the field.
fn split_field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    match memchr(b':', line) {
        Some(0) => None,
        Some(colon) => {
            let (name, rest) = line.split_at(colon);
            let value = rest.get(1..).unwrap_or_default();
            Some((name, value.strip_prefix(b" ").unwrap_or(value)))
        }
        None => Some((line, &[])),
    }
}

#[cfg(test)]
thread_local! {
    /// Bytes examined while looking for line ends (and the BOM).
    static SCANNED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Bytes copied into the line and data buffers.
    static BUFFERED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[inline]
fn note_scanned(bytes: usize) {
    #[cfg(test)]
    SCANNED.with(|count| count.set(count.get() + bytes));
    #[cfg(not(test))]
    let _ = bytes;
}

#[inline]
fn note_buffered(bytes: usize) {
    #[cfg(test)]
    BUFFERED.with(|count| count.set(count.get() + bytes));
    #[cfg(not(test))]
    let _ = bytes;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` in order, collecting (type, data, id) of every event, and
    /// returns them with the bytes scanned and buffered meanwhile.
    fn decode_counting(chunks: &[&[u8]]) -> (Vec<(String, String, String)>, usize, usize) {
        SCANNED.with(|count| count.set(0));
        BUFFERED.with(|count| count.set(0));
        let mut decoder = SseDecoder::new(SseLimits { max_line: 1 << 20, max_event: 1 << 22 });
        let mut events = Vec::new();
        for chunk in chunks {
            let mut rest = *chunk;
            loop {
                let (consumed, event) = decoder.decode(rest).unwrap();
                let Some(event) = event else {
                    assert_eq!(consumed, rest.len());
                    break;
                };
                events.push((
                    event.event_type.to_owned(),
                    event.data.to_owned(),
                    event.last_event_id.to_owned(),
                ));
                rest = &rest[consumed..];
            }
        }
        assert!(!decoder.finish());
        (events, SCANNED.with(|count| count.get()), BUFFERED.with(|count| count.get()))
    }

    fn large_event() -> Vec<u8> {
        let mut stream = b"\xEF\xBB\xBFid: 7\r\nevent: big\r\n".to_vec();
        for line in 0..64 {
            stream.extend_from_slice(b"data: ");
            stream.extend(std::iter::repeat_n(b'a' + (line % 26), 1000));
            stream.extend_from_slice(b"\r\n");
        }
        stream.extend_from_slice(b"\r\n");
        stream
    }

    #[test]
    fn trickling_a_large_event_byte_by_byte_scans_each_byte_once() {
        let stream = large_event();
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        let (events, scanned, buffered) = decode_counting(&bytes);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].1.len(), 64 * 1001 - 1);
        assert_eq!(scanned, stream.len(), "every byte is looked at for a line end exactly once");
        // Each byte is copied at most twice: into the line buffer, then the data buffer.
        assert!(buffered <= 2 * stream.len(), "buffered {buffered} of {} bytes", stream.len());
    }

    #[test]
    fn whole_input_with_one_data_line_is_returned_without_copying() {
        let stream = b"data: {\"content\":\"hi\"}\n\ndata: second\n\n";
        let (events, scanned, buffered) = decode_counting(&[stream]);
        assert_eq!(events.len(), 2);
        assert_eq!(scanned, stream.len());
        assert_eq!(buffered, 0);
    }

    #[test]
    fn decoder_stays_small() {
        let size = std::mem::size_of::<SseDecoder>();
        println!("SseDecoder is {size} bytes");
        assert!(size <= 96, "{size} bytes");
    }

    #[test]
    fn big_buffers_are_released_after_their_event() {
        let stream = large_event();
        let mut decoder = SseDecoder::default();
        let mut rest: &[u8] = &stream;
        let mut events = 0;
        for chunk in stream.chunks(700) {
            rest = chunk;
            loop {
                let (consumed, event) = decoder.decode(rest).unwrap();
                if event.is_none() {
                    break;
                }
                events += 1;
                rest = &rest[consumed..];
            }
        }
        assert!(rest.is_empty());
        assert_eq!(events, 1);
        assert!(decoder.buffered_capacity() <= 2 * RETAINED_CAPACITY, "{}", decoder.buffered_capacity());
    }
}
