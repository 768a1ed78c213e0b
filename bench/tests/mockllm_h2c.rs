//! mock-llm over HTTP/2 with prior knowledge (h2c), on the same port as HTTP/1.1.

mod mockllm_support;

use std::time::Duration;

use bytes::BytesMut;
use handoff_bench::mockllm::{Counter, MockLlm, MockLlmConfig, Protocol, Script};
use mockllm_support::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn connect(mock: &MockLlm) -> h2::client::SendRequest<bytes::Bytes> {
    h2_connect(TcpStream::connect(mock.local_addr()).await.expect("connect")).await
}

async fn post(mock: &MockLlm, pattern: Option<&str>) -> H2Response {
    let mut send = connect(mock).await;
    let authority = mock.local_addr().to_string();
    h2_read(h2_post(&mut send, &authority, "http", pattern, &chat_body(None)).await).await
}

#[tokio::test]
async fn default_stream_is_role_then_tokens_then_stop_then_done() {
    let mock = start_mock(false).await;
    let response = post(&mock, None).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.headers["content-type"], "text/event-stream");
    assert_eq!(response.reset, None);
    let events = parse_events(&response.body);
    let summary = summarize(&events);
    assert_eq!(summary.content, Script::new(5, Duration::ZERO, None, None).expected_content());
    assert_eq!(summary.finish_reason.as_deref(), Some("stop"));
    assert_eq!(events.last(), Some(&Event::Done));
}

#[tokio::test]
async fn recorder_sees_headers_body_and_protocol() {
    let mock = start_mock(false).await;
    let response = post(&mock, Some("unicode")).await;
    let summary = summarize(&parse_events(&response.body));
    assert_eq!(summary.content, Script::new(5, Duration::ZERO, None, Some("unicode")).expected_content());
    let recorded = mock.recorder().last_request().expect("request recorded");
    assert_eq!(recorded.protocol, Protocol::H2c);
    assert_eq!(recorded.method, "POST");
    assert_eq!(recorded.path, "/v1/chat/completions");
    assert_eq!(recorded.header("x-test-pattern"), Some("unicode"));
    assert_eq!(recorded.header("authorization"), Some("Bearer sk-test"));
    assert_eq!(recorded.body, chat_body(None).as_bytes());
}

#[tokio::test]
async fn settings_advertise_max_concurrent_streams() {
    let config = MockLlmConfig { max_streams: 7, ..MockLlmConfig::default() };
    let mock = MockLlm::start(config).await.expect("start");
    let mut tcp = TcpStream::connect(mock.local_addr()).await.expect("connect");
    // Client preface and an empty SETTINGS frame.
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");
    let mut head = [0u8; 9];
    tokio::time::timeout(PATIENCE, tcp.read_exact(&mut head)).await.expect("in time").expect("frame head");
    assert_eq!(head[3], 0x4, "the server's first frame is SETTINGS");
    let length = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; length];
    tcp.read_exact(&mut payload).await.expect("settings payload");
    let settings: Vec<(u16, u32)> = payload
        .chunks_exact(6)
        .map(|s| (u16::from_be_bytes([s[0], s[1]]), u32::from_be_bytes([s[2], s[3], s[4], s[5]])))
        .collect();
    const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
    assert!(settings.contains(&(SETTINGS_MAX_CONCURRENT_STREAMS, 7)), "{settings:?}");
}

#[tokio::test]
async fn concurrent_streams_on_one_connection_are_counted() {
    let mock = start_mock(false).await;
    let mut send = connect(&mock).await;
    let authority = mock.local_addr().to_string();
    let mut responses = Vec::new();
    // Minutes between tokens: the three streams overlap however slow the machine is.
    for _ in 0..3 {
        responses.push(h2_post(&mut send, &authority, "http", Some("slow:300000"), &chat_body(None)).await);
    }
    let recorder = mock.recorder();
    recorder.wait_for(Counter::MaxStreamsPerConnection, 3, PATIENCE).await.expect("3 streams at once");
    assert_eq!(recorder.connections_accepted(), 1);
    assert_eq!(recorder.max_streams_overall(), 3);
    assert_eq!(recorder.streams_active(), 3);
    drop(responses);
    recorder.wait_for(Counter::StreamsCancelled, 3, PATIENCE).await.expect("all cancelled");
    assert_eq!(recorder.streams_completed(), 0);
}

