//! The stream's rules, driven socket-free on a simulated clock (see `testing`).

use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::testing::{drive_ops, parse_client_events, ClientEvent, Harness, TEST_HEAD};
use super::*;
use crate::handoff::{Delivery, Format};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn content(text: &str) -> ClientEvent {
    ClientEvent::Content { content: text.to_owned(), index: None }
}

/// One upstream `chat.completion.chunk` event, as OpenAI writes it.
fn chunk_event(delta: &str, finish_reason: Option<&str>) -> String {
    let finish = finish_reason.map_or("null".to_owned(), |reason| format!("\"{reason}\""));
    format!(
        "data: {{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":1718000000,\
         \"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0ba0d124f1\",\"choices\":\
         [{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]}}\n\n"
    )
}

fn content_event(text: &str) -> String {
    let text = serde_json::to_string(text).expect("a string serializes");
    chunk_event(&format!("{{\"content\":{text}}}"), None)
}

fn role_event() -> String {
    chunk_event("{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}", None)
}

fn finish_event() -> String {
    chunk_event("{}", Some("stop"))
}

fn usage_event() -> String {
    "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":1718000000,\
     \"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[],\
     \"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}\n\n"
        .to_owned()
}

const UPSTREAM_DONE: &str = "data: [DONE]\n\n";

/// A whole, realistic upstream body: role chunk, content with escapes and
/// non-ASCII, finish chunk, usage chunk, `[DONE]`.
fn openai_body() -> String {
    let mut body = role_event();
    for piece in ["Hello", ", wörld", " \"quoted\"\nnext line", " 😀", "\t\\done"] {
        body.push_str(&content_event(piece));
    }
    body.push_str(&finish_event());
    body.push_str(&usage_event());
    body.push_str(UPSTREAM_DONE);
    body
}

fn failure(kind: FailureKind, message: &str) -> BackendFailure {
    BackendFailure { kind, message: message.to_owned() }
}

/// The client events written in one step's outputs.
fn events_in(step: &[Output]) -> Vec<ClientEvent> {
    let mut events = Vec::new();
    for output in step {
        if let Output::Write(bytes) = output {
            events.extend(parse_client_events(bytes).expect("well-formed events"));
        }
    }
    events
}

fn writes_in(step: &[Output]) -> usize {
    step.iter().filter(|output| matches!(output, Output::Write(_))).count()
}

/// The error event of a step, which must be its only event.
fn only_error(step: &[Output]) -> (String, String, Option<String>) {
    match events_in(step).as_slice() {
        [ClientEvent::Error { message, error_type, code }] => {
            (message.clone(), error_type.clone(), code.clone())
        }
        other => panic!("expected exactly one error event, got {other:?}"),
    }
}

/// The tail every failing step ends with, when the backend is still sending.
fn ends_failed_with_cancel(step: &[Output], reason: FailureReason) {
    assert_eq!(
        step.get(step.len().saturating_sub(3)..),
        Some(&[Output::CancelBackend, Output::CloseClient, Output::Done(Outcome::Failed(reason))][..]),
        "in {step:?}"
    );
}

/// The tail of a failing step when the backend already stopped by itself.
fn ends_failed_without_cancel(step: &[Output], reason: FailureReason) {
    assert_eq!(
        step.get(step.len().saturating_sub(2)..),
        Some(&[Output::CloseClient, Output::Done(Outcome::Failed(reason))][..]),
        "in {step:?}"
    );
    assert!(!step.contains(&Output::CancelBackend));
}

fn backend_stream(config: &StreamConfig) -> Harness {
    Harness::new(config, Source::Backend)
}

/// A backend stream whose 200 head has arrived.
fn streaming(config: &StreamConfig) -> Harness {
    let mut harness = backend_stream(config);
    assert!(harness.handle(Input::BackendHead { status: 200 }).is_empty());
    harness
}

fn mock_stream(config: &StreamConfig) -> Harness {
    Harness::new(config, Source::Mock(mock::Script::new(7, "42", "What is a socket handoff?")))
}

fn quiet_config() -> StreamConfig {
    // Keep-alives far away, so tests about other timers see only their own writes.
    StreamConfig { keep_alive_interval: secs(3600), ..StreamConfig::default() }
}

// ---- the head and the drain rule ----

#[test]
fn the_head_is_the_first_output_then_the_stream_waits() {
    let config = StreamConfig::default();
    let start = testing::Harness::new(&config, Source::Backend).start();
    let mut stream = Stream::new(start, &config, Bytes::from_static(TEST_HEAD), Source::Backend);
    assert_eq!(stream.poll_output(), Output::Write(Bytes::from_static(TEST_HEAD)));
    // The client has not taken the head yet: the write-stall deadline (30 s) runs.
    assert_eq!(stream.poll_output(), Output::Timeout(start + secs(30)));
    stream.handle_input(start, Input::ClientTook(TEST_HEAD.len()));
    // Waiting for the backend: the keep-alive (15 s) is the earliest deadline.
    assert_eq!(stream.poll_output(), Output::Timeout(start + secs(15)));
    assert_eq!(stream.poll_output(), Output::Timeout(start + secs(15)));
    assert!(!stream.is_finished());

    let mock = mock_stream(&config);
    assert_eq!(mock.outputs().collect::<Vec<_>>(), [&Output::Write(Bytes::from_static(TEST_HEAD))]);
    assert_eq!(mock.deadline(), mock.start() + ms(50), "the first mock event is due one delay in");
}

#[test]
fn a_timeout_before_any_deadline_does_nothing() {
    let mut harness = backend_stream(&StreamConfig::default());
    assert!(harness.advance_and_wake(ms(1)).is_empty());
    assert!(harness.advance_and_wake(secs(14)).is_empty());
    assert!(harness.advance_and_wake(ms(998)).is_empty());
    assert_eq!(harness.deadline(), harness.start() + secs(15));
    assert!(harness.client_events().is_empty());
}

// ---- content ----

#[test]
fn each_non_empty_delta_becomes_one_client_event() {
    let mut harness = streaming(&quiet_config());
    let step = harness.handle(Input::BackendData(content_event("Hello").as_bytes()));
    assert_eq!(events_in(&step), [content("Hello")]);
    let step = harness.handle(Input::BackendData(content_event(" world").as_bytes()));
    assert_eq!(events_in(&step), [content(" world")]);
    assert_eq!(harness.client_events(), [content("Hello"), content(" world")]);
    assert!(harness.outcome().is_none());
}

