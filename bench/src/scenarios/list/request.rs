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

pub async fn request_fields_reach_the_backend_over_h2c(cx: Context) {
    request_fields_reach_the_backend(cx, Transport::H2c).await;
}

pub async fn request_fields_reach_the_backend_over_http1(cx: Context) {
    request_fields_reach_the_backend(cx, Transport::Http1).await;
}

/// Every field a handoff may set for the model arrives as the backend's request
/// says it should, and only when set; `request_id` as `X-Request-Id`; with
/// `--openai-user-from-user-id`, the `user_id` as `user` unless `user` is given.
async fn request_fields_reach_the_backend(cx: Context, transport: Transport) {
    let mock = start_mock(transport, 6, Duration::from_millis(1)).await;
    let daemon =
        openai_daemon(&cx, &mock, transport).args(["--openai-user-from-user-id", "true"]).start().await;

    // Written as text: `json!` would sort the keys whose order must survive.
    const TOOLS: &str = r#"[{"type":"function","function":{"name":"lookup","parameters":{"type":"object","properties":{"zeta":{"type":"string"},"alpha":{"type":"number"}}}}}]"#;
    const RESPONSE_FORMAT: &str = r#"{"type":"json_schema","json_schema":{"name":"answer","schema":{"type":"object","properties":{"z":{"type":"string"},"a":{"type":"string"}}}}}"#;
    let parsed = |text: &str| serde_json::from_str::<Value>(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    let (tools, response_format) = (parsed(TOOLS), parsed(RESPONSE_FORMAT));
    let every_option = json!({
        "system": "Answer in one word.",
        "prompt": "every option",
        "model": "gpt-fields",
        "max_tokens": 50,
        "max_completion_tokens": 3,
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 1234,
        "presence_penalty": -0.5,
        "frequency_penalty": 1.5,
        "stop": ["\n\n", "END"],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "user": "end-user-9",
        "user_id": 7,
        "request_id": "req-fields-1",
    });
    let rest = every_option.to_string();
    let every_option = format!(
        r#"{{"tools":{TOOLS},"response_format":{RESPONSE_FORMAT},{}"#,
        rest.get(1..).unwrap_or_default()
    );
    let response = daemon.hand_off(every_option).await.read_to_end().await;
    // mock-llm honours max_completion_tokens over max_tokens: three tokens.
    let expected_text = crate::mockllm::Script::new(6, Duration::ZERO, Some(3), None).expected_content();
    assert_eq!(content(&response.expect_completed_stream()), expected_text);

    let conversation = json!([
        {"role": "developer", "content": "Use tools."},
        {"role": "user", "name": "ann", "content": [
            {"type": "text", "text": "caf\u{e9} / parts"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        {"role": "user", "content": "tool conversation"},
    ]);
    // PHP's json_encode escapes `/` and non-ASCII: the backend gets the same values.
    let php_escaped = json!({ "messages": conversation, "user_id": "u-42", "stop": "END" })
        .to_string()
        .replace('/', "\\/")
        .replace('é', "\\u00e9");
    daemon.hand_off(php_escaped).await.read_to_end().await.expect_completed_stream();

    let requests = mock.recorder().requests_seen();
    assert_eq!(requests.len(), 2, "one backend request per handoff");
    let with_options = find_by_last_message(&requests, "every option");
    assert_eq!(
        body_of(with_options),
        json!({
            "model": "gpt-fields",
            "messages": [
                {"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": "every option"},
            ],
            "max_tokens": 50,
            "max_completion_tokens": 3,
            "temperature": 0.5,
            "top_p": 0.9,
            "seed": 1234,
            "presence_penalty": -0.5,
            "frequency_penalty": 1.5,
            "stop": ["\n\n", "END"],
            "response_format": response_format,
            "tools": tools,
            "tool_choice": {"type": "function", "function": {"name": "lookup"}},
            "user": "end-user-9",
            "stream": true,
            "stream_options": {"include_usage": true},
        }),
        "every option, and `user` wins over user_id"
    );
    assert_eq!(with_options.header("x-request-id"), Some("req-fields-1"));
    // Schema property order steers structured output: it arrives as written.
    let raw = String::from_utf8_lossy(&with_options.body).into_owned();
    assert!(raw.contains(r#""properties":{"zeta":{"type":"string"},"alpha":"#), "{raw}");
    assert!(raw.contains(r#""properties":{"z":{"type":"string"},"a":"#), "{raw}");

    let with_tools = find_by_last_message(&requests, "tool conversation");
    assert_eq!(
        body_of(with_tools),
        json!({
            "model": "gpt-4o-mini",
            "messages": conversation,
            "stop": "END",
            "user": "u-42",
            "stream": true,
            "stream_options": {"include_usage": true},
        }),
        "the conversation as given, user_id as user, nothing unset"
    );
    assert_eq!(with_tools.header("x-request-id"), None, "no X-Request-Id unless given");
    daemon.terminate().await;
}

pub async fn wrong_request_field_types_get_400_naming_the_field(cx: Context) {
    let daemon = super::mock_daemon(&cx, 1).start().await;
    let cases = [
        ("system", json!(["not", "a", "string"])),
        ("max_completion_tokens", json!(-1)),
        ("top_p", json!(1.5)),
        ("seed", json!("42")),
        ("presence_penalty", json!(3)),
        ("frequency_penalty", json!("high")),
        ("stop", json!(7)),
        ("response_format", json!("json_object")),
        ("tools", json!({"type": "function"})),
        ("tool_choice", json!(1)),
        ("user", json!(12)),
        ("request_id", json!("r\r\nX-Injected: 1")),
        ("format", json!("html")),
        ("reasoning", json!("yes")),
        ("messages", json!([{"role": "user", "content": 5}])),
        ("messages", json!([{"role": "user", "content": [{"text": "no type"}]}])),
    ];
    let handoffs = cases.iter().map(|(field, value)| {
        let mut handoff = json!({ "prompt": "typed" });
        handoff[*field] = value.clone();
        (*field, handoff.to_string())
    });
    for (field, handoff) in handoffs {
        let response = daemon.hand_off(&handoff).await.read_to_end().await;
        let error = response.expect_error_response(400);
        assert!(
            error.message.contains(&format!("`{field}`")),
            "{handoff}: {:?} names no `{field}`",
            error.message
        );
        assert_eq!(error.code.as_deref(), Some("bad_handoff"), "{handoff}");
    }
    super::expect_mock_stream(&daemon, r#"{"prompt":"after the typed refusals"}"#).await;
    daemon.terminate().await;
}
