//! mock-llm over TLS: HTTP/2 or HTTP/1.1 by ALPN, certificate from the generated CA.

mod mockllm_support;

use std::time::Duration;

use bytes::BytesMut;
use handoff_bench::mockllm::{Counter, MockLlm, Protocol, Script};
use mockllm_support::*;
use serde_json::Value;

fn ca(mock: &MockLlm) -> &str {
    mock.ca_cert_pem().expect("a TLS mock has a CA")
}

#[tokio::test]
async fn urls_and_ca_describe_the_tls_server() {
    let mock = start_mock(true).await;
    assert_eq!(mock.url(), format!("https://{}", mock.local_addr()));
    assert_eq!(mock.base_url(), format!("https://{}/v1", mock.local_addr()));
    assert!(ca(&mock).starts_with("-----BEGIN CERTIFICATE-----"));
    let plain = start_mock(false).await;
    assert!(plain.ca_cert_pem().is_none());
    assert!(plain.base_url().starts_with("http://127.0.0.1:"));
}

#[tokio::test]
async fn h2_by_alpn_streams_the_default_response() {
    let mock = start_mock(true).await;
    let tls = tls_connect(mock.local_addr(), "localhost", ca(&mock), &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut send = h2_connect(tls).await;
    let response = h2_read(h2_post(&mut send, "localhost", "https", None, &chat_body(None)).await).await;
    assert_eq!(response.status, 200);
    let events = parse_events(&response.body);
    let summary = summarize(&events);
    assert_eq!(summary.content, Script::new(5, Duration::ZERO, None, None).expected_content());
    assert_eq!(summary.finish_reason.as_deref(), Some("stop"));
    assert_eq!(events.last(), Some(&Event::Done));
    let recorded = mock.recorder().last_request().expect("recorded");
    assert_eq!(recorded.protocol, Protocol::H2Tls);
    assert_eq!(recorded.body, chat_body(None).as_bytes());
}

#[tokio::test]
async fn certificate_is_valid_for_the_loopback_ip() {
    let mock = start_mock(true).await;
    let tls = tls_connect(mock.local_addr(), "127.0.0.1", ca(&mock), &[b"h2"]).await;
    let mut send = h2_connect(tls).await;
    let response =
        h2_read(h2_post(&mut send, "127.0.0.1", "https", Some("short"), &chat_body(None)).await).await;
    let summary = summarize(&parse_events(&response.body));
    assert_eq!(summary.content, Script::new(5, Duration::ZERO, None, Some("short")).expected_content());
}

#[tokio::test]
async fn http1_by_alpn_streams_chunked() {
    let mock = start_mock(true).await;
    let mut tls = tls_connect(mock.local_addr(), "localhost", ca(&mock), &[b"http/1.1"]).await;
    let mut buf = BytesMut::new();
    for pattern in ["long", "finish:content_filter"] {
        write_http1_request(
            &mut tls,
            "/v1/chat/completions",
            &[("x-test-pattern", pattern)],
            &chat_body(None),
        )
        .await;
        let response = read_http1_response(&mut tls, &mut buf).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.end, BodyEnd::Complete);
        let summary = summarize(&parse_events(&response.body));
        assert_eq!(summary.content, Script::new(5, Duration::ZERO, None, Some(pattern)).expected_content());
        assert!(summary.done);
    }
    let protocols: Vec<Protocol> = mock.recorder().requests_seen().iter().map(|r| r.protocol).collect();
    assert_eq!(protocols, [Protocol::Http1Tls, Protocol::Http1Tls]);
    assert_eq!(mock.recorder().connections_accepted(), 1);
}

#[tokio::test]
async fn no_alpn_means_http1() {
    let mock = start_mock(true).await;
    let mut tls = tls_connect(mock.local_addr(), "localhost", ca(&mock), &[]).await;
    write_http1_request(
        &mut tls,
        "/v1/chat/completions",
        &[("x-test-pattern", "status:500")],
        &chat_body(None),
    )
    .await;
    let response = read_http1_response(&mut tls, &mut BytesMut::new()).await;
    assert_eq!(response.status, 500);
    let body: Value = serde_json::from_slice(&response.body).expect("JSON error");
    assert_eq!(body["error"]["type"], "server_error");
    assert_eq!(mock.recorder().last_request().map(|r| r.protocol), Some(Protocol::Http1Tls));
}

#[tokio::test]
async fn reset_over_tls_h2_is_rst_stream() {
    let mock = start_mock(true).await;
    let tls = tls_connect(mock.local_addr(), "localhost", ca(&mock), &[b"h2"]).await;
    let mut send = h2_connect(tls).await;
    let response =
        h2_read(h2_post(&mut send, "localhost", "https", Some("reset:1"), &chat_body(None)).await).await;
    assert_eq!(response.reset, Some(h2::Reason::INTERNAL_ERROR));
    assert_eq!(summarize(&parse_events(&response.body)).content_chunks, 1);
}

#[tokio::test]
async fn reset_over_tls_http1_cuts_the_connection() {
    let mock = start_mock(true).await;
    let mut tls = tls_connect(mock.local_addr(), "localhost", ca(&mock), &[b"http/1.1"]).await;
    write_http1_request(&mut tls, "/v1/chat/completions", &[("x-test-pattern", "reset:3")], &chat_body(None))
        .await;
    let response = read_http1_response(&mut tls, &mut BytesMut::new()).await;
    assert_eq!(response.end, BodyEnd::Cut);
    assert_eq!(summarize(&parse_events(&response.body)).content_chunks, 3);
}

#[tokio::test]
async fn a_tls_client_going_away_is_counted_as_cancelled() {
    let mock = start_mock(true).await;
    let mut tls = tls_connect(mock.local_addr(), "localhost", ca(&mock), &[b"http/1.1"]).await;
    write_http1_request(
        &mut tls,
        "/v1/chat/completions",
        &[("x-test-pattern", "slow:300000")],
        &chat_body(None),
    )
    .await;
    mock.recorder().wait_for(Counter::StreamsActive, 1, PATIENCE).await.expect("stream started");
    drop(tls);
    mock.recorder().wait_for(Counter::StreamsCancelled, 1, PATIENCE).await.expect("close noticed");

    let tls = tls_connect(mock.local_addr(), "localhost", ca(&mock), &[b"h2"]).await;
    let mut send = h2_connect(tls).await;
    let response = h2_post(&mut send, "localhost", "https", Some("slow:300000"), &chat_body(None)).await;
    let response = tokio::time::timeout(PATIENCE, response).await.expect("in time").expect("head");
    drop(response);
    mock.recorder().wait_for(Counter::StreamsCancelled, 2, PATIENCE).await.expect("RST_STREAM noticed");
}