#[test]
fn role_only_empty_and_usage_chunks_write_nothing() {
    let mut harness = streaming(&quiet_config());
    for event in [role_event(), content_event(""), usage_event(), finish_event(), ": ping\n\n".to_owned()] {
        assert!(harness.handle(Input::BackendData(event.as_bytes())).is_empty(), "for {event:?}");
    }
    assert!(harness.client_events().is_empty());
}

#[test]
fn events_from_one_read_go_out_in_one_write() {
    let mut harness = streaming(&quiet_config());
    let read = [content_event("a"), role_event(), content_event("b"), content_event("c")].concat();
    let step = harness.handle(Input::BackendData(read.as_bytes()));
    assert_eq!(writes_in(&step), 1);
    assert_eq!(events_in(&step), [content("a"), content("b"), content("c")]);
}

// ---- what the client receives (`format`, `reasoning`) ----

fn reasoning_event(text: &str) -> String {
    let text = serde_json::to_string(text).expect("a string serializes");
    chunk_event(&format!("{{\"reasoning_content\":{text},\"content\":null}}"), None)
}

fn tool_call_event() -> String {
    chunk_event(
        "{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\
         \"function\":{\"name\":\"lookup\",\"arguments\":\"{\\\"q\\\":1}\"}}]}",
        None,
    )
}

fn delivering(config: &StreamConfig, format: Format, reasoning: bool) -> Harness {
    let delivery = Delivery { format, reasoning, usage_event: false };
    let mut harness =
        Harness::with_delivery(config, Bytes::from_static(TEST_HEAD), Source::Backend, delivery);
    assert!(harness.handle(Input::BackendHead { status: 200 }).is_empty());
    harness
}

#[test]
fn reasoning_deltas_become_reasoning_events_only_when_asked() {
    let body =
        [role_event(), reasoning_event("Think\n\"first\""), content_event("Answer"), finish_event()].concat();
    let mut asked = delivering(&quiet_config(), Format::Content, true);
    asked.handle(Input::BackendData(body.as_bytes()));
    asked.handle(Input::BackendEnd);
    assert_eq!(
        asked.client_events(),
        [ClientEvent::Reasoning("Think\n\"first\"".to_owned()), content("Answer"), ClientEvent::Done]
    );
    let mut default = streaming(&quiet_config());
    default.handle(Input::BackendData(body.as_bytes()));
    default.handle(Input::BackendEnd);
    assert_eq!(default.client_events(), [content("Answer"), ClientEvent::Done]);
}

#[test]
fn openai_format_forwards_every_chunk_as_its_bytes_then_done() {
    let chunks = [
        role_event(),
        reasoning_event("hm"),
        tool_call_event(),
        content_event("Hi \"x\""),
        finish_event(),
        usage_event(),
    ];
    let mut harness = delivering(&quiet_config(), Format::OpenAi, false);
    for chunk in &chunks {
        harness.handle(Input::BackendData(chunk.as_bytes()));
    }
    harness.handle(Input::BackendData(UPSTREAM_DONE.as_bytes()));
    let mut expected: Vec<ClientEvent> = chunks
        .iter()
        .map(|chunk| {
            ClientEvent::Chunk(
                chunk.strip_prefix("data: ").and_then(|c| c.strip_suffix("\n\n")).unwrap().to_owned(),
            )
        })
        .collect();
    expected.push(ClientEvent::Done);
    assert_eq!(harness.client_events(), expected);
    // Byte for byte: the client's body is the upstream's.
    let upstream = [chunks.concat(), UPSTREAM_DONE.to_owned()].concat();
    assert_eq!(String::from_utf8(harness.client_body()).unwrap(), upstream);
    assert_eq!(harness.outcome(), Some(&Outcome::Completed));
    let summary = harness.stream().summary(harness.now(), &Outcome::Completed);
    assert_eq!(summary.events, 2, "the reasoning and the content chunk carried text");
}

#[test]
fn openai_format_keeps_a_multi_line_chunk_whole_and_ends_with_done_after_a_finish() {
    let mut harness = delivering(&quiet_config(), Format::OpenAi, false);
    let split = "data: {\"choices\":[{\"delta\":\ndata: {\"content\":\"a\"}}]}\n\n";
    harness.handle(Input::BackendData(split.as_bytes()));
    harness.handle(Input::BackendData(finish_event().as_bytes()));
    harness.handle(Input::BackendEnd);
    let events = harness.client_events();
    assert_eq!(events[0], ClientEvent::Chunk("{\"choices\":[{\"delta\":\n{\"content\":\"a\"}}]}".to_owned()));
    assert_eq!(events.last(), Some(&ClientEvent::Done), "[DONE] written for a finished answer");
}

#[test]
fn openai_format_still_reports_errors_as_error_events() {
    let mut harness = delivering(&quiet_config(), Format::OpenAi, false);
    let error = "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\",\"code\":null}}\n\n";
    let step = harness.handle(Input::BackendData(error.as_bytes()));
    assert_eq!(only_error(&step), ("overloaded".to_owned(), "server_error".to_owned(), None));
    let mut harness = delivering(&quiet_config(), Format::OpenAi, false);
    let step = harness.handle(Input::BackendData(b"data: {not json}\n\n"));
    assert_eq!(only_error(&step).1, "upstream_protocol", "what is not a chunk is never forwarded");
}

#[test]
fn the_mock_writes_chunks_in_the_openai_format() {
    let script = mock::Script::new(7, "42", "hi").in_format(Format::OpenAi);
    let mut harness = Harness::new(&quiet_config(), Source::Mock(script));
    assert_eq!(harness.run_until_finished(100), Outcome::Completed);
    let events = harness.client_events();
    assert_eq!(events.len(), mock::EVENT_COUNT as usize + 1);
    let ClientEvent::Chunk(first) = &events[0] else { panic!("a chunk, got {:?}", events[0]) };
    let first: serde_json::Value = serde_json::from_str(first).unwrap();
    assert_eq!(first["choices"][0]["delta"]["content"], "Connection #7 established.");
    assert_eq!(events.last(), Some(&ClientEvent::Done));
}

