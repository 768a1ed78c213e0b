//! Realistic upstream bodies (`fixtures/openai/*.sse`) read through the SSE decoder
//! and the chunk parser, split into reads of several sizes.

use handoff_core::openai::{parse_chunk, ChunkEvent, UpstreamError};
use handoff_core::sse::SseDecoder;

/// What a client of the stream ends up with.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    content: String,
    finish_reason: Option<String>,
    done: bool,
    error: Option<UpstreamError>,
    /// The body ended in the middle of an event.
    cut_mid_event: bool,
}

fn read_stream(body: &[u8], read_size: usize) -> Outcome {
    let mut outcome = Outcome {
        content: String::new(),
        finish_reason: None,
        done: false,
        error: None,
        cut_mid_event: false,
    };
    let mut decoder = SseDecoder::default();
    for read in body.chunks(read_size) {
        let mut rest = read;
        while let (consumed, Some(event)) = decoder.decode(rest).unwrap() {
            assert!(!outcome.done, "nothing follows [DONE]");
            match parse_chunk(event.data).unwrap() {
                ChunkEvent::Delta { content, finish_reason, .. } => {
                    outcome.content.push_str(content.as_deref().unwrap_or_default());
                    if let Some(reason) = finish_reason {
                        outcome.finish_reason = Some(reason.into_owned());
                    }
                }
                ChunkEvent::Done => outcome.done = true,
                ChunkEvent::Error(error) => outcome.error = Some(error),
                // An event a newer core added carries no content: skip it, as a
                // client skips a chunk it does not know.
                _ => {}
            }
            rest = &rest[consumed..];
        }
    }
    outcome.cut_mid_event = decoder.finish();
    outcome
}

fn assert_reads_as(body: &[u8], expected: Outcome) {
    for read_size in [body.len(), 1, 7, 64, 1000] {
        assert_eq!(read_stream(body, read_size), expected, "reads of {read_size} bytes");
    }
}

fn finished(content: &str, finish_reason: &str) -> Outcome {
    Outcome {
        content: content.to_owned(),
        finish_reason: Some(finish_reason.to_owned()),
        done: true,
        error: None,
        cut_mid_event: false,
    }
}

#[test]
fn a_plain_chat_stream() {
    assert_reads_as(
        include_bytes!("fixtures/openai/chat_stream.sse"),
        finished("Hello! How can I assist you today?", "stop"),
    );
}

#[test]
fn a_chat_stream_with_escapes_and_a_usage_chunk() {
    assert_reads_as(
        include_bytes!("fixtures/openai/chat_stream_with_usage.sse"),
        finished("Here is a list:\n\n1. \"Apples\"\n2. Café ☕\n3. back\\slash\ttab", "stop"),
    );
}

#[test]
fn a_tool_call_stream_has_no_content() {
    assert_reads_as(include_bytes!("fixtures/openai/tool_calls_stream.sse"), finished("", "tool_calls"));
}

#[test]
fn a_proxy_stream_with_crlf_comments_and_ids() {
    assert_reads_as(
        include_bytes!("fixtures/openai/proxy_crlf_comments_stream.sse"),
        finished("Short answer: no.", "length"),
    );
}

#[test]
fn an_error_mid_stream_ends_it_without_done() {
    assert_reads_as(
        include_bytes!("fixtures/openai/error_stream.sse"),
        Outcome {
            content: "The answer is".to_owned(),
            finish_reason: None,
            done: false,
            error: Some(UpstreamError {
                message: "The server had an error while processing your request. Sorry about that!"
                    .to_owned(),
                error_type: "server_error".to_owned(),
                code: None,
            }),
            cut_mid_event: false,
        },
    );
}

#[test]
fn a_truncated_stream_ends_mid_event_without_finish_or_done() {
    assert_reads_as(
        include_bytes!("fixtures/openai/truncated_stream.sse"),
        Outcome {
            content: "Once upon a".to_owned(),
            finish_reason: None,
            done: false,
            error: None,
            cut_mid_event: true,
        },
    );
}
