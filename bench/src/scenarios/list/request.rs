//! The backend request as mock-llm saw it: method, path, authorization, content type,
//! and the JSON body built from the handoff.

use std::time::Duration;

use serde_json::{json, Value};

use super::{openai_daemon, start_mock, Transport, API_KEY};
use crate::mockllm::RecordedRequest;
use crate::scenarios::{content, Context};

pub async fn request_shape_over_h2c(cx: Context) {
    request_shape_over(cx, Transport::H2c).await;
}

pub async fn request_shape_over_http1(cx: Context) {
    request_shape_over(cx, Transport::Http1).await;
}

async fn request_shape_over(cx: Context, transport: Transport) {
    let mock = start_mock(transport, 4, Duration::from_millis(1)).await;
    let daemon = openai_daemon(&cx, &mock, transport).start().await;

    let chosen = json!({
        "prompt": "shape with options",
        "model": "gpt-scenario-model",
        "max_tokens": 2,
        "temperature": 0.25,
        "test_pattern": "short",
        "user_id": 7,
        "request_id": "req-1",
    });
    let response = daemon.hand_off(chosen.to_string()).await.read_to_end().await;
    // mock-llm honours max_tokens: two short tokens, then finish_reason "length".
    assert_eq!(content(&response.expect_completed_stream()), "ab");

    let history = json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "first question, in parts"}]},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "shape with history"},
    ]);
    let defaults = json!({ "prompt": "this prompt loses to messages", "messages": history });
    daemon.hand_off(defaults.to_string()).await.read_to_end().await.expect_completed_stream();

    let requests = mock.recorder().requests_seen();
    assert_eq!(requests.len(), 2, "one backend request per handoff");
    let with_options = find_by_last_message(&requests, "shape with options");
    let with_history = find_by_last_message(&requests, "shape with history");

    for request in [with_options, with_history] {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/v1/chat/completions");
        assert_eq!(request.header("authorization"), Some(format!("Bearer {API_KEY}").as_str()));
        let content_type = request.header("content-type").unwrap_or_default();
        assert!(content_type.starts_with("application/json"), "content-type {content_type:?}");
        assert_eq!(body_of(request)["stream"], json!(true), "\"stream\":true");
    }

    let body = body_of(with_options);
    assert_eq!(body["model"], json!("gpt-scenario-model"));
    assert_eq!(body["messages"], json!([{"role": "user", "content": "shape with options"}]));
    assert_eq!(body["max_tokens"], json!(2));
    assert_eq!(body["temperature"], json!(0.25));
    assert_eq!(with_options.header("x-test-pattern"), Some("short"));

    let body = body_of(with_history);
    assert_eq!(body["model"], json!("gpt-4o-mini"), "the default model");
    assert_eq!(body["messages"], history, "`messages` wins over `prompt`, forwarded as given");
    let members = body.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
    assert!(body.get("max_tokens").is_none(), "no max_tokens unless given: {members:?}");
    assert!(body.get("temperature").is_none(), "no temperature unless given: {members:?}");
    assert_eq!(with_history.header("x-test-pattern"), None, "no X-Test-Pattern unless given");
    daemon.terminate().await;
}

fn body_of(request: &RecordedRequest) -> Value {
    request.body_json().unwrap_or_else(|| panic!("the request body is not JSON: {:?}", request.body))
}

fn find_by_last_message<'a>(requests: &'a [RecordedRequest], text: &str) -> &'a RecordedRequest {
    let found = requests.iter().find(|request| {
        let body = body_of(request);
        let last = body["messages"].as_array().and_then(|messages| messages.last()).cloned();
        last.is_some_and(|message| message["content"] == json!(text))
    });
    found.unwrap_or_else(|| panic!("no backend request whose last message is {text:?}: {requests:#?}"))
}