// ---- how a stream completes ----

#[test]
fn upstream_done_is_forwarded_once_and_last_and_nothing_after_it() {
    let mut harness = streaming(&quiet_config());
    let read = [content_event("a"), UPSTREAM_DONE.to_owned(), content_event("after")].concat();
    let step = harness.handle(Input::BackendData(read.as_bytes()));
    assert_eq!(events_in(&step), [content("a"), ClientEvent::Done]);
    // The backend is ending by itself: no cancel after its [DONE].
    assert_eq!(step[1..], [Output::CloseClient, Output::Done(Outcome::Completed)]);
    assert!(harness.handle(Input::BackendData(content_event("late").as_bytes())).is_empty());
    assert!(harness.handle(Input::BackendEnd).is_empty());
    assert_eq!(harness.client_events(), [content("a"), ClientEvent::Done]);
    assert!(!harness.cancelled_backend());
}

#[test]
fn finish_reason_then_a_clean_end_completes_with_done() {
    let mut harness = streaming(&quiet_config());
    harness.handle(Input::BackendData(content_event("All done.").as_bytes()));
    harness.handle(Input::BackendData(finish_event().as_bytes()));
    let step = harness.handle(Input::BackendEnd);
    assert_eq!(events_in(&step), [ClientEvent::Done]);
    assert_eq!(step[1..], [Output::CloseClient, Output::Done(Outcome::Completed)]);
    assert_eq!(harness.client_events(), [content("All done."), ClientEvent::Done]);
}

#[test]
fn a_clean_end_with_neither_done_nor_finish_reason_is_truncated() {
    let mut harness = streaming(&quiet_config());
    harness.handle(Input::BackendData(content_event("Half an ans").as_bytes()));
    let step = harness.handle(Input::BackendEnd);
    let (_, error_type, _) = only_error(&step);
    assert_eq!(error_type, "upstream_truncated");
    ends_failed_without_cancel(&step, FailureReason::UpstreamTruncated);
    assert!(!harness.client_events().contains(&ClientEvent::Done));
}

#[test]
fn an_event_cut_off_by_the_end_is_not_forwarded() {
    let mut harness = streaming(&quiet_config());
    let cut = content_event("never dispatched");
    let cut = &cut.as_bytes()[..cut.len() - 1];
    assert!(harness.handle(Input::BackendData(cut)).is_empty());
    let step = harness.handle(Input::BackendEnd);
    assert_eq!(only_error(&step).1, "upstream_truncated");
    assert_eq!(harness.client_events().len(), 1, "only the error event: {:?}", harness.client_events());
}

// ---- upstream errors ----

#[test]
fn an_upstream_error_object_becomes_an_error_event_and_stops_the_backend() {
    let mut harness = streaming(&quiet_config());
    harness.handle(Input::BackendData(content_event("Partial").as_bytes()));
    let error = "data: {\"error\":{\"message\":\"The server had an error while processing your request.\",\
                 \"type\":\"server_error\",\"param\":null,\"code\":\"internal\"}}\n\n";
    let step = harness.handle(Input::BackendData(error.as_bytes()));
    let (message, error_type, code) = only_error(&step);
    assert_eq!(message, "The server had an error while processing your request.");
    assert_eq!(error_type, "server_error");
    assert_eq!(code.as_deref(), Some("internal"));
    ends_failed_with_cancel(&step, FailureReason::UpstreamError);
    assert!(!harness.client_events().contains(&ClientEvent::Done));
}

#[test]
fn a_non_2xx_status_forwards_the_openai_error_message() {
    let mut harness = backend_stream(&quiet_config());
    assert!(harness.handle(Input::BackendHead { status: 429 }).is_empty());
    let body = "{\n  \"error\": {\n    \"message\": \"Rate limit reached for gpt-4o-mini.\",\n    \
                \"type\": \"requests\",\n    \"param\": null,\n    \"code\": \"rate_limit_exceeded\"\n  }\n}\n";
    let (first, second) = body.as_bytes().split_at(30);
    assert!(harness.handle(Input::BackendData(first)).is_empty());
    assert!(harness.handle(Input::BackendData(second)).is_empty());
    let step = harness.handle(Input::BackendEnd);
    let (message, error_type, code) = only_error(&step);
    assert_eq!(message, "Rate limit reached for gpt-4o-mini.");
    assert_eq!(error_type, "requests");
    assert_eq!(code.as_deref(), Some("rate_limit_exceeded"));
    ends_failed_without_cancel(&step, FailureReason::UpstreamStatus(429));
}

#[test]
fn a_non_2xx_status_without_an_error_object_names_the_status() {
    let mut harness = backend_stream(&quiet_config());
    harness.handle(Input::BackendHead { status: 502 });
    harness.handle(Input::BackendData(b"<html>Bad Gateway</html>"));
    let step = harness.handle(Input::BackendEnd);
    let (message, _, _) = only_error(&step);
    assert!(message.contains("502"), "message {message:?} should name the status");
    ends_failed_without_cancel(&step, FailureReason::UpstreamStatus(502));
}

#[test]
fn a_non_2xx_body_is_read_only_up_to_its_bound() {
    let config = StreamConfig { max_error_body: 64, ..quiet_config() };
    let mut harness = backend_stream(&config);
    harness.handle(Input::BackendHead { status: 500 });
    assert!(harness.handle(Input::BackendData(&[b' '; 40])).is_empty());
    // The bound is reached while the backend is still sending: stop it.
    let step = harness.handle(Input::BackendData(&[b' '; 40]));
    assert!(only_error(&step).0.contains("500"));
    ends_failed_with_cancel(&step, FailureReason::UpstreamStatus(500));
}

#[test]
fn a_non_2xx_status_with_no_body_wanted_fails_at_the_head() {
    let config = StreamConfig { max_error_body: 0, ..quiet_config() };
    let mut harness = backend_stream(&config);
    let step = harness.handle(Input::BackendHead { status: 401 });
    assert!(only_error(&step).0.contains("401"));
    ends_failed_with_cancel(&step, FailureReason::UpstreamStatus(401));
}

