//! The body we POST to `/chat/completions`.

use handoff_core::handoff::{self, Handoff, Json, Message};
use handoff_core::openai::{request_body, RequestDefaults};
use serde_json::{json, Value};

const DEFAULTS: RequestDefaults<'static> =
    RequestDefaults { default_model: "gpt-4o-mini", user_from_user_id: false, include_usage: false };

fn message(role: &str, content_json: &str) -> Message {
    Message::new(role, Json::parse(content_json).unwrap())
}

fn prompt(text: &str) -> Handoff {
    Handoff { messages: vec![message("user", &serde_json::to_string(text).unwrap())], ..Default::default() }
}

fn body_json(handoff: &Handoff) -> Value {
    serde_json::from_slice(&request_body(handoff, &DEFAULTS)).unwrap()
}

fn decoded_body(handoff_json: &str, defaults: &RequestDefaults<'_>) -> Value {
    let handoff = handoff::decode(handoff_json.as_bytes()).unwrap_or_else(|e| panic!("{handoff_json}: {e}"));
    serde_json::from_slice(&request_body(&handoff, defaults)).unwrap()
}

#[test]
fn a_prompt_becomes_a_streaming_request_for_the_default_model() {
    assert_eq!(
        request_body(&prompt("Hi"), &DEFAULTS),
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}],"stream":true}"#
    );
}

#[test]
fn the_handoff_model_wins_over_the_default_unless_empty() {
    let handoff = Handoff { model: Some("gpt-4.1".to_owned()), ..prompt("Hi") };
    assert_eq!(body_json(&handoff)["model"], "gpt-4.1");
    let handoff = Handoff { model: Some(String::new()), ..prompt("Hi") };
    assert_eq!(body_json(&handoff)["model"], "gpt-4o-mini");
}

