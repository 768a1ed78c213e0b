//! Every mock-llm pattern through the daemon, over HTTP/1.1, h2c and HTTP/2+TLS: what
//! the browser gets for each upstream behaviour.

use std::sync::Arc;
use std::time::Duration;

use super::{one_worker, openai_daemon, run_cases, sole_owner, start_mock, Case, Transport};
use crate::mockllm::{Protocol, Script};
use crate::scenarios::{content, Context, Daemon, Event};

/// Upstream content chunks per stream, and the pause before each.
const TOKENS: u32 = 20;
const TOKEN_DELAY: Duration = Duration::from_millis(2);

/// What the browser must see for a pattern.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The script's whole content, then `[DONE]`.
    Completed,
    /// The script's content, then one error event of this type; no `[DONE]`.
    FailedWithType(&'static str),
    /// The script's content, then one error event carrying this backend message.
    FailedWithMessage(&'static str),
}

const CASES: &[(Option<&str>, Expect)] = &[
    (None, Expect::Completed),
    (Some("unicode"), Expect::Completed),
    (Some("short"), Expect::Completed),
    (Some("long"), Expect::Completed),
    (Some("abort:3"), Expect::FailedWithType("upstream_truncated")),
    (Some("finish:length"), Expect::Completed),
    (Some("status:429"), Expect::FailedWithMessage("mock-llm status 429 (X-Test-Pattern: status:429)")),
    (Some("status:500"), Expect::FailedWithMessage("mock-llm status 500 (X-Test-Pattern: status:500)")),
    (Some("stall:300"), Expect::Completed),
    (Some("slow:15"), Expect::Completed),
    (Some("error-event"), Expect::FailedWithMessage("mock-llm error event (X-Test-Pattern: error-event)")),
    (Some("reset:3"), Expect::FailedWithType("upstream_reset")),
];

pub async fn patterns_over_http1(cx: Context) {
    patterns_over(cx, Transport::Http1, Protocol::Http1).await;
}

pub async fn patterns_over_h2c(cx: Context) {
    patterns_over(cx, Transport::H2c, Protocol::H2c).await;
}

pub async fn patterns_over_tls(cx: Context) {
    patterns_over(cx, Transport::Tls, Protocol::H2Tls).await;
}

async fn patterns_over(cx: Context, transport: Transport, protocol: Protocol) {
    let mock = start_mock(transport, TOKENS, TOKEN_DELAY).await;
    let daemon = Arc::new(openai_daemon(&cx, &mock, transport).start().await);
    let cases: Vec<Case> = CASES
        .iter()
        .map(|&(pattern, expect)| {
            let daemon = Arc::clone(&daemon);
            let name = format!("pattern {:?} over {transport:?}", pattern.unwrap_or("(none)"));
            let case: Case = (name, Box::pin(async move { check_pattern(&daemon, pattern, expect).await }));
            case
        })
        .collect();
    run_cases(cases).await;

    let requests = mock.recorder().requests_seen();
    assert_eq!(requests.len(), CASES.len(), "one backend request per handoff");
    for request in &requests {
        assert_eq!(request.protocol, protocol, "{transport:?} reaches the backend over {protocol:?}");
    }
    sole_owner(daemon).terminate().await;
}

async fn check_pattern(daemon: &Daemon, pattern: Option<&'static str>, expect: Expect) {
    let mut data = serde_json::json!({ "prompt": "Tell me something." });
    if let Some(pattern) = pattern {
        data["test_pattern"] = pattern.into();
    }
    let response = daemon.hand_off(data.to_string()).await.read_to_end().await;
    let expected_content = Script::new(TOKENS, TOKEN_DELAY, None, pattern).expected_content();
    let events = match expect {
        Expect::Completed => response.expect_completed_stream(),
        Expect::FailedWithType(error_type) => {
            let (events, error) = response.expect_failed_stream();
            assert_eq!(error.error_type, error_type, "the error event's type in {:?}", response.text());
            events
        }
        Expect::FailedWithMessage(message) => {
            let (events, error) = response.expect_failed_stream();
            assert_eq!(error.message, message, "the backend's message in {:?}", response.text());
            events
        }
    };
    for event in &events {
        assert!(
            matches!(event, Event::Content(_) | Event::Done | Event::Error(_)),
            "only content events and the end from an OpenAI backend, not {event:?}"
        );
    }
    assert_eq!(content(&events), expected_content, "the reassembled content of {:?}", response.text());
}

pub async fn http1_connection_cut_by_a_reset_is_not_reused(cx: Context) {
    let mock = start_mock(Transport::Http1, TOKENS, TOKEN_DELAY).await;
    let daemon = Arc::new(openai_daemon(&cx, &mock, Transport::Http1).start().await);
    // More streams than connections may open at once, so some wait for a free one;
    // the first to end are cut by the backend, and their connections are dead.
    let mut cases: Vec<Case> = Vec::new();
    for i in 0..8 {
        let client = daemon.hand_off(r#"{"prompt":"cut","test_pattern":"reset:0"}"#).await;
        let case: Case = (
            format!("reset stream {i}"),
            Box::pin(async move {
                client.read_to_end().await.expect_failed_stream();
            }),
        );
        cases.push(case);
    }
    let expected = Script::new(TOKENS, TOKEN_DELAY, None, None).expected_content();
    for i in 0..64 {
        let client = daemon.hand_off(format!(r#"{{"prompt":"whole {i}"}}"#)).await;
        let expected = expected.clone();
        let case: Case = (
            format!("plain stream {i}"),
            Box::pin(async move {
                let response = client.read_to_end().await;
                assert_eq!(content(&response.expect_completed_stream()), expected);
            }),
        );
        cases.push(case);
    }
    run_cases(cases).await;
    sole_owner(daemon).terminate().await;
}

pub async fn http1_connections_are_kept_alive_between_streams(cx: Context) {
    let mock = start_mock(Transport::Http1, TOKENS, TOKEN_DELAY).await;
    let daemon = one_worker(openai_daemon(&cx, &mock, Transport::Http1)).start().await;
    let expected = Script::new(TOKENS, TOKEN_DELAY, None, None).expected_content();
    // One after another: each stream's `[DONE]` arrives before its chunked body
    // ends, and the connection must still go back to the pool for the next one.
    for i in 0..5 {
        let response = daemon.hand_off(format!(r#"{{"prompt":"again {i}"}}"#)).await.read_to_end().await;
        assert_eq!(content(&response.expect_completed_stream()), expected);
    }
    assert_eq!(mock.recorder().requests(), 5);
    assert_eq!(mock.recorder().connections_accepted(), 1, "every stream should reuse the one connection");
    daemon.terminate().await;
}