#[test]
fn a_non_2xx_body_cut_off_by_a_failure_still_reports_the_status() {
    let mut harness = backend_stream(&quiet_config());
    harness.handle(Input::BackendHead { status: 503 });
    harness.handle(Input::BackendData(b"{\"error\":{\"mess"));
    let step = harness.handle(Input::BackendFailed(failure(FailureKind::Reset, "connection reset")));
    assert!(only_error(&step).0.contains("503"));
    ends_failed_without_cancel(&step, FailureReason::UpstreamStatus(503));
}

#[test]
fn undecodable_chunk_json_is_an_upstream_protocol_error() {
    let mut harness = streaming(&quiet_config());
    let step = harness.handle(Input::BackendData(b"data: {\"choices\":[{\"delta\":\n\n"));
    assert_eq!(only_error(&step).1, "upstream_protocol");
    ends_failed_with_cancel(&step, FailureReason::UpstreamProtocol);
}

#[test]
fn an_overlong_upstream_line_is_an_upstream_protocol_error() {
    let config =
        StreamConfig { sse_limits: sse::SseLimits { max_line: 64, max_event: 256 }, ..quiet_config() };
    let mut harness = streaming(&config);
    let step = harness.handle(Input::BackendData(&[b'x'; 200]));
    assert_eq!(only_error(&step).1, "upstream_protocol");
    ends_failed_with_cancel(&step, FailureReason::UpstreamProtocol);
}

#[test]
fn body_bytes_before_the_response_head_are_a_protocol_error() {
    let mut harness = backend_stream(&quiet_config());
    let step = harness.handle(Input::BackendData(content_event("x").as_bytes()));
    assert_eq!(only_error(&step).1, "upstream_protocol");
    ends_failed_with_cancel(&step, FailureReason::UpstreamProtocol);
}

// ---- backend failures ----

#[test]
fn backend_failures_become_error_events_typed_by_kind() {
    for (kind, error_type) in [
        (FailureKind::Unavailable, "backend_unavailable"),
        (FailureKind::Reset, "upstream_reset"),
        (FailureKind::Protocol, "upstream_protocol"),
        (FailureKind::Overloaded, "overloaded"),
    ] {
        let mut harness = streaming(&quiet_config());
        harness.handle(Input::BackendData(content_event("Some").as_bytes()));
        let step = harness.handle(Input::BackendFailed(failure(kind, "stream reset by peer")));
        let (message, actual_type, _) = only_error(&step);
        assert_eq!(actual_type, error_type);
        // The transport's detail goes to the log; the client reads our text.
        assert_eq!(message, kind.client_message());
        assert!(!message.contains("peer"), "{message}");
        // The backend is already gone: nothing to cancel.
        ends_failed_without_cancel(&step, FailureReason::Backend(kind));
    }
    let mut harness = backend_stream(&quiet_config());
    let step = harness.handle(Input::BackendFailed(failure(FailureKind::Overloaded, "wait queue full")));
    ends_failed_without_cancel(&step, FailureReason::Backend(FailureKind::Overloaded));
}

#[test]
fn a_backend_failure_after_the_finish_reason_still_completes() {
    let mut harness = streaming(&quiet_config());
    harness.handle(Input::BackendData([content_event("Complete."), finish_event()].concat().as_bytes()));
    let step = harness.handle(Input::BackendFailed(failure(FailureKind::Reset, "reset before [DONE]")));
    assert_eq!(events_in(&step), [ClientEvent::Done]);
    assert_eq!(step[1..], [Output::CloseClient, Output::Done(Outcome::Completed)]);
}

// ---- the client going away ----

#[test]
fn a_client_going_away_cancels_the_backend_and_ends_all_writing() {
    let mut harness = streaming(&quiet_config());
    harness.handle(Input::BackendData(content_event("Hello").as_bytes()));
    let step = harness.handle(Input::ClientGone);
    assert_eq!(step, [Output::CancelBackend, Output::CloseClient, Output::Done(Outcome::ClientGone)]);
    assert!(harness.handle(Input::BackendData(content_event("more").as_bytes())).is_empty());
    assert!(harness.handle(Input::BackendEnd).is_empty());
    assert!(harness.advance_and_wake(secs(3600)).is_empty());
    assert_eq!(harness.client_events(), [content("Hello")]);
}

#[test]
fn a_client_going_away_drops_bytes_not_yet_handed_out() {
    let config = StreamConfig::default();
    let start = backend_stream(&config).start();
    let mut stream = Stream::new(start, &config, Bytes::from_static(TEST_HEAD), Source::Backend);
    assert!(matches!(stream.poll_output(), Output::Write(_)));
    stream.handle_input(start, Input::BackendHead { status: 200 });
    stream.handle_input(start, Input::BackendData(content_event("unsent").as_bytes()));
    stream.handle_input(start, Input::ClientGone);
    assert_eq!(stream.poll_output(), Output::CancelBackend);
    assert_eq!(stream.poll_output(), Output::CloseClient);
    assert_eq!(stream.poll_output(), Output::Done(Outcome::ClientGone));
    assert!(stream.is_finished());
    assert!(matches!(stream.poll_output(), Output::Timeout(_)));
}

#[test]
fn a_client_leaving_a_mock_stream_has_no_backend_to_cancel() {
    let mut harness = mock_stream(&StreamConfig::default());
    harness.wake_at_deadline();
    let step = harness.handle(Input::ClientGone);
    assert_eq!(step, [Output::CloseClient, Output::Done(Outcome::ClientGone)]);
}

// ---- deadlines ----

#[test]
fn the_first_byte_timeout_fires_when_the_backend_never_answers() {
    let config = StreamConfig {
        keep_alive_interval: secs(15),
        first_byte_timeout: secs(60),
        ..StreamConfig::default()
    };
    let mut harness = backend_stream(&config);
    harness.run_until_finished(10);
    let writes = harness.body_writes();
    let at: Vec<Duration> = writes.iter().map(|(at, _)| *at - harness.start()).collect();
    assert_eq!(at, [secs(15), secs(30), secs(45), secs(60)]);
    let events = harness.client_events();
    assert_eq!(events[..3], [ClientEvent::KeepAlive, ClientEvent::KeepAlive, ClientEvent::KeepAlive]);
    let ClientEvent::Error { error_type, code, .. } = &events[3] else {
        panic!("error expected: {events:?}")
    };
    assert_eq!((error_type.as_str(), code.as_deref()), ("timeout", Some("first_byte_timeout")));
    assert_eq!(harness.outcome(), Some(&Outcome::Failed(FailureReason::FirstByteTimeout)));
    assert!(harness.cancelled_backend());
}