#[test]
fn messages_are_forwarded_in_order_with_their_content() {
    let parts = r#"[ {"type": "text", "text": "caf\u00e9"},
        {"type":"image_url","image_url":{"url":"https://example.com/a.png"}} ]"#;
    let handoff = Handoff {
        messages: vec![
            message("system", r#""Be brief.""#),
            message("user", parts),
            message("assistant", "null"),
            message("user", r#""Line one\nline \"two\"""#),
        ],
        ..Default::default()
    };
    let body = request_body(&handoff, &RequestDefaults::model("m"));
    let text = std::str::from_utf8(&body).unwrap();
    // Written back compactly, in the order given.
    let compact = r#"[{"type":"text","text":"café"},{"type":"image_url","image_url":{"url":"https://example.com/a.png"}}]"#;
    assert!(text.contains(&format!(r#"{{"role":"user","content":{compact}}}"#)), "{text}");

    let json: Value = serde_json::from_slice(&body).unwrap();
    let roles: Vec<&str> =
        json["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(json["messages"][1]["content"][0]["text"], "café");
    assert!(json["messages"][2]["content"].is_null());
    assert_eq!(json["messages"][3]["content"], "Line one\nline \"two\"");
}

#[test]
fn roles_and_models_are_json_escaped() {
    let handoff = Handoff {
        model: Some("model \"x\"\n".to_owned()),
        messages: vec![message("us\"er\\", r#""hi""#)],
        ..Default::default()
    };
    let json = body_json(&handoff);
    assert_eq!(json["model"], "model \"x\"\n");
    assert_eq!(json["messages"][0]["role"], "us\"er\\");
}

#[test]
fn max_tokens_and_temperature_are_sent_only_when_given() {
    let json = body_json(&prompt("Hi"));
    assert!(json.get("max_tokens").is_none() && json.get("temperature").is_none());
    assert_eq!(json["stream"], true);

    let handoff = Handoff { max_tokens: Some(256), temperature: Some(0.7), ..prompt("Hi") };
    let json = body_json(&handoff);
    assert_eq!(json["max_tokens"], 256);
    assert_eq!(json["temperature"].as_f64(), Some(0.7));
    assert_eq!(json["stream"], true);

    let handoff = Handoff { temperature: Some(1e-7), ..prompt("Hi") };
    assert_eq!(body_json(&handoff)["temperature"].as_f64(), Some(1e-7));
}

#[test]
fn a_temperature_json_cannot_express_is_left_out() {
    for temperature in [f64::NAN, f64::INFINITY] {
        let handoff = Handoff { temperature: Some(temperature), ..prompt("Hi") };
        assert!(body_json(&handoff).get("temperature").is_none());
    }
}

#[test]
fn a_handoff_without_messages_sends_an_empty_list() {
    assert_eq!(body_json(&Handoff::default())["messages"], Value::Array(vec![]));
}

#[test]
fn every_option_the_handoff_sets_is_forwarded_and_nothing_else() {
    let tools = json!([{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"z": {"type": "string"}, "a": {"type": "number"}}}}}]);
    let format = json!({"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}}});
    let handoff = json!({
        "prompt": "all options",
        "max_tokens": 50,
        "max_completion_tokens": 40,
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": -42,
        "presence_penalty": -1.5,
        "frequency_penalty": 2,
        "stop": ["\n\n", "END"],
        "response_format": format,
        "tools": tools,
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "user": "end-user-1",
        "request_id": "req-7",
        "format": "openai",
        "reasoning": true,
    });
    let body = decoded_body(&handoff.to_string(), &DEFAULTS);
    let expected = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "all options"}],
        "max_tokens": 50,
        "max_completion_tokens": 40,
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": -42,
        "presence_penalty": -1.5,
        "frequency_penalty": 2,
        "stop": ["\n\n", "END"],
        "response_format": format,
        "tools": tools,
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "user": "end-user-1",
        "stream": true,
    });
    assert_eq!(body, expected, "request_id, format and reasoning are the daemon's, not the model's");

    let bare = decoded_body(r#"{"prompt":"x","stop":"END"}"#, &DEFAULTS);
    assert_eq!(
        bare,
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "stop": "END", "stream": true})
    );
}

#[test]
fn forwarded_json_keeps_its_key_order() {
    // JSON-schema property order steers structured output: it must survive.
    let body = request_body(
        &handoff::decode(br#"{"response_format":{"type":"json_schema","z":1,"a":{"y":2,"b":3}}}"#).unwrap(),
        &DEFAULTS,
    );
    let text = std::str::from_utf8(&body).unwrap();
    assert!(text.contains(r#""response_format":{"type":"json_schema","z":1,"a":{"y":2,"b":3}}"#), "{text}");
}

#[test]
fn system_is_prepended_to_the_prompt_only_without_messages() {
    let body = decoded_body(r#"{"system":"Be brief.","prompt":"Hi"}"#, &DEFAULTS);
    assert_eq!(
        body["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    );
    let body = decoded_body(r#"{"system":"Alone."}"#, &DEFAULTS);
    assert_eq!(body["messages"], json!([{"role": "system", "content": "Alone."}]));
    let body = decoded_body(r#"{"system":"Ignored.","messages":[{"role":"user","content":"m"}]}"#, &DEFAULTS);
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": "m"}]),
        "`messages` is the whole conversation"
    );
}

#[test]
fn tool_conversations_keep_their_tool_fields() {
    let messages = json!([
        {"role": "user", "content": "weather?", "name": "ann"},
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]);
    let body = decoded_body(&json!({ "messages": messages }).to_string(), &DEFAULTS);
    let mut expected = messages.clone();
    expected[1]["content"] = Value::Null;
    assert_eq!(body["messages"], expected);
}

#[test]
fn user_id_becomes_user_only_when_configured_and_user_wins() {
    let with_id = r#"{"prompt":"x","user_id":42}"#;
    assert!(decoded_body(with_id, &DEFAULTS).get("user").is_none(), "off by default");
    let on = RequestDefaults { user_from_user_id: true, ..DEFAULTS };
    assert_eq!(decoded_body(with_id, &on)["user"], "42");
    assert_eq!(decoded_body(r#"{"prompt":"x","user_id":42,"user":"explicit"}"#, &on)["user"], "explicit");
    assert!(decoded_body(r#"{"prompt":"x"}"#, &on).get("user").is_none());
}
