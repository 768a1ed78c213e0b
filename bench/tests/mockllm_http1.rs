//! mock-llm over plain HTTP/1.1, spoken by hand over a TcpStream.

mod mockllm_support;

use bytes::BytesMut;
use handoff_bench::mockllm::{Counter, Protocol, Script};
use mockllm_support::*;
use serde_json::Value;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

async fn request(mock_addr: std::net::SocketAddr, pattern: Option<&str>) -> Http1Response {
    let mut tcp = TcpStream::connect(mock_addr).await.expect("connect");
    let extra: Vec<(&str, &str)> = pattern.map(|p| ("x-test-pattern", p)).into_iter().collect();
    write_http1_request(&mut tcp, "/v1/chat/completions", &extra, &chat_body(None)).await;
    read_http1_response(&mut tcp, &mut BytesMut::new()).await
}

fn expected(pattern: Option<&str>) -> String {
    Script::new(5, Duration::from_millis(1), None, pattern).expected_content()
}

#[tokio::test]
async fn default_stream_is_role_then_tokens_then_stop_then_done() {
    let mock = start_mock(false).await;
    let response = request(mock.local_addr(), None).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    assert_eq!(response.end, BodyEnd::Complete);
    let events = parse_events(&response.body);
    let summary = summarize(&events);
    assert_eq!(summary.content_chunks, 5);
    assert_eq!(summary.content, expected(None));
    assert_eq!(summary.finish_reason.as_deref(), Some("stop"));
    assert!(summary.done);
    assert_eq!(events.last(), Some(&Event::Done));
}

#[tokio::test]
async fn recorder_sees_headers_body_and_protocol() {
    let mock = start_mock(false).await;
    let response = request(mock.local_addr(), Some("short")).await;
    assert_eq!(response.status, 200);
    let recorded = mock.recorder().last_request().expect("request recorded");
    assert_eq!(recorded.protocol, Protocol::Http1);
    assert_eq!(recorded.method, "POST");
    assert_eq!(recorded.path, "/v1/chat/completions");
    assert_eq!(recorded.header("X-Test-Pattern"), Some("short"));
    assert_eq!(recorded.header("authorization"), Some("Bearer sk-test"));
    assert_eq!(recorded.body, chat_body(None).as_bytes());
    let body = recorded.body_json().expect("JSON body");
    assert_eq!(body["messages"][0]["content"], "Say hello");
    mock.recorder().wait_for(Counter::StreamsCompleted, 1, PATIENCE).await.expect("stream completed");
    assert_eq!(mock.recorder().requests(), 1);
}

#[tokio::test]
async fn keep_alive_serves_requests_one_after_another() {
    let mock = start_mock(false).await;
    let mut tcp = TcpStream::connect(mock.local_addr()).await.expect("connect");
    let mut buf = BytesMut::new();
    for pattern in ["unicode", "long"] {
        write_http1_request(
            &mut tcp,
            "/v1/chat/completions",
            &[("x-test-pattern", pattern)],
            &chat_body(None),
        )
        .await;
        let response = read_http1_response(&mut tcp, &mut buf).await;
        assert_eq!(response.end, BodyEnd::Complete);
        let summary = summarize(&parse_events(&response.body));
        assert_eq!(summary.content, expected(Some(pattern)), "{pattern}");
        assert!(summary.done);
    }
    assert_eq!(mock.recorder().connections_accepted(), 1);
    assert_eq!(mock.recorder().requests(), 2);
}

#[tokio::test]
async fn max_tokens_cuts_the_stream_with_finish_length() {
    let mock = start_mock(false).await;
    let mut tcp = TcpStream::connect(mock.local_addr()).await.expect("connect");
    write_http1_request(&mut tcp, "/v1/chat/completions", &[], &chat_body(Some(2))).await;
    let summary = summarize(&parse_events(&read_http1_response(&mut tcp, &mut BytesMut::new()).await.body));
    assert_eq!(summary.content_chunks, 2);
    assert_eq!(summary.finish_reason.as_deref(), Some("length"));
}

#[tokio::test]
async fn abort_ends_cleanly_without_finish_or_done() {
    let mock = start_mock(false).await;
    let response = request(mock.local_addr(), Some("abort:3")).await;
    assert_eq!(response.end, BodyEnd::Complete, "the chunked body still ends with its last chunk");
    let summary = summarize(&parse_events(&response.body));
    assert_eq!(summary.content_chunks, 3);
    assert_eq!(summary.finish_reason, None);
    assert!(!summary.done);
}

#[tokio::test]
async fn finish_pattern_sets_the_finish_reason() {
    let mock = start_mock(false).await;
    let summary = summarize(&parse_events(&request(mock.local_addr(), Some("finish:length")).await.body));
    assert_eq!(summary.finish_reason.as_deref(), Some("length"));
    assert!(summary.done);
}