#[test]
fn the_response_head_ends_the_first_byte_wait() {
    let config = StreamConfig { first_byte_timeout: secs(10), idle_timeout: secs(30), ..quiet_config() };
    let mut harness = backend_stream(&config);
    harness.advance(secs(5));
    harness.handle(Input::BackendHead { status: 200 });
    assert!(harness.advance_and_wake(secs(6)).is_empty(), "11 s: past first-byte, but the head came");
    assert_eq!(harness.deadline(), harness.start() + secs(35));
    let step = harness.wake_at_deadline();
    assert_eq!(only_error(&step).2.as_deref(), Some("idle_timeout"));
    ends_failed_with_cancel(&step, FailureReason::IdleTimeout);
}

#[test]
fn the_idle_timeout_counts_from_the_last_backend_byte() {
    let config = StreamConfig { idle_timeout: secs(30), ..quiet_config() };
    let mut harness = streaming(&config);
    harness.advance(secs(20));
    // Bytes that write nothing to the client still show the backend is alive.
    harness.handle(Input::BackendData(role_event().as_bytes()));
    assert!(harness.advance_and_wake(secs(29)).is_empty());
    let step = harness.advance_and_wake(secs(1));
    assert_eq!(harness.elapsed(), secs(50));
    let (_, error_type, code) = only_error(&step);
    assert_eq!((error_type.as_str(), code.as_deref()), ("timeout", Some("idle_timeout")));
    ends_failed_with_cancel(&step, FailureReason::IdleTimeout);
}

#[test]
fn the_total_timeout_ends_even_a_busy_stream() {
    let config = StreamConfig { total_timeout: secs(1), ..quiet_config() };
    let mut harness = streaming(&config);
    for i in 0..9 {
        harness.advance(ms(100));
        let step = harness.handle(Input::BackendData(content_event(&format!("t{i}")).as_bytes()));
        assert_eq!(events_in(&step), [content(&format!("t{i}"))]);
    }
    harness.advance(ms(100));
    // The data arrives exactly at the limit: the deadline is enforced on any input.
    let step = harness.handle(Input::BackendData(content_event("too late").as_bytes()));
    let events = events_in(&step);
    let Some(ClientEvent::Error { error_type, code, .. }) = events.last() else { panic!("{events:?}") };
    assert_eq!((error_type.as_str(), code.as_deref()), ("timeout", Some("total_timeout")));
    ends_failed_with_cancel(&step, FailureReason::TotalTimeout);
}

#[test]
fn keep_alives_fill_silences_and_rearm_after_each_write() {
    let config = StreamConfig { keep_alive_interval: secs(15), ..StreamConfig::default() };
    let mut harness = streaming(&config);
    assert_eq!(events_in(&harness.wake_at_deadline()), [ClientEvent::KeepAlive]);
    assert_eq!(harness.elapsed(), secs(15));
    assert_eq!(harness.deadline(), harness.start() + secs(30));
    harness.advance(secs(10));
    harness.handle(Input::BackendData(content_event("thinking done").as_bytes()));
    assert_eq!(harness.deadline(), harness.start() + secs(40), "re-armed from the content write at 25 s");
    assert!(harness.advance_and_wake(secs(14)).is_empty());
    assert_eq!(events_in(&harness.advance_and_wake(secs(1))), [ClientEvent::KeepAlive]);
}

#[test]
fn chunks_the_client_never_sees_do_not_postpone_the_keep_alive() {
    let config = StreamConfig { keep_alive_interval: secs(15), ..StreamConfig::default() };
    let mut harness = streaming(&config);
    harness.advance(secs(10));
    harness.handle(Input::BackendData(role_event().as_bytes()));
    assert_eq!(harness.deadline(), harness.start() + secs(15));
    assert_eq!(events_in(&harness.wake_at_deadline()), [ClientEvent::KeepAlive]);
}

#[test]
fn no_keep_alive_while_events_flow() {
    let config =
        StreamConfig { keep_alive_interval: ms(120), mock_delay: ms(100), ..StreamConfig::default() };
    let mut harness = mock_stream(&config);
    assert_eq!(harness.run_until_finished(100), Outcome::Completed);
    assert!(!harness.client_events().contains(&ClientEvent::KeepAlive));

    let config = StreamConfig { keep_alive_interval: secs(15), ..StreamConfig::default() };
    let mut harness = streaming(&config);
    for _ in 0..10 {
        harness.advance(secs(10));
        harness.handle(Input::BackendData(content_event("tick").as_bytes()));
    }
    assert_eq!(harness.client_events(), vec![content("tick"); 10]);
}

#[test]
fn shutdown_ends_the_stream_with_a_server_shutdown_error() {
    let mut harness = streaming(&quiet_config());
    harness.handle(Input::BackendData(content_event("Mid").as_bytes()));
    let step = harness.handle(Input::Shutdown);
    assert_eq!(only_error(&step).1, "server_shutdown");
    ends_failed_with_cancel(&step, FailureReason::Shutdown);

    let mut harness = mock_stream(&quiet_config());
    let step = harness.handle(Input::Shutdown);
    assert_eq!(only_error(&step).1, "server_shutdown");
    ends_failed_without_cancel(&step, FailureReason::Shutdown);
}

#[test]
fn a_finished_stream_ignores_every_input() {
    let mut harness = streaming(&quiet_config());
    harness.handle(Input::BackendData(UPSTREAM_DONE.as_bytes()));
    assert!(harness.stream().is_finished());
    for input in [
        Input::BackendHead { status: 200 },
        Input::BackendData(content_event("x").as_bytes()),
        Input::BackendEnd,
        Input::BackendFailed(failure(FailureKind::Reset, "x")),
        Input::ClientGone,
        Input::Shutdown,
        Input::Timeout,
    ] {
        assert!(harness.advance_and_wake(secs(3600)).is_empty());
        assert!(harness.handle(input).is_empty());
    }
}

