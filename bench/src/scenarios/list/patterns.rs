//! Every mock-llm pattern through the daemon, over HTTP/1.1, h2c and HTTP/2+TLS: what
//! the browser gets for each upstream behaviour.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{json, Value};

use super::{one_worker, openai_daemon, run_cases, sole_owner, start_mock, Case, Transport};
use crate::mockllm::{Protocol, Script, CACHED_TOKENS, PROMPT_TOKENS};
use crate::scenarios::{content, content_events, Context, Daemon, ErrorObject, Event};

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

/// `--record-text-max-bytes`' default: the `long` pattern's answer is longer.
const RECORD_TEXT_MAX: usize = 65_536;

/// What the client saw of one pattern's stream, to compare with its record.
#[derive(Debug)]
struct Seen {
    pattern: Option<&'static str>,
    content: String,
    content_events: usize,
    error: Option<ErrorObject>,
}

async fn patterns_over(cx: Context, transport: Transport, protocol: Protocol) {
    let mock = start_mock(transport, TOKENS, TOKEN_DELAY).await;
    let records = cx.scratch().path("records.jsonl");
    let daemon = openai_daemon(&cx, &mock, transport).arg("--records-file").arg(&records);
    let daemon = Arc::new(daemon.start().await);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let cases: Vec<Case> = CASES
        .iter()
        .map(|&(pattern, expect)| {
            let (daemon, seen) = (Arc::clone(&daemon), Arc::clone(&seen));
            let name = format!("pattern {:?} over {transport:?}", pattern.unwrap_or("(none)"));
            let case: Case = (
                name,
                Box::pin(async move {
                    let saw = check_pattern(&daemon, pattern, expect).await;
                    seen.lock().unwrap_or_else(PoisonError::into_inner).push(saw);
                }),
            );
            case
        })
        .collect();
    run_cases(cases).await;

    let requests = mock.recorder().requests_seen();
    assert_eq!(requests.len(), CASES.len(), "one backend request per handoff");
    for request in &requests {
        assert_eq!(request.protocol, protocol, "{transport:?} reaches the backend over {protocol:?}");
    }
    // The records file is complete once the daemon has stopped.
    sole_owner(daemon).terminate().await;
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(PoisonError::into_inner));
    check_records(&records, &seen);
}

/// Each stream's completion record says what its client saw: the outcome, the
/// error's type and code, the text to the byte, and (when the backend finished)
/// mock-llm's usage and ids.
fn check_records(path: &std::path::Path, seen: &[Seen]) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let records: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("record {line}: {e}")))
        .collect();
    assert_eq!(records.len(), CASES.len(), "one record per stream: {text}");
    for saw in seen {
        let id = request_id(saw.pattern);
        let record = records
            .iter()
            .find(|record| record["request_id"] == json!(id))
            .unwrap_or_else(|| panic!("no record for {id}: {text}"));
        let mut shown = record.clone();
        shown["text"] = json!("(checked below)");
        let context = format!("{id}: {shown}");
        assert_eq!(record["v"], json!(1), "{context}");
        let text = record["text"].as_str().unwrap_or_else(|| panic!("no text, {context}"));
        if saw.content.len() <= RECORD_TEXT_MAX {
            assert_eq!(text, saw.content, "the text the client got, {context}");
            assert_eq!(record["text_truncated"], json!(false), "{context}");
        } else {
            // Cut at the cap, on a character boundary, and marked.
            assert!(saw.content.starts_with(text), "the text is the answer's start, {context}");
            assert!(text.len() <= RECORD_TEXT_MAX && text.len() + 4 > RECORD_TEXT_MAX, "{context}");
            assert_eq!(record["text_truncated"], json!(true), "{context}");
        }
        assert_eq!(record["model_requested"], json!("gpt-4o-mini"), "{context}");
        match &saw.error {
            None => {
                let script = Script::new(TOKENS, TOKEN_DELAY, None, saw.pattern);
                assert_eq!(record["outcome"], json!("completed"), "{context}");
                assert_eq!(record["error_type"], Value::Null, "{context}");
                assert_eq!(record["model"], json!("gpt-4o-mini"), "the model that answered, {context}");
                assert!(
                    record["upstream_id"].as_str().is_some_and(|id| id.starts_with("chatcmpl-mock-")),
                    "{context}"
                );
                let completion = u64::from(script.content_chunks);
                assert_eq!(
                    record["usage"],
                    json!({
                        "prompt_tokens": PROMPT_TOKENS,
                        "completion_tokens": completion,
                        "total_tokens": PROMPT_TOKENS + completion,
                        "cached_tokens": CACHED_TOKENS,
                        "reasoning_tokens": 0,
                    }),
                    "{context}"
                );
                let finish = if saw.pattern == Some("finish:length") { "length" } else { "stop" };
                assert_eq!(record["finish_reason"], json!(finish), "{context}");
            }
            Some(error) => {
                assert_eq!(record["outcome"], json!("failed"), "{context}");
                assert_eq!(
                    record["error_type"],
                    json!(error.error_type),
                    "the client's error type, {context}"
                );
                assert_eq!(record["error_code"], json!(error.code), "the client's error code, {context}");
                assert_eq!(record["usage"], Value::Null, "no usage from a failed stream, {context}");
            }
        }
        assert_eq!(record["events_to_client"], json!(saw.content_events), "content events, {context}");
        assert!(record["bytes_to_client"].as_u64().is_some_and(|bytes| bytes > 0), "{context}");
        assert!(record["timings_ms"]["total"].is_u64(), "{context}");
    }
}

fn request_id(pattern: Option<&str>) -> String {
    format!("pattern-{}", pattern.unwrap_or("none"))
}

async fn check_pattern(daemon: &Daemon, pattern: Option<&'static str>, expect: Expect) -> Seen {
    let mut data = serde_json::json!({
        "prompt": "Tell me something.",
        "record_text": true,
        "request_id": request_id(pattern),
    });
    if let Some(pattern) = pattern {
        data["test_pattern"] = pattern.into();
    }
    let response = daemon.hand_off(data.to_string()).await.read_to_end().await;
    let expected_content = Script::new(TOKENS, TOKEN_DELAY, None, pattern).expected_content();
    let (events, error) = match expect {
        Expect::Completed => (response.expect_completed_stream(), None),
        Expect::FailedWithType(error_type) => {
            let (events, error) = response.expect_failed_stream();
            assert_eq!(error.error_type, error_type, "the error event's type in {:?}", response.text());
            (events, Some(error))
        }
        Expect::FailedWithMessage(message) => {
            let (events, error) = response.expect_failed_stream();
            assert_eq!(error.message, message, "the backend's message in {:?}", response.text());
            (events, Some(error))
        }
    };
    for event in &events {
        assert!(
            matches!(event, Event::Content(_) | Event::Done | Event::Error(_)),
            "only content events and the end from an OpenAI backend, not {event:?}"
        );
    }
    assert_eq!(content(&events), expected_content, "the reassembled content of {:?}", response.text());
    Seen { pattern, content: content(&events), content_events: content_events(&events), error }
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
