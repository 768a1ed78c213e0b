//! The body we POST to `/chat/completions`.

use handoff_core::handoff::{Handoff, Message};
use handoff_core::openai::request_body;
use serde_json::value::RawValue;
use serde_json::Value;

fn message(role: &str, content_json: &str) -> Message {
    Message { role: role.to_owned(), content: RawValue::from_string(content_json.to_owned()).unwrap() }
}

fn prompt(text: &str) -> Handoff {
    Handoff { messages: vec![message("user", &serde_json::to_string(text).unwrap())], ..Default::default() }
}

fn body_json(handoff: &Handoff) -> Value {
    serde_json::from_slice(&request_body(handoff, "gpt-4o-mini")).unwrap()
}

#[test]
fn a_prompt_becomes_a_streaming_request_for_the_default_model() {
    assert_eq!(
        request_body(&prompt("Hi"), "gpt-4o-mini"),
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
fn messages_are_forwarded_in_order_with_content_byte_for_byte() {
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
    let body = request_body(&handoff, "m");
    let text = std::str::from_utf8(&body).unwrap();
    assert!(text.contains(&format!(r#"{{"role":"user","content":{parts}}}"#)), "{text}");

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