// ---- the mock script ----

#[test]
fn the_mock_script_sends_eighteen_events_on_schedule_then_done() {
    let config = StreamConfig { mock_delay: ms(50), ..StreamConfig::default() };
    let mut harness = mock_stream(&config);
    assert_eq!(harness.run_until_finished(100), Outcome::Completed);
    let writes = harness.body_writes();
    assert_eq!(writes.len(), mock::EVENT_COUNT as usize);
    for (i, (at, bytes)) in writes.iter().enumerate() {
        assert_eq!(*at - harness.start(), ms(50) * (i as u32 + 1), "event {i} at start + (i+1)·delay");
        let events = parse_client_events(bytes).expect("well-formed");
        let ClientEvent::Content { index, .. } = &events[0] else { panic!("content expected: {events:?}") };
        assert_eq!(*index, Some(i as u64));
    }
    let events = harness.client_events();
    assert_eq!(events.len(), 19);
    assert_eq!(events[18], ClientEvent::Done, "[DONE] goes out with the last event");
    assert_eq!(
        events[0],
        ClientEvent::Content { content: "Connection #7 established.".into(), index: Some(0) }
    );
    assert_eq!(events[1], ClientEvent::Content { content: "Hello user 42!".into(), index: Some(1) });
    assert_eq!(
        events[2],
        ClientEvent::Content { content: "You asked: What is a socket handoff?".into(), index: Some(2) }
    );
    assert!(!harness.cancelled_backend());
}

#[test]
fn a_late_wake_catches_up_in_one_write_without_stretching_the_schedule() {
    let config = StreamConfig { mock_delay: ms(50), ..StreamConfig::default() };
    let mut harness = mock_stream(&config);
    let step = harness.advance_and_wake(ms(175));
    assert_eq!(writes_in(&step), 1);
    let indexes: Vec<_> = events_in(&step)
        .into_iter()
        .map(|event| match event {
            ClientEvent::Content { index, .. } => index,
            other => panic!("content expected: {other:?}"),
        })
        .collect();
    assert_eq!(indexes, [Some(0), Some(1), Some(2)]);
    assert_eq!(harness.deadline(), harness.start() + ms(200), "event 3 keeps its planned time");
}

#[test]
fn a_mock_stream_with_no_delay_sends_everything_at_once() {
    let config = StreamConfig { mock_delay: Duration::ZERO, ..StreamConfig::default() };
    let mut harness = mock_stream(&config);
    harness.wake_at_deadline();
    // Everything is due at once: one write after the head, as soon as the head is taken.
    let body: Vec<Output> = harness.outputs().skip(1).cloned().collect();
    assert_eq!(writes_in(&body), 1);
    assert_eq!(events_in(&body).len(), 19);
    assert_eq!(harness.outcome(), Some(&Outcome::Completed));
}

#[test]
fn a_mock_stream_ignores_backend_inputs() {
    let mut harness = mock_stream(&StreamConfig::default());
    for input in [
        Input::BackendHead { status: 500 },
        Input::BackendData(b"data: [DONE]\n\n"),
        Input::BackendEnd,
        Input::BackendFailed(failure(FailureKind::Reset, "x")),
    ] {
        assert!(harness.handle(input).is_empty());
    }
    assert_eq!(harness.run_until_finished(100), Outcome::Completed);
    assert_eq!(harness.client_events().len(), 19);
}

#[test]
fn a_mock_stream_obeys_the_total_timeout_but_not_the_backend_ones() {
    let config = StreamConfig {
        mock_delay: ms(50),
        first_byte_timeout: ms(10),
        idle_timeout: ms(10),
        total_timeout: ms(120),
        ..StreamConfig::default()
    };
    let mut harness = mock_stream(&config);
    let outcome = harness.run_until_finished(10);
    assert_eq!(outcome, Outcome::Failed(FailureReason::TotalTimeout));
    let events = harness.client_events();
    assert_eq!(events.len(), 3, "two events, then the timeout: {events:?}");
    assert_eq!(events[2].error_type(), Some("timeout"));
    assert_eq!(harness.elapsed(), ms(120));
    assert!(!harness.cancelled_backend());
}

#[test]
fn a_mock_stream_sends_keep_alives_when_its_delay_is_long() {
    let config =
        StreamConfig { mock_delay: secs(20), keep_alive_interval: secs(15), ..StreamConfig::default() };
    let mut harness = mock_stream(&config);
    harness.wake_at_deadline();
    assert_eq!(harness.client_events(), [ClientEvent::KeepAlive]);
    harness.wake_at_deadline();
    assert!(matches!(harness.client_events()[1], ClientEvent::Content { index: Some(0), .. }));
    assert_eq!(harness.elapsed(), secs(20));
}

// ---- splitting ----

fn client_body_for_reads(reads: &[&[u8]]) -> (Vec<u8>, Option<Outcome>) {
    let mut harness = streaming(&quiet_config());
    for read in reads {
        harness.handle(Input::BackendData(read));
    }
    harness.handle(Input::BackendEnd);
    (harness.client_body(), harness.outcome().cloned())
}

#[test]
fn a_realistic_openai_stream_gives_the_same_bytes_whole_or_byte_at_a_time() {
    for body in [openai_body(), openai_body().replace("\n\n", "\r\n\r\n"), openai_body().replace('\n', "\r")]
    {
        let whole = client_body_for_reads(&[body.as_bytes()]);
        let bytes: Vec<&[u8]> = body.as_bytes().chunks(1).collect();
        assert_eq!(client_body_for_reads(&bytes), whole);
        assert_eq!(whole.1, Some(Outcome::Completed));
        assert_eq!(
            parse_client_events(&whole.0).expect("well-formed"),
            [
                content("Hello"),
                content(", wörld"),
                content(" \"quoted\"\nnext line"),
                content(" 😀"),
                content("\t\\done"),
                ClientEvent::Done
            ]
        );
    }
}

