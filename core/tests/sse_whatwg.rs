//! The WHATWG event-stream parsing rules (HTML §9.2.6), one test each.

use std::time::Duration;

use handoff_core::sse::{SseDecoder, SseError, SseLimits};

#[derive(Debug, PartialEq, Eq)]
struct Event {
    event_type: String,
    data: String,
    last_event_id: String,
}

fn message(data: &str) -> Event {
    Event { event_type: String::new(), data: data.to_owned(), last_event_id: String::new() }
}

/// Feeds `chunks` one after another; returns the events and whether `finish` found
/// an incomplete event.
fn decode_chunks(decoder: &mut SseDecoder, chunks: &[&[u8]]) -> Result<(Vec<Event>, bool), SseError> {
    let mut events = Vec::new();
    for chunk in chunks {
        let mut rest = *chunk;
        loop {
            let (consumed, event) = decoder.decode(rest)?;
            let Some(event) = event else {
                assert_eq!(consumed, rest.len(), "without an event the whole input is consumed");
                break;
            };
            events.push(Event {
                event_type: event.event_type.to_owned(),
                data: event.data.to_owned(),
                last_event_id: event.last_event_id.to_owned(),
            });
            assert!(consumed > 0, "an event consumes at least its blank line");
            rest = &rest[consumed..];
        }
    }
    let incomplete = decoder.finish();
    Ok((events, incomplete))
}

fn events_of(chunks: &[&[u8]]) -> Vec<Event> {
    decode_chunks(&mut SseDecoder::default(), chunks).unwrap().0
}

#[test]
fn a_bom_at_the_stream_start_is_stripped() {
    assert_eq!(events_of(&[b"\xEF\xBB\xBFdata: a\n\n"]), [message("a")]);
}

#[test]
fn a_bom_split_across_reads_is_stripped() {
    assert_eq!(events_of(&[b"\xEF", b"\xBB", b"\xBFdata: a\n\n"]), [message("a")]);
}

