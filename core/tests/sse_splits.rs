//! The decoder gives the same events however its input is split, and the same
//! events as a direct, whole-stream transcription of the WHATWG algorithm.

use std::time::Duration;

use handoff_core::sse::{SseDecoder, SseError, SseLimits};
use proptest::prelude::*;
use proptest::sample::Index;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    event_type: String,
    data: String,
    last_event_id: String,
}

/// Everything observable about one decoded stream.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    events: Vec<Event>,
    /// `finish()`'s answer, or the error that stopped the stream.
    end: Result<bool, SseError>,
    retry: Option<Duration>,
}

fn decode_chunks<'c>(limits: SseLimits, chunks: impl IntoIterator<Item = &'c [u8]>) -> Outcome {
    let mut decoder = SseDecoder::new(limits);
    let mut events = Vec::new();
    for chunk in chunks {
        let mut rest = chunk;
        // Every event consumes at least one byte, so this loop ends within len + 1 turns.
        for _ in 0..=chunk.len() {
            match decoder.decode(rest) {
                Ok((consumed, Some(event))) => {
                    events.push(Event {
                        event_type: event.event_type.to_owned(),
                        data: event.data.to_owned(),
                        last_event_id: event.last_event_id.to_owned(),
                    });
                    assert!(consumed > 0 && consumed <= rest.len());
                    rest = &rest[consumed..];
                }
                Ok((consumed, None)) => {
                    assert_eq!(consumed, rest.len());
                    rest = &[];
                    break;
                }
                Err(error) => return Outcome { events, end: Err(error), retry: decoder.retry() },
            }
        }
        assert!(rest.is_empty(), "decode stopped returning before the chunk was consumed");
    }
    let incomplete = decoder.finish();
    Outcome { events, end: Ok(incomplete), retry: decoder.retry() }
}

/// HTML §9.2.6 transcribed for a whole stream: decode UTF-8 (stripping one BOM),
/// then split lines and process fields.
fn reference(stream: &[u8]) -> Outcome {
    let body = stream.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(stream);
    let text = String::from_utf8_lossy(body);
    let (mut data, mut event_type, mut id) = (String::new(), String::new(), String::new());
    let mut retry = None;
    let mut events = Vec::new();
    let mut rest: &str = &text;
    while let Some(end) = rest.find(['\r', '\n']) {
        let line = &rest[..end];
        rest = rest[end..].strip_prefix("\r\n").unwrap_or(&rest[end + 1..]);
        if line.is_empty() {
            if !data.is_empty() {
                if data.ends_with('\n') {
                    data.pop();
                }
                events.push(Event {
                    event_type: event_type.clone(),
                    data: data.clone(),
                    last_event_id: id.clone(),
                });
            }
            data.clear();
            event_type.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "event" => event_type = value.to_owned(),
            "id" if !value.contains('\0') => id = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                let ms = value
                    .bytes()
                    .fold(0u32, |ms, d| ms.saturating_mul(10).saturating_add(u32::from(d - b'0')));
                retry = Some(Duration::from_millis(u64::from(ms)));
            }
            _ => {}
        }
    }
    let incomplete = !rest.is_empty() || !data.is_empty() || !event_type.is_empty();
    Outcome { events, end: Ok(incomplete), retry }
}

fn bytes(options: &[&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(options.to_vec()).prop_map(<[u8]>::to_vec)
}

/// Field values: text, spaces, colons, NUL, digits, and pieces of multi-byte
/// characters (valid or not once joined).
fn value() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop::sample::select(vec![
        b'a', b'z', b'0', b'7', b'9', b' ', b':', b'{', b'"', 0x00, 0xFF, 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xEF,
        0xBB, 0xBF,
    ]);
    prop_oneof![
        3 => prop::collection::vec(byte, 0..12),
        1 => "[0-9]{0,12}".prop_map(String::into_bytes),
    ]
}

fn line_end() -> impl Strategy<Value = Vec<u8>> {
    bytes(&[b"\n", b"\r", b"\r\n"])
}

fn field_line() -> impl Strategy<Value = Vec<u8>> {
    let name = bytes(&[b"data", b"data", b"event", b"id", b"retry", b"Data", b"dat", b"foo", b""]);
    let separator = bytes(&[b":", b": ", b":  ", b""]);
    (name, separator, value(), line_end()).prop_map(|(name, separator, value, end)| {
        // A line without a colon has no value: its bytes would extend the name.
        let value = if separator.is_empty() { Vec::new() } else { value };
        [name, separator, value, end].concat()
    })
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    let start = bytes(&[b"", b"\xEF\xBB\xBF", b"\xEF\xBB", b"\xEF", b"\xEF\xBB\xBF\xEF\xBB\xBF"]);
    let piece = prop_oneof![
        6 => field_line(),
        3 => line_end(),
        1 => (value(), line_end()).prop_map(|(text, end)| [b":".to_vec(), text, end].concat()),
        1 => prop::collection::vec(any::<u8>(), 0..8),
    ];
    (start, prop::collection::vec(piece, 0..24)).prop_map(|(start, pieces)| [start, pieces.concat()].concat())
}

fn split_at_cuts<'s>(stream: &'s [u8], cuts: &[Index]) -> Vec<&'s [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|cut| cut.index(stream.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for point in points {
        chunks.push(&stream[start..point]);
        start = point;
    }
    chunks.push(&stream[start..]);
    chunks
}

const ROOMY: SseLimits = SseLimits { max_line: 1 << 16, max_event: 1 << 16 };

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn whole_input_matches_the_whatwg_algorithm(stream in stream()) {
        prop_assert_eq!(decode_chunks(ROOMY, [stream.as_slice()]), reference(&stream));
    }

    #[test]
    fn byte_at_a_time_and_random_splits_match_whole_input(
        stream in stream(),
        cuts in prop::collection::vec(any::<Index>(), 0..10),
    ) {
        let whole = decode_chunks(ROOMY, [stream.as_slice()]);
        prop_assert_eq!(&decode_chunks(ROOMY, stream.chunks(1)), &whole);
        prop_assert_eq!(&decode_chunks(ROOMY, split_at_cuts(&stream, &cuts)), &whole);
    }

    #[test]
    fn limit_errors_come_at_the_same_point_however_the_input_is_split(
        stream in stream(),
        cuts in prop::collection::vec(any::<Index>(), 0..10),
        max_line in 0usize..24,
        max_event in 0usize..32,
    ) {
        let limits = SseLimits { max_line, max_event };
        let whole = decode_chunks(limits, [stream.as_slice()]);
        prop_assert_eq!(&decode_chunks(limits, stream.chunks(1)), &whole);
        prop_assert_eq!(&decode_chunks(limits, split_at_cuts(&stream, &cuts)), &whole);
    }
}
