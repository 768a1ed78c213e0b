//! The events we write to the client, and that they read back as one event each.

use bytes::BytesMut;
use handoff_core::sse::{encode_content, encode_error, encode_indexed_content, SseDecoder, DONE, KEEP_ALIVE};

fn encoded(write: impl FnOnce(&mut BytesMut)) -> String {
    let mut out = BytesMut::new();
    write(&mut out);
    String::from_utf8(out.to_vec()).unwrap()
}

/// Decodes `stream` and returns (event type, data) of each event.
fn read_back(stream: &[u8]) -> Vec<(String, String)> {
    let mut decoder = SseDecoder::default();
    let mut events = Vec::new();
    let mut rest = stream;
    while let (consumed, Some(event)) = decoder.decode(rest).unwrap() {
        events.push((event.event_type.to_owned(), event.data.to_owned()));
        rest = &rest[consumed..];
    }
    assert!(!decoder.finish());
    events
}

#[test]
fn content_is_one_json_data_line() {
    assert_eq!(encoded(|out| encode_content(out, "Hello")), "data: {\"content\":\"Hello\"}\n\n");
}

#[test]
fn content_with_line_breaks_and_quotes_stays_one_data_line() {
    let content = "line one\nline two\r\n\"quoted\" \\ tab\t\u{1}";
    let event = encoded(|out| encode_content(out, content));
    assert_eq!(event.matches("data:").count(), 1);
    assert!(!event.trim_end_matches("\n\n").contains(['\n', '\r']));

    let events = read_back(event.as_bytes());
    assert_eq!(events.len(), 1);
    let json: serde_json::Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(json["content"], content);
}

#[test]
fn indexed_content_carries_the_index_after_the_content() {
    assert_eq!(
        encoded(|out| encode_indexed_content(out, "line\n3", 17)),
        "data: {\"content\":\"line\\n3\",\"index\":17}\n\n"
    );
    let event = encoded(|out| encode_indexed_content(out, "", u32::MAX));
    let json: serde_json::Value = serde_json::from_str(&read_back(event.as_bytes())[0].1).unwrap();
    assert_eq!(json["index"], u64::from(u32::MAX));
}

#[test]
fn errors_are_error_events_in_openai_shape() {
    let event = encoded(|out| encode_error(out, "backend said \"no\"\nbye", "upstream_error", Some("429")));
    assert!(event.starts_with("event: error\ndata: {\"error\":{"));
    let events = read_back(event.as_bytes());
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "error");
    let json: serde_json::Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(json["error"]["message"], "backend said \"no\"\nbye");
    assert_eq!(json["error"]["type"], "upstream_error");
    assert_eq!(json["error"]["code"], "429");

    let event = encoded(|out| encode_error(out, "cut short", "upstream_truncated", None));
    let json: serde_json::Value = serde_json::from_str(&read_back(event.as_bytes())[0].1).unwrap();
    assert!(json["error"]["code"].is_null());
}

#[test]
fn done_and_keep_alive_read_back_as_done_and_nothing() {
    assert_eq!(read_back(DONE), [(String::new(), "[DONE]".to_owned())]);
    assert_eq!(read_back(KEEP_ALIVE), []);
}