#[test]
fn only_one_bom_and_only_at_the_start_is_stripped() {
    // A second BOM belongs to the field name, which then names no known field.
    assert_eq!(events_of(&[b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\n"]), []);
    assert_eq!(events_of(&[b"data: a\n\n\xEF\xBB\xBFdata: b\n\n"]), [message("a")]);
}

#[test]
fn bytes_that_start_like_a_bom_but_are_not_one_stay_in_the_first_line() {
    assert_eq!(events_of(&[b"\xEF\xBB", b"data: a\n\ndata: b\n\n"]), [message("b")]);
    assert_eq!(events_of(&[b"\xEF\xBB", b"\ndata: b\n\n"]), [message("b")]);
}

#[test]
fn lines_end_at_lf_cr_or_crlf() {
    assert_eq!(events_of(&[b"data: a\rdata: b\ndata: c\r\n\r\n"]), [message("a\nb\nc")]);
    assert_eq!(
        events_of(&[b"data: a\r\rdata: b\n\ndata: c\r\n\r\n"]),
        [message("a"), message("b"), message("c")]
    );
}

#[test]
fn a_cr_ending_one_read_and_an_lf_starting_the_next_are_one_line_end() {
    // Were they two line ends, the LF would be a blank line dispatching "a" alone.
    assert_eq!(events_of(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]), [message("a\nb")]);
}

#[test]
fn a_cr_ending_one_read_followed_by_another_byte_is_a_lone_cr() {
    assert_eq!(events_of(&[b"data: a\r", b"data: b\r", b"\r"]), [message("a\nb")]);
}

#[test]
fn lines_starting_with_a_colon_are_comments() {
    assert_eq!(events_of(&[b": hello\ndata: a\n:data: x\n\n"]), [message("a")]);
    assert_eq!(events_of(&[b": keep-alive\n\n"]), []);
}

#[test]
fn a_line_without_a_colon_is_a_field_name_with_an_empty_value() {
    assert_eq!(events_of(&[b"data\n\n"]), [message("")]);
    assert_eq!(events_of(&[b"data\ndata\ndata: x\n\n"]), [message("\n\nx")]);
}

#[test]
fn exactly_one_leading_space_of_the_value_is_stripped() {
    assert_eq!(events_of(&[b"data:  two\ndata:none\ndata: one \n\n"]), [message(" two\nnone\none ")]);
}

#[test]
fn only_the_first_colon_separates_name_and_value() {
    assert_eq!(events_of(&[b"data: {\"a\": 1}\n\n"]), [message("{\"a\": 1}")]);
}

#[test]
fn data_lines_are_joined_with_lf() {
    assert_eq!(
        events_of(&[b"data: first\ndata: second\ndata: third\n\n"]),
        [message("first\nsecond\nthird")]
    );
}

#[test]
fn event_sets_the_type_of_the_next_dispatched_event_only() {
    let events = events_of(&[b"event: error\ndata: a\n\ndata: b\n\n"]);
    assert_eq!(events[0].event_type, "error");
    assert_eq!(events[1].event_type, "");
}

#[test]
fn the_event_type_resets_at_a_blank_line_even_when_nothing_dispatches() {
    assert_eq!(events_of(&[b"event: x\n\ndata: b\n\n"]), [message("b")]);
}

#[test]
fn id_sets_the_last_event_id_which_persists_across_events() {
    let events = events_of(&[b"id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n"]);
    let ids: Vec<&str> = events.iter().map(|event| event.last_event_id.as_str()).collect();
    assert_eq!(ids, ["1", "1", ""]);
}

#[test]
fn id_set_in_a_block_without_data_still_applies_to_later_events() {
    let events = events_of(&[b"id: 5\n\ndata: a\n\n"]);
    assert_eq!(events[0].last_event_id, "5");
}

#[test]
fn an_id_containing_nul_is_ignored() {
    let mut decoder = SseDecoder::default();
    let (events, _) = decode_chunks(&mut decoder, &[b"id: 1\n\nid: 2\x003\ndata: a\n\n"]).unwrap();
    assert_eq!(events[0].last_event_id, "1");
    assert_eq!(decoder.last_event_id(), "1");
}

#[test]
fn retry_is_taken_only_when_all_ascii_digits() {
    let retry_after = |stream: &[u8]| {
        let mut decoder = SseDecoder::default();
        decode_chunks(&mut decoder, &[stream]).unwrap();
        decoder.retry()
    };
    assert_eq!(retry_after(b"retry: 1500\n"), Some(Duration::from_millis(1500)));
    assert_eq!(
        retry_after(b"retry: 1500\nretry: 15a\nretry: -1\nretry:  2\nretry:\n"),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(retry_after(b"retry: 1.5\n"), None);
}

#[test]
fn unknown_fields_are_ignored_and_names_are_case_sensitive() {
    assert_eq!(events_of(&[b"foo: bar\nData: x\ndata: a\n\n"]), [message("a")]);
}

#[test]
fn a_blank_line_with_an_empty_data_buffer_dispatches_nothing() {
    assert_eq!(events_of(&[b"\n\n\nid: 3\nevent: x\nretry: 5\n\n"]), []);
}

#[test]
fn one_trailing_lf_is_stripped_from_the_data() {
    assert_eq!(events_of(&[b"data: a\ndata:\n\n"]), [message("a\n")]);
}

#[test]
fn an_incomplete_event_at_the_end_is_discarded() {
    let mut decoder = SseDecoder::default();
    assert_eq!(decode_chunks(&mut decoder, &[b"data: a\n\ndata: b\n"]).unwrap(), (vec![message("a")], true));
    let mut decoder = SseDecoder::default();
    assert_eq!(decode_chunks(&mut decoder, &[b"data: a"]).unwrap(), (vec![], true));
    let mut decoder = SseDecoder::default();
    assert_eq!(decode_chunks(&mut decoder, &[b"data: a\n\n: bye\n"]).unwrap(), (vec![message("a")], false));
}

#[test]
fn invalid_utf8_becomes_the_replacement_character() {
    assert_eq!(events_of(&[b"data: a\xFFb\xE2\x82\n\n"]), [message("a\u{FFFD}b\u{FFFD}")]);
    assert_eq!(events_of(&[b"event: \xC3\ndata: x\n\n"])[0].event_type, "\u{FFFD}");
}

#[test]
fn a_character_split_across_reads_is_decoded_whole() {
    assert_eq!(events_of(&[b"data: \xE2", b"\x82", b"\xAC ok\n\n"]), [message("\u{20AC} ok")]);
}

#[test]
fn a_line_longer_than_the_limit_is_an_error_even_before_its_end_arrives() {
    let limits = SseLimits { max_line: 8, max_event: 1024 };
    assert_eq!(events_of_limited(limits, &[b"data: 12\n\n"]), Ok(vec![message("12")]));
    assert_eq!(events_of_limited(limits, &[b"data: 123\n\n"]), Err(SseError::LineTooLong { limit: 8 }));

    let mut decoder = SseDecoder::new(limits);
    assert_eq!(decoder.decode(b"data: ").map(|(n, _)| n), Ok(6));
    assert_eq!(decoder.decode(b"123").map(|(n, _)| n), Err(SseError::LineTooLong { limit: 8 }));
    // The decoder stays failed.
    assert_eq!(decoder.decode(b"\n\n").map(|(n, _)| n), Err(SseError::LineTooLong { limit: 8 }));
}

#[test]
fn an_event_larger_than_the_limit_is_an_error() {
    let limits = SseLimits { max_line: 1024, max_event: 8 };
    // The data buffer holds each value plus LF: "1234\n123\n" is 9 bytes.
    assert_eq!(events_of_limited(limits, &[b"data: 1234\ndata: 12\n\n"]), Ok(vec![message("1234\n12")]));
    assert_eq!(
        events_of_limited(limits, &[b"data: 1234\ndata: 123\n\n"]),
        Err(SseError::EventTooLarge { limit: 8 })
    );
    assert_eq!(
        events_of_limited(limits, &[b"data: 12345678\n\n"]),
        Err(SseError::EventTooLarge { limit: 8 })
    );
}

fn events_of_limited(limits: SseLimits, chunks: &[&[u8]]) -> Result<Vec<Event>, SseError> {
    decode_chunks(&mut SseDecoder::new(limits), chunks).map(|(events, _)| events)
}

#[test]
fn an_event_is_returned_as_soon_as_its_blank_line_is_consumed() {
    let input = b"data: a\n\ndata: b\r\n\r\ndata: partial";
    let mut decoder = SseDecoder::default();
    let (consumed, event) = decoder.decode(input).unwrap();
    assert_eq!((consumed, event.map(|event| event.data)), (9, Some("a")));
    let (consumed, event) = decoder.decode(&input[9..]).unwrap();
    assert_eq!((consumed, event.map(|event| event.data)), (11, Some("b")));
    let (consumed, event) = decoder.decode(&input[20..]).unwrap();
    assert_eq!((consumed, event), (13, None));
}

#[test]
fn a_single_line_event_within_one_read_borrows_the_input() {
    let input = b"data: {\"content\":\"hi\"}\n\n";
    let mut decoder = SseDecoder::default();
    let (_, event) = decoder.decode(input).unwrap();
    let data = event.unwrap().data;
    assert_eq!(data, "{\"content\":\"hi\"}");
    assert!(input.as_ptr_range().contains(&data.as_ptr()));
    assert_eq!(decoder.decode(b"").unwrap(), (0, None));
    assert_eq!(decoder.buffered_capacity(), 0, "nothing was copied");
}

#[test]
fn an_idle_decoder_holds_no_big_buffers() {
    let mut big = b"data: ".to_vec();
    big.extend(std::iter::repeat_n(b'x', 100_000));
    big.extend_from_slice(b"\n\n");
    let mut decoder = SseDecoder::default();
    let chunks: Vec<&[u8]> = big.chunks(1000).collect();
    let (events, _) = decode_chunks(&mut decoder, &chunks).unwrap();
    assert_eq!(events[0].data.len(), 100_000);
    assert!(decoder.buffered_capacity() < 8 * 1024, "holds {} bytes", decoder.buffered_capacity());
}
