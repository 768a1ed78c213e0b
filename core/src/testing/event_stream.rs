//! The `sse` target: where reads end never changes what the decoder says, and what
//! it holds stays within its limits.

use std::time::Duration;

use super::script::{split_at_cuts, Script};
use crate::sse::{SseDecoder, SseError, SseLimits};

/// Limits the first byte picks from (`None`: the default), small ones so that short
/// inputs reach the limit errors.
const LIMIT_CHOICES: [Option<usize>; 5] = [None, Some(0), Some(8), Some(64), Some(1024)];

#[derive(Debug, PartialEq, Eq)]
struct Event {
    event_type: String,
    data: String,
    last_event_id: String,
}

/// Everything observable about one decoded stream.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    events: Vec<Event>,
    /// `finish()`'s answer (an incomplete event was discarded), or the error.
    end: Result<bool, SseError>,
    retry: Option<Duration>,
    last_event_id: String,
}

pub(super) fn check(data: &[u8]) -> Result<(), String> {
    let mut script = Script::new(data);
    let limits = limits(script.byte());
    let cuts = script.cuts(8);
    let stream = script.rest();

    let whole = decode(limits, &[stream])?;
    let cut = decode(limits, &split_at_cuts(stream, &cuts))?;
    if cut != whole {
        return Err(format!("cut at {cuts:?}: {cut:?}\nwhole: {whole:?}"));
    }
    let bytewise = decode(limits, &stream.chunks(1).collect::<Vec<_>>())?;
    if bytewise != whole {
        return Err(format!("one byte at a time: {bytewise:?}\nwhole: {whole:?}"));
    }
    Ok(())
}

fn limits(choice: u8) -> SseLimits {
    let default = SseLimits::default();
    let pick = |index: u8| LIMIT_CHOICES.get(usize::from(index % 5)).copied().flatten();
    SseLimits {
        max_line: pick(choice).unwrap_or(default.max_line),
        max_event: pick(choice / 5).unwrap_or(default.max_event),
    }
}

/// Most heap a decoder within `limits` may hold. The line buffer holds at most
/// `max_line` bytes and the data buffer at most `max_event`; the event type and
/// the last event id each come from one line, at most 3 bytes per line byte after
/// U+FFFD replacement. Amortized growth may double each buffer's capacity, and an
/// allocation is at least 8 bytes.
pub(super) fn capacity_bound(limits: SseLimits) -> usize {
    let line = 2 * limits.max_line.max(8);
    let data = 2 * limits.max_event.max(8);
    let meta = 2 * (6 * limits.max_line).max(8);
    line + data + meta
}

/// Decodes `pieces` in order as a connection reader would, checking the
/// decoder's consumption rules and held memory after every call.
fn decode(limits: SseLimits, pieces: &[&[u8]]) -> Result<Decoded, String> {
    let bound = capacity_bound(limits);
    let mut decoder = SseDecoder::new(limits);
    let mut events = Vec::new();
    for piece in pieces {
        let mut rest = *piece;
        // Every event consumes at least one byte, so a piece takes at most len + 1 calls.
        for _ in 0..=piece.len() {
            let before = rest.len();
            let dispatched = match decoder.decode(rest) {
                Ok((consumed, Some(event))) => {
                    if consumed == 0 || consumed > before {
                        return Err(format!("an event consumed {consumed} of {before} bytes"));
                    }
                    events.push(Event {
                        event_type: event.event_type.to_owned(),
                        data: event.data.to_owned(),
                        last_event_id: event.last_event_id.to_owned(),
                    });
                    rest = rest.get(consumed..).unwrap_or_default();
                    true
                }
                Ok((consumed, None)) => {
                    if consumed != before {
                        return Err(format!("no event, but only {consumed} of {before} bytes consumed"));
                    }
                    rest = &[];
                    false
                }
                Err(error) => return failed(decoder, events, error),
            };
            let held = decoder.buffered_capacity();
            if held > bound {
                return Err(format!("decoder holds {held} bytes, over {bound} for {limits:?}"));
            }
            if !dispatched {
                break;
            }
        }
        if !rest.is_empty() {
            return Err(format!("decode kept returning events with {} bytes left", rest.len()));
        }
    }
    let incomplete = decoder.finish();
    let held = decoder.buffered_capacity();
    let id_len = decoder.last_event_id().len();
    if held > id_len {
        return Err(format!("a finished decoder holds {held} bytes for a {id_len}-byte last event id"));
    }
    Ok(Decoded {
        events,
        end: Ok(incomplete),
        retry: decoder.retry(),
        last_event_id: decoder.last_event_id().to_owned(),
    })
}

/// After an error the decoder has let its buffers go and repeats the error.
fn failed(mut decoder: SseDecoder, events: Vec<Event>, error: SseError) -> Result<Decoded, String> {
    let held = decoder.buffered_capacity();
    let id_len = decoder.last_event_id().len();
    if held > id_len {
        return Err(format!("a failed decoder holds {held} bytes for a {id_len}-byte last event id"));
    }
    match decoder.decode(b"data: more\n\n") {
        Err(again) if again == error => {}
        other => return Err(format!("after {error:?}, decode gave {other:?}")),
    }
    Ok(Decoded {
        events,
        end: Err(error),
        retry: decoder.retry(),
        last_event_id: decoder.last_event_id().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decode_loop_collects_every_event_and_the_end() {
        let stream: &[u8] = b"id: 1\ndata: a\n\nevent: e\ndata: b\ndata: c\n\nretry: 5\ndata: partial";
        let decoded = decode(SseLimits::default(), &[stream]).unwrap();
        let events: Vec<(&str, &str, &str)> = decoded
            .events
            .iter()
            .map(|event| (event.event_type.as_str(), event.data.as_str(), event.last_event_id.as_str()))
            .collect();
        assert_eq!(events, [("", "a", "1"), ("e", "b\nc", "1")]);
        assert_eq!(decoded.end, Ok(true), "the partial event was discarded");
        assert_eq!(decoded.retry, Some(Duration::from_millis(5)));
    }

    #[test]
    fn the_first_byte_picks_small_limits() {
        assert_eq!(limits(0), SseLimits::default());
        assert_eq!(limits(2 + 5 * 3), SseLimits { max_line: 8, max_event: 64 });
        let decoded = decode(limits(2 + 5 * 2), &[b"data: 123456789\n\n"]).unwrap();
        assert_eq!(decoded.end, Err(SseError::LineTooLong { limit: 8 }));
    }
}
