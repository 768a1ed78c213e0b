//! Every mock-llm pattern through the daemon, over HTTP/1.1, h2c and HTTP/2+TLS: what
//! the browser gets for each upstream behaviour.

use std::sync::Arc;
use std::time::Duration;

use super::{openai_daemon, run_cases, sole_owner, start_mock, Case, Transport};
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
    /// The content sent before the cut, then an error event of any type.
    Failed,
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
    (Some("reset:3"), Expect::Failed),
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
        Expect::Failed => response.expect_failed_stream().0,
    };
    for event in &events {
        assert!(
            matches!(event, Event::Content(_) | Event::Done | Event::Error(_)),
            "only content events and the end from an OpenAI backend, not {event:?}"
        );
    }
    assert_eq!(content(&events), expected_content, "the reassembled content of {:?}", response.text());
}

pub async fn keep_alive_comment_fills_upstream_silence(cx: Context) {
    let mock = start_mock(Transport::H2c, 5, TOKEN_DELAY).await;
    let daemon = openai_daemon(&cx, &mock, Transport::H2c).args(["--keep-alive", "1"]).start().await;
    let data = serde_json::json!({ "prompt": "Think first.", "test_pattern": "stall:2500" });
    let response = daemon.hand_off(data.to_string()).await.read_to_end().await;
    let events = response.expect_completed_stream();
    assert_eq!(
        events.first(),
        Some(&Event::KeepAlive),
        "a `: keep-alive` comment before the first event: {:?}",
        response.text()
    );
    let expected = Script::new(5, TOKEN_DELAY, None, Some("stall:2500")).expected_content();
    assert_eq!(content(&events), expected);
    daemon.terminate().await;
}

pub async fn first_byte_timeout_ends_stream_with_error(cx: Context) {
    let mock = start_mock(Transport::H2c, 5, TOKEN_DELAY).await;
    let daemon = openai_daemon(&cx, &mock, Transport::H2c).args(["--first-byte-timeout", "1"]).start().await;
    // The backend says nothing at all for 5 s; the daemon gives up after 1 s.
    let data = serde_json::json!({ "prompt": "Are you there?", "test_pattern": "stall-head:5000" });
    let response = daemon.hand_off(data.to_string()).await.read_to_end().await;
    let (events, error) = response.expect_failed_stream();
    assert_eq!(content(&events), "", "no content before the error: {:?}", response.text());
    assert!(!error.message.is_empty(), "the error says what timed out: {:?}", response.text());
    daemon.terminate().await;
}