proptest! {
    #[test]
    fn random_splits_give_the_same_client_bytes(cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
        let body = openai_body();
        let whole = client_body_for_reads(&[body.as_bytes()]);
        let mut points: Vec<usize> = cuts.iter().map(|cut| cut % (body.len() + 1)).collect();
        points.sort_unstable();
        let mut reads = Vec::new();
        let mut from = 0;
        for point in points.into_iter().chain([body.len()]) {
            reads.push(&body.as_bytes()[from..point]);
            from = point;
        }
        prop_assert_eq!(client_body_for_reads(&reads), whole);
    }

    #[test]
    fn random_input_sequences_keep_every_invariant(ops in proptest::collection::vec(any::<u8>(), 0..600)) {
        drive_ops(&ops);
    }
}

#[test]
fn representative_input_sequences_end_as_the_protocol_says() {
    use FailureReason as R;
    // First byte: 0 mock, 1 bare backend, 2 backend after a 200 head. Then pairs
    // (op, arg): 0 head(STATUSES[arg]), 4 split fragment(arg, at), 10 fragment(arg),
    // 16 end, 17 failed(KINDS[arg]), 18 client gone, 19 shutdown. Fragments: 0 role,
    // 1 content, 2 finish, 4 [DONE], 5 error object, 7 not JSON, 8 error body.
    let cases: [(&[u8], Outcome); 13] = [
        (&[0], Outcome::Completed),
        (&[2, 10, 1, 10, 0, 10, 4], Outcome::Completed),
        (&[2, 10, 1, 10, 2, 16, 0], Outcome::Completed),
        (&[2, 10, 1, 10, 2, 17, 1], Outcome::Completed),
        (&[2, 10, 1, 16, 0], Outcome::Failed(R::UpstreamTruncated)),
        (&[2, 4, 1, 5, 18, 0], Outcome::ClientGone),
        (&[1, 0, 5, 15, 8, 16, 0], Outcome::Failed(R::UpstreamStatus(400))),
        (&[2, 10, 5], Outcome::Failed(R::UpstreamError)),
        (&[2, 10, 7], Outcome::Failed(R::UpstreamProtocol)),
        (&[3, 17, 1], Outcome::Failed(R::Backend(FailureKind::Reset))),
        (&[2, 19, 0], Outcome::Failed(R::Shutdown)),
        (&[1], Outcome::Failed(R::FirstByteTimeout)),
        (&[2], Outcome::Failed(R::IdleTimeout)),
    ];
    for (ops, outcome) in cases {
        assert_eq!(drive_ops(ops), outcome, "for ops {ops:?}");
    }
}

// ---- memory ----

#[test]
fn a_stream_is_small() {
    let size = std::mem::size_of::<Stream>();
    // 192 before the client's pace was tracked (24 bytes: three settings, a
    // deadline, the unwritten and progress counts); 216 before the summary's
    // progress (16 bytes: first byte and first event instants, events, status);
    // 232 before the completion record's pointer (8 bytes, null with records off).
    assert!(size <= 240, "Stream is {size} bytes (decoder {} bytes)", std::mem::size_of::<sse::SseDecoder>());
}

#[test]
fn a_stream_between_whole_events_holds_no_heap_and_an_ended_one_none_at_all() {
    let config = quiet_config();
    let start = backend_stream(&config).start();
    let mut stream = Stream::new(start, &config, Bytes::from_static(TEST_HEAD), Source::Backend);
    let drain = |stream: &mut Stream| {
        for _ in 0..testing::MAX_OUTPUTS_PER_INPUT {
            if let Output::Timeout(_) = stream.poll_output() {
                return;
            }
        }
        panic!("no Timeout");
    };
    drain(&mut stream);
    stream.handle_input(start, Input::BackendHead { status: 200 });
    stream.handle_input(start, Input::BackendData([role_event(), content_event("Hi")].concat().as_bytes()));
    drain(&mut stream);
    assert_eq!(stream.buffered_capacity(), 0, "whole events leave nothing buffered");
    let half = content_event("split");
    stream.handle_input(start, Input::BackendData(&half.as_bytes()[..20]));
    assert!(stream.buffered_capacity() >= 20, "a partial line is kept");
    stream.handle_input(start, Input::BackendData(&half.as_bytes()[20..]));
    stream.handle_input(start, Input::ClientGone);
    drain(&mut stream);
    assert_eq!(stream.buffered_capacity(), 0, "an ended stream frees its buffers at once");

    let mock = mock_stream(&config);
    assert!(mock.stream().buffered_capacity() < 100);
}

// ---- the client's pace ----

fn paced_config() -> StreamConfig {
    StreamConfig {
        write_timeout: secs(30),
        min_write_progress: 8,
        client_buffer: 1024,
        idle_timeout: secs(600),
        ..quiet_config()
    }
}

/// A 200 stream whose client stops reading after the head.
fn stalled_client(config: &StreamConfig) -> Harness {
    let mut harness = streaming(config);
    harness.auto_take = false;
    harness
}

#[test]
fn a_client_that_takes_nothing_ends_its_own_stream_and_the_upstream_is_cancelled() {
    let config = paced_config();
    let mut harness = stalled_client(&config);
    harness.handle(Input::BackendData(content_event("unread").as_bytes()));
    assert!(harness.stream().unwritten() > 0);
    assert_eq!(harness.deadline(), harness.now() + secs(30), "the write-stall deadline runs");
    let step = harness.advance_and_wake(secs(30));
    assert_eq!(writes_in(&step), 0, "nothing more is written to a stalled client: {step:?}");
    assert_eq!(step, [Output::CancelBackend, Output::CloseClient, Output::Done(Outcome::ClientStalled)]);
}

#[test]
fn progress_resets_the_write_stall_deadline_and_taking_everything_clears_it() {
    let config = paced_config();
    let mut harness = stalled_client(&config);
    harness.handle(Input::BackendData(content_event("slowly read").as_bytes()));
    let stall = harness.deadline();
    harness.advance(secs(29));
    harness.take(1);
    assert_eq!(harness.deadline(), stall, "a trickle below min_write_progress is no progress");
    harness.take(7);
    assert_eq!(harness.deadline(), harness.now() + secs(30), "progress moved the deadline");
    harness.advance(secs(29));
    let waiting = harness.stream().unwritten();
    harness.take(waiting);
    assert_eq!(harness.stream().unwritten(), 0);
    harness.advance(secs(31));
    let step = harness.handle(Input::Timeout);
    assert!(harness.outcome().is_none(), "no stall once everything was taken: {step:?}");
}