#[tokio::test]
async fn abort_ends_the_stream_without_finish_or_done() {
    let mock = start_mock(false).await;
    let response = post(&mock, Some("abort:2")).await;
    assert_eq!(response.reset, None, "a clean END_STREAM");
    let summary = summarize(&parse_events(&response.body));
    assert_eq!(summary.content_chunks, 2);
    assert_eq!(summary.finish_reason, None);
    assert!(!summary.done);
}

#[tokio::test]
async fn finish_pattern_sets_the_finish_reason() {
    let mock = start_mock(false).await;
    let summary = summarize(&parse_events(&post(&mock, Some("finish:length")).await.body));
    assert_eq!(summary.finish_reason.as_deref(), Some("length"));
    assert!(summary.done);
}

#[tokio::test]
async fn status_pattern_answers_that_status_with_an_openai_error() {
    let mock = start_mock(false).await;
    let response = post(&mock, Some("status:401")).await;
    assert_eq!(response.status, 401);
    assert_eq!(response.headers["content-type"], "application/json");
    let body: Value = serde_json::from_slice(&response.body).expect("JSON error body");
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert!(body["error"]["message"].is_string() && body["error"]["type"].is_string());
}

#[tokio::test]
async fn error_event_arrives_mid_stream_then_the_stream_ends() {
    let mock = start_mock(false).await;
    let response = post(&mock, Some("error-event")).await;
    assert_eq!(response.reset, None);
    let events = parse_events(&response.body);
    let summary = summarize(&events);
    assert_eq!(summary.content_chunks, 2, "half of the 5 tokens");
    assert!(matches!(events.last(), Some(Event::Error(_))));
    assert!(!summary.done);
}

#[tokio::test]
async fn reset_sends_rst_stream_internal_error_on_that_stream_only() {
    let mock = start_mock(false).await;
    let mut send = connect(&mock).await;
    let authority = mock.local_addr().to_string();
    let doomed = h2_post(&mut send, &authority, "http", Some("reset:2"), &chat_body(None)).await;
    let healthy = h2_post(&mut send, &authority, "http", Some("slow:5"), &chat_body(None)).await;
    let doomed = h2_read(doomed).await;
    assert_eq!(doomed.reset, Some(h2::Reason::INTERNAL_ERROR));
    let summary = summarize(&parse_events(&doomed.body));
    assert_eq!(summary.content_chunks, 2);
    assert!(!summary.done);
    let healthy = h2_read(healthy).await;
    assert_eq!(healthy.reset, None);
    assert!(summarize(&parse_events(&healthy.body)).done, "the other stream on the connection is unharmed");
    assert_eq!(mock.recorder().streams_reset(), 1);
}

#[tokio::test]
async fn a_client_reset_is_counted_as_cancelled() {
    let mock = start_mock(false).await;
    let mut send = connect(&mock).await;
    let authority = mock.local_addr().to_string();
    let response = h2_post(&mut send, &authority, "http", Some("slow:300000"), &chat_body(None)).await;
    let response = tokio::time::timeout(PATIENCE, response).await.expect("in time").expect("head");
    mock.recorder().wait_for(Counter::StreamsActive, 1, PATIENCE).await.expect("stream started");
    // Dropping the response body resets the stream with CANCEL.
    drop(response);
    mock.recorder().wait_for(Counter::StreamsCancelled, 1, PATIENCE).await.expect("RST_STREAM noticed");
    assert_eq!(mock.recorder().streams_active(), 0);
    assert_eq!(mock.recorder().connections_open(), 1, "only the stream ended, not the connection");
}