#[tokio::test]
async fn status_pattern_answers_that_status_with_an_openai_error() {
    let mock = start_mock(false).await;
    let response = request(mock.local_addr(), Some("status:429")).await;
    assert_eq!(response.status, 429);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.header("retry-after"), Some("1"));
    let body: Value = serde_json::from_slice(&response.body).expect("JSON error body");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(body["error"]["message"].is_string() && body["error"]["type"].is_string());

    let response = request(mock.local_addr(), Some("status:503")).await;
    assert_eq!(response.status, 503);
    let body: Value = serde_json::from_slice(&response.body).expect("JSON error body");
    assert_eq!(body["error"]["type"], "server_error");
}

#[tokio::test]
async fn error_event_arrives_mid_stream_then_the_body_ends() {
    let mock = start_mock(false).await;
    let response = request(mock.local_addr(), Some("error-event:2")).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.end, BodyEnd::Complete);
    let events = parse_events(&response.body);
    let summary = summarize(&events);
    assert_eq!(summary.content_chunks, 2);
    assert!(matches!(events.last(), Some(Event::Error(_))), "the error is the last event");
    assert!(!summary.done);
    assert_eq!(summary.finish_reason, None);
}

#[tokio::test]
async fn reset_closes_the_connection_abruptly_after_n_chunks() {
    let mock = start_mock(false).await;
    let response = request(mock.local_addr(), Some("reset:2")).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.end, BodyEnd::Cut, "no last chunk: the body was cut");
    let summary = summarize(&parse_events(&response.body));
    assert_eq!(summary.content_chunks, 2);
    assert!(!summary.done);
    mock.recorder().wait_for(Counter::StreamsReset, 1, PATIENCE).await.expect("reset counted");
}

#[tokio::test]
async fn other_paths_get_a_json_404() {
    let mock = start_mock(false).await;
    let mut tcp = TcpStream::connect(mock.local_addr()).await.expect("connect");
    write_http1_request(&mut tcp, "/v1/models", &[], "{}").await;
    let response = read_http1_response(&mut tcp, &mut BytesMut::new()).await;
    assert_eq!(response.status, 404);
    let body: Value = serde_json::from_slice(&response.body).expect("JSON");
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn a_client_closing_mid_stream_is_counted_as_cancelled() {
    let mock = start_mock(false).await;
    let mut tcp = TcpStream::connect(mock.local_addr()).await.expect("connect");
    // Minutes between tokens: only noticing the close while waiting ends this stream.
    write_http1_request(
        &mut tcp,
        "/v1/chat/completions",
        &[("x-test-pattern", "slow:300000")],
        &chat_body(None),
    )
    .await;
    mock.recorder().wait_for(Counter::StreamsActive, 1, PATIENCE).await.expect("stream started");
    tcp.shutdown().await.expect("half-close");
    drop(tcp);
    let recorder = mock.recorder();
    recorder.wait_for(Counter::StreamsCancelled, 1, PATIENCE).await.expect("cancel noticed while waiting");
    recorder.wait_until(Counter::StreamsActive, |n| n == 0, PATIENCE).await.expect("no stream left");
    recorder.wait_until(Counter::ConnectionsOpen, |n| n == 0, PATIENCE).await.expect("connection closed");
    assert_eq!(recorder.streams_completed(), 0);
}

#[tokio::test]
async fn a_client_closing_during_a_stall_is_counted_as_cancelled() {
    let mock = start_mock(false).await;
    let mut tcp = TcpStream::connect(mock.local_addr()).await.expect("connect");
    write_http1_request(
        &mut tcp,
        "/v1/chat/completions",
        &[("x-test-pattern", "stall:300000")],
        &chat_body(None),
    )
    .await;
    mock.recorder().wait_for(Counter::StreamsActive, 1, PATIENCE).await.expect("stream started");
    drop(tcp);
    mock.recorder()
        .wait_for(Counter::StreamsCancelled, 1, PATIENCE)
        .await
        .expect("cancel noticed during stall");
}

#[tokio::test]
async fn shutdown_closes_open_connections() {
    let mock = start_mock(false).await;
    let mut tcp = TcpStream::connect(mock.local_addr()).await.expect("connect");
    write_http1_request(
        &mut tcp,
        "/v1/chat/completions",
        &[("x-test-pattern", "slow:300000")],
        &chat_body(None),
    )
    .await;
    mock.recorder().wait_for(Counter::StreamsActive, 1, PATIENCE).await.expect("stream started");
    let recorder = mock.recorder().clone();
    let addr = mock.local_addr();
    mock.shutdown().await;
    assert_eq!(recorder.connections_open(), 0);
    // The server side is gone: reading ends (EOF or reset) instead of waiting for tokens.
    let _ = read_until_closed(&mut tcp).await;
    assert!(TcpStream::connect(addr).await.is_err(), "nothing listens after shutdown");
}