#[test]
fn a_full_client_buffer_stops_backend_reads_without_charging_the_backend_idle_time() {
    let config = StreamConfig { idle_timeout: secs(10), ..paced_config() };
    let mut harness = stalled_client(&config);
    assert!(harness.stream().wants_backend_data());
    let text = "x".repeat(400);
    while harness.stream().unwritten() < config.client_buffer {
        harness.handle(Input::BackendData(content_event(&text).as_bytes()));
    }
    assert!(!harness.stream().wants_backend_data(), "reading stops once the buffer is full");
    // The backend says nothing for longer than its idle timeout, but the stream is
    // waiting on its client, not on the backend.
    harness.advance(secs(20));
    let step = harness.handle(Input::Timeout);
    assert!(harness.outcome().is_none(), "{step:?}");
    // The client catches up: reading resumes and the idle time counts from now.
    harness.take(harness.stream().unwritten());
    assert!(harness.stream().wants_backend_data());
    harness.advance(secs(9));
    assert!(harness.handle(Input::Timeout).is_empty());
    let step = harness.advance_and_wake(secs(1));
    ends_failed_with_cancel(&step, FailureReason::IdleTimeout);
}

#[test]
fn no_keep_alive_is_queued_behind_bytes_the_client_has_not_taken() {
    let config = StreamConfig { keep_alive_interval: secs(5), ..paced_config() };
    let mut harness = stalled_client(&config);
    harness.handle(Input::BackendData(content_event("waiting").as_bytes()));
    let step = harness.advance_and_wake(secs(6));
    assert_eq!(writes_in(&step), 0, "{step:?}");
    // Once the client has taken everything, silence is measured from then.
    harness.take(harness.stream().unwritten());
    assert_eq!(harness.deadline(), harness.now() + secs(5));
}

#[test]
fn a_stalled_mock_stream_ends_as_client_stalled() {
    // Events a second apart, so the script is still running when the stall is noticed.
    let config = StreamConfig { write_timeout: secs(2), mock_delay: secs(1), ..StreamConfig::default() };
    let mut harness = mock_stream(&config);
    harness.auto_take = false;
    let outcome = harness.run_until_finished(1_000);
    assert_eq!(outcome, Outcome::ClientStalled);
    assert!(!harness.cancelled_backend(), "a mock stream has no backend to cancel");
}

#[test]
fn a_mock_stream_never_asks_for_backend_data() {
    let harness = mock_stream(&StreamConfig::default());
    assert!(!harness.stream().wants_backend_data());
}

// ---- passthrough ----

/// A LangGraph-like stream: its own event types, ids, `retry`, a comment.
const AGENT_EVENTS: &str = "event: metadata\nid: 1\ndata: {\"run_id\":\"r1\"}\n\n: heartbeat\n\nretry: 500\nevent: values\nid: 2\ndata: {\"step\":1}\ndata: {\"more\":true}\n\nevent: end\ndata: null\n\n";

fn passing_through(config: &StreamConfig) -> Harness {
    let mut harness = Harness::new(config, Source::Passthrough);
    assert!(harness.handle(Input::BackendHead { status: 200 }).is_empty());
    harness
}

#[test]
fn passthrough_forwards_the_upstreams_events_unchanged_and_ends_with_it() {
    let mut harness = passing_through(&quiet_config());
    // Split mid-event: only whole events are written.
    let (first, second) = AGENT_EVENTS.split_at(30);
    harness.handle(Input::BackendData(first.as_bytes()));
    assert!(harness.client_body().is_empty(), "half an event waits");
    harness.handle(Input::BackendData(second.as_bytes()));
    harness.handle(Input::BackendEnd);
    let body = harness.client_body();
    assert_eq!(String::from_utf8_lossy(&body), AGENT_EVENTS, "byte for byte, nothing of ours added");
    assert_eq!(harness.outcome(), Some(&Outcome::Completed));
    let summary = harness.stream().summary(harness.now(), &Outcome::Completed);
    assert_eq!(summary.events, 4, "each event counts, the comment too");
}

#[test]
fn passthrough_errors_start_on_an_event_boundary_and_keep_the_usual_rules() {
    // The connection breaks inside an event: the part already sent of it is never
    // written, so the error event is not glued onto it.
    let mut harness = passing_through(&quiet_config());
    harness.handle(Input::BackendData(b"event: values\ndata: {\"a\":1}\n\nevent: values\ndata: {\"cut"));
    let step = harness.handle(Input::BackendFailed(failure(FailureKind::Reset, "connection reset")));
    assert_eq!(only_error(&step).1, FailureKind::Reset.error_type());
    let body = String::from_utf8(harness.client_body()).unwrap();
    assert!(
        !body.contains("cut") && body.contains("event: values\ndata: {\"a\":1}\n\nevent: error\n"),
        "{body}"
    );

    // A non-2xx status is an error event from its body, as for OpenAI backends.
    let mut harness = Harness::new(&quiet_config(), Source::Passthrough);
    harness.handle(Input::BackendHead { status: 503 });
    harness.handle(Input::BackendData(br#"{"error":{"message":"busy","type":"overloaded"}}"#));
    let step = harness.handle(Input::BackendEnd);
    assert_eq!(only_error(&step).0, "busy");

    // Silence past the idle timeout ends it as a timeout.
    let config = StreamConfig { idle_timeout: secs(5), ..quiet_config() };
    let mut harness = passing_through(&config);
    let step = harness.advance_and_wake(secs(5));
    assert_eq!(only_error(&step).2.as_deref(), Some("idle_timeout"));
    assert_eq!(harness.outcome(), Some(&Outcome::Failed(FailureReason::IdleTimeout)));
}

#[test]
fn passthrough_refuses_an_event_over_the_limit() {
    let config =
        StreamConfig { sse_limits: sse::SseLimits { max_line: 64, max_event: 64 }, ..quiet_config() };
    let mut harness = passing_through(&config);
    let step = harness.handle(Input::BackendData("data: ".repeat(20).as_bytes()));
    assert_eq!(only_error(&step).1, "upstream_protocol");
    assert_eq!(harness.outcome(), Some(&Outcome::Failed(FailureReason::UpstreamProtocol)));
}