#[tokio::test]
async fn a_closed_connection_cancels_its_streams() {
    let mock = start_mock(false).await;
    let tcp = TcpStream::connect(mock.local_addr()).await.expect("connect");
    let (mut send, connection) = h2::client::handshake(tcp).await.expect("handshake");
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let authority = mock.local_addr().to_string();
    let _first = h2_post(&mut send, &authority, "http", Some("stall:300000"), &chat_body(None)).await;
    let _second = h2_post(&mut send, &authority, "http", Some("slow:300000"), &chat_body(None)).await;
    mock.recorder().wait_for(Counter::StreamsActive, 2, PATIENCE).await.expect("streams started");
    driver.abort();
    mock.recorder().wait_for(Counter::StreamsCancelled, 2, PATIENCE).await.expect("both cancelled");
    mock.recorder().wait_until(Counter::ConnectionsOpen, |n| n == 0, PATIENCE).await.expect("closed");
}

#[tokio::test]
async fn http1_and_h2c_share_the_port() {
    let mock = start_mock(false).await;
    let h2 = post(&mock, None).await;
    let mut tcp = TcpStream::connect(mock.local_addr()).await.expect("connect");
    write_http1_request(&mut tcp, "/v1/chat/completions", &[], &chat_body(None)).await;
    let http1 = read_http1_response(&mut tcp, &mut BytesMut::new()).await;
    assert_eq!((h2.status, http1.status), (200, 200));
    let protocols: Vec<Protocol> = mock.recorder().requests_seen().iter().map(|r| r.protocol).collect();
    assert_eq!(protocols, [Protocol::H2c, Protocol::Http1]);
}

#[tokio::test]
async fn a_reader_that_stops_holds_its_stream_at_the_window() {
    // 100 chunks of 4 KiB: 400 KiB against the default 64 KiB stream window.
    let config = MockLlmConfig { token_delay: Duration::ZERO, tokens: 100, ..MockLlmConfig::default() };
    let mock = MockLlm::start(config).await.expect("start");
    let mut send = connect(&mock).await;
    let authority = mock.local_addr().to_string();
    let response = h2_post(&mut send, &authority, "http", Some("long"), &chat_body(None)).await;
    let response = tokio::time::timeout(PATIENCE, response).await.expect("in time").expect("head");
    // Never reading the body releases no capacity: the mock must wait, not queue the rest.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let recorder = mock.recorder();
    assert_eq!(
        (recorder.streams_active(), recorder.streams_completed()),
        (1, 0),
        "the stream waits for window instead of running to its end"
    );
    drop(response);
    recorder.wait_for(Counter::StreamsCancelled, 1, PATIENCE).await.expect("the reset is noticed mid-wait");
    assert_eq!(recorder.streams_completed(), 0);
}

#[tokio::test]
async fn empty_pattern_sends_content_less_chunks_before_the_content() {
    let mock = start_mock(false).await;
    let response = post(&mock, Some("empty:8")).await;
    let events = parse_events(&response.body);
    let chunks: Vec<&Value> = events
        .iter()
        .filter_map(|event| match event {
            Event::Chunk(chunk) => Some(chunk),
            _ => None,
        })
        .collect();
    // The role chunk, 8 content-less chunks, 5 content chunks, the finish chunk.
    assert_eq!(chunks.len(), 1 + 8 + 5 + 1, "{events:?}");
    for chunk in chunks.get(1..9).unwrap_or_default() {
        let delta = &chunk["choices"][0]["delta"];
        assert!(delta.get("content").is_none(), "no content in {chunk}");
    }
    let usage = chunks.iter().filter(|chunk| chunk["choices"] == serde_json::json!([])).count();
    assert_eq!(usage, 2, "every fourth content-less chunk is a usage chunk with empty choices");
    assert_eq!(
        chunks.get(9).map(|chunk| &chunk["choices"][0]["delta"]["content"]),
        Some(&Value::String("Lorem".to_owned()))
    );
}
