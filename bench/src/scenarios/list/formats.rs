//! What the client receives: `format` (`content` or `openai`) and `reasoning`,
//! from a real backend (mock-llm's `empty:N` chunks carry reasoning and tool
//! calls) and from the built-in mock.

use std::time::Duration;

use serde_json::{json, Value};

use super::{mock_daemon, openai_daemon, start_mock, Transport};
use crate::mockllm::Script;
use crate::scenarios::{content, Context, Event};

/// Role, `reasoning_content`, `tool_calls` and usage chunks before the content.
const PATTERN: &str = "empty:4";
const TOKENS: u32 = 3;

fn expected_text() -> String {
    Script::new(TOKENS, Duration::ZERO, None, Some(PATTERN)).expected_content()
}

pub async fn openai_format_forwards_every_chunk_with_tool_calls_and_reasoning(cx: Context) {
    let mock = start_mock(Transport::H2c, TOKENS, Duration::from_millis(1)).await;
    let daemon = openai_daemon(&cx, &mock, Transport::H2c).start().await;
    let handoff = json!({ "prompt": "chunks as they are", "format": "openai", "test_pattern": PATTERN });
    let response = daemon.hand_off(handoff.to_string()).await.read_to_end().await;
    let chunks = response.expect_openai_stream();

    // The role chunk, the four content-less ones, the content, the finish, and the
    // final usage chunk the daemon asked for (`stream_options.include_usage`).
    assert_eq!(chunks.len(), 1 + 4 + TOKENS as usize + 1 + 1, "{chunks:#?}");
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        assert_eq!(chunk["id"], chunks[0]["id"], "one completion's chunks");
    }
    let delta = |chunk: &Value| chunk["choices"][0]["delta"].clone();
    assert_eq!(delta(&chunks[0])["role"], "assistant");
    let reasoning: Vec<&str> = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["reasoning_content"].as_str())
        .collect();
    assert_eq!(reasoning, ["Weighing the question first."]);
    let calls: Vec<Value> =
        chunks.iter().map(|chunk| delta(chunk)["tool_calls"].clone()).filter(|c| !c.is_null()).collect();
    assert_eq!(calls.len(), 1, "{chunks:#?}");
    assert_eq!(calls[0][0]["function"]["name"], "lookup");
    assert_eq!(calls[0][0]["function"]["arguments"], "{\"q\":1}");
    assert!(chunks.iter().any(|chunk| chunk["usage"]["total_tokens"].is_number()), "the usage chunk");
    let text: String =
        chunks.iter().filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, expected_text());
    let finish = chunks.get(chunks.len() - 2).map(|chunk| chunk["choices"][0]["finish_reason"].clone());
    assert_eq!(finish, Some(json!("stop")));
    let last = chunks.last().map(|chunk| chunk["usage"]["completion_tokens"].clone());
    assert_eq!(last, Some(json!(TOKENS)), "the usage chunk comes last");

    // An upstream error mid-stream is still the daemon's error event.
    let failing = json!({ "prompt": "fail", "format": "openai", "test_pattern": "error-event:1" });
    let response = daemon.hand_off(failing.to_string()).await.read_to_end().await;
    let text = response.text();
    assert!(text.ends_with("\n\n") && !text.contains("[DONE]"), "{text}");
    assert!(text.contains("event: error\ndata: {\"error\":{\"message\":\"mock-llm error event"), "{text}");
    daemon.terminate().await;
}

pub async fn reasoning_events_arrive_in_content_mode_only_when_asked(cx: Context) {
    let mock = start_mock(Transport::Http1, TOKENS, Duration::from_millis(1)).await;
    let daemon = openai_daemon(&cx, &mock, Transport::Http1).start().await;
    let asked = json!({ "prompt": "think aloud", "reasoning": true, "test_pattern": PATTERN });
    let events = daemon.hand_off(asked.to_string()).await.read_to_end().await.expect_completed_stream();
    let reasoning: Vec<&Event> = events.iter().filter(|event| matches!(event, Event::Reasoning(_))).collect();
    assert_eq!(reasoning, [&Event::Reasoning("Weighing the question first.".to_owned())]);
    let first_content = events.iter().position(|event| matches!(event, Event::Content(_)));
    let first_reasoning = events.iter().position(|event| matches!(event, Event::Reasoning(_)));
    assert!(first_reasoning < first_content, "in upstream order: {events:?}");
    assert_eq!(content(&events), expected_text());

    let quiet = json!({ "prompt": "think quietly", "test_pattern": PATTERN });
    let events = daemon.hand_off(quiet.to_string()).await.read_to_end().await.expect_completed_stream();
    assert!(!events.iter().any(|event| matches!(event, Event::Reasoning(_))), "{events:?}");
    assert_eq!(content(&events), expected_text());
    daemon.terminate().await;
}

pub async fn mock_backend_writes_the_openai_format(cx: Context) {
    let daemon = mock_daemon(&cx, 1).start().await;
    let handoff = json!({ "prompt": "SDK parser", "user_id": "dev", "format": "openai", "reasoning": true });
    let chunks = daemon.hand_off(handoff.to_string()).await.read_to_end().await.expect_openai_stream();
    assert_eq!(chunks.len(), 18);
    let text: Vec<&str> = chunks
        .iter()
        .map(|chunk| chunk["choices"][0]["delta"]["content"].as_str().unwrap_or("<none>"))
        .collect();
    assert_eq!(&text[1..3], ["Hello user dev!", "You asked: SDK parser"]);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[17]["choices"][0]["finish_reason"], "stop");
    assert!(chunks[..17].iter().all(|chunk| chunk["choices"][0]["finish_reason"].is_null()));
    // The default stays the indexed content events.
    super::expect_mock_stream(&daemon, r#"{"prompt":"content as before","format":"content"}"#).await;
    daemon.terminate().await;
}