pub async fn unreachable_backend_gets_error_event(cx: Context) {
    // A port that was just free: connections to it are refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap_or_else(|e| panic!("finding a free port: {e}"));
    let daemon = cx
        .daemon()
        .args(["--backend", "openai", "--openai-base"])
        .arg(format!("http://{closed}/v1"))
        .env("OPENAI_API_KEY", super::API_KEY)
        .start()
        .await;
    let response = daemon.hand_off(r#"{"prompt":"anyone?"}"#).await.read_to_end().await;
    let (events, error) = response.expect_failed_stream();
    assert_eq!(content(&events), "");
    assert!(!error.message.is_empty(), "the error says the backend is unreachable: {:?}", response.text());
    daemon.terminate().await;
}

pub async fn tls_is_verified_unless_insecure(cx: Context) {
    let mock = start_mock(Transport::Tls, 3, TOKEN_DELAY).await;
    let base = mock.base_url();
    // mock-llm's CA is in no system store: without --openai-ca the handshake must fail.
    let verifying = cx
        .daemon()
        .args(["--backend", "openai", "--openai-base", &base])
        .env("OPENAI_API_KEY", super::API_KEY)
        .start()
        .await;
    let response = verifying.hand_off(r#"{"prompt":"untrusted"}"#).await.read_to_end().await;
    response.expect_failed_stream();
    assert_eq!(mock.recorder().requests(), 0, "no request went over an unverified connection");
    verifying.terminate().await;

    let insecure = cx
        .daemon()
        .args(["--backend", "openai", "--openai-base", &base, "--openai-insecure-ssl", "true"])
        .env("OPENAI_API_KEY", super::API_KEY)
        .start()
        .await;
    let response = insecure.hand_off(r#"{"prompt":"trust anything"}"#).await.read_to_end().await;
    let expected = Script::new(3, TOKEN_DELAY, None, None).expected_content();
    assert_eq!(content(&response.expect_completed_stream()), expected);
    insecure.terminate().await;
}

pub async fn environment_configures_the_backend(cx: Context) {
    let mock = start_mock(Transport::Http1, 3, TOKEN_DELAY).await;
    let daemon = cx
        .daemon()
        .args(["--backend", "openai"])
        .env("OPENAI_API_BASE", mock.base_url())
        .env("OPENAI_HTTP2_ENABLED", "false")
        .env("OPENAI_API_KEY", super::API_KEY)
        .start()
        .await;
    let response = daemon.hand_off(r#"{"prompt":"configured by environment"}"#).await.read_to_end().await;
    let expected = Script::new(3, TOKEN_DELAY, None, None).expected_content();
    assert_eq!(content(&response.expect_completed_stream()), expected);
    let request = mock.recorder().last_request().unwrap_or_else(|| panic!("mock-llm saw no request"));
    assert_eq!(request.protocol, Protocol::Http1, "OPENAI_HTTP2_ENABLED=false means HTTP/1.1");
    assert_eq!(request.header("authorization"), Some(format!("Bearer {}", super::API_KEY).as_str()));
    daemon.terminate().await;
}

pub async fn idle_timeout_ends_stream_with_error(cx: Context) {
    let mock = start_mock(Transport::H2c, 5, TOKEN_DELAY).await;
    let daemon = openai_daemon(&cx, &mock, Transport::H2c).args(["--idle-timeout", "1"]).start().await;
    // The body starts, then 5 s pass before each content chunk; the daemon waits 1 s.
    let data = serde_json::json!({ "prompt": "Slowly.", "test_pattern": "slow:5000" });
    let response = daemon.hand_off(data.to_string()).await.read_to_end().await;
    let (events, error) = response.expect_failed_stream();
    assert_eq!(content(&events), "", "{:?}", response.text());
    assert!(!error.message.is_empty(), "{:?}", response.text());
    daemon.terminate().await;
}

pub async fn total_timeout_ends_stream_with_error(cx: Context) {
    let mock = start_mock(Transport::H2c, 20, Duration::from_millis(300)).await;
    let daemon = openai_daemon(&cx, &mock, Transport::H2c).args(["--total-timeout", "1"]).start().await;
    // 20 chunks 300 ms apart would take 6 s; the stream may last 1 s in all.
    let response = daemon.hand_off(r#"{"prompt":"A long story."}"#).await.read_to_end().await;
    let (events, error) = response.expect_failed_stream();
    let expected = Script::new(20, Duration::from_millis(300), None, None).expected_content();
    let got = content(&events);
    assert!(got.len() < expected.len() && expected.starts_with(&got), "a cut prefix, not {got:?}");
    assert!(!error.message.is_empty(), "{:?}", response.text());
    daemon.terminate().await;
}

pub async fn slow_reader_gets_every_byte(cx: Context) {
    // 2000 chunks of 4 KiB (8 MB) with no pause: more than loopback socket buffers hold.
    let mock = start_mock(Transport::H2c, 2000, Duration::ZERO).await;
    let daemon = openai_daemon(&cx, &mock, Transport::H2c).start().await;
    let data = serde_json::json!({ "prompt": "Everything at once.", "test_pattern": "long" });
    let mut client = daemon.hand_off(data.to_string()).await;
    // The browser takes its time: the daemon must hold back, not drop or reset.
    client.read_until("the response head", |bytes| bytes.windows(4).any(|w| w == b"\r\n\r\n")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let response = client.read_to_end().await;
    let expected = Script::new(2000, Duration::ZERO, None, Some("long")).expected_content();
    let got = content(&response.expect_completed_stream());
    assert!(got == expected, "the content arrived whole: {} of {} bytes", got.len(), expected.len());
    daemon.terminate().await;
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
