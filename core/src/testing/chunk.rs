//! The `openai_chunk` target: upstream payloads never panic the chunk parser and,
//! when it reads a chunk, it reads the same content a `serde_json::Value` shows;
//! the request body says exactly what the handoff says, for any handoff.

use serde_json::{Map, Value};

use super::script::Script;
use crate::handoff::{Handoff, Json, Message};
use crate::openai::{self, ChunkEvent, RequestDefaults};

/// Most messages a scripted handoff has.
const MAX_MESSAGES: u8 = 6;

pub(super) fn check(data: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(data);
    check_chunk(&text)?;
    let status = u16::from_be_bytes([data.first().copied().unwrap_or(0), data.get(1).copied().unwrap_or(0)]);
    let _ = openai::error_from_status(status, data);
    let mut script = Script::new(data);
    let handoff = scripted_handoff(&mut script);
    let defaults = RequestDefaults {
        default_model: "fuzz-default-model",
        user_from_user_id: script.byte() % 2 == 1,
        include_usage: script.byte() % 2 == 1,
    };
    check_request_body(&handoff, &defaults)
}

fn check_chunk(text: &str) -> Result<(), String> {
    let parsed = match openai::parse_chunk(text) {
        Ok(event) => event,
        Err(error) if error.to_string().is_empty() => return Err(format!("{error:?} has no message")),
        Err(_) => return Ok(()),
    };
    let json = serde_json::from_str::<Value>(text).ok();
    let Some(expected) = json.as_ref().and_then(plain_delta) else {
        return Ok(());
    };
    match parsed {
        ChunkEvent::Delta { content, reasoning, finish_reason, .. }
            if content.as_deref() == expected.0
                && reasoning.as_deref() == expected.1
                && finish_reason.as_deref() == expected.2 =>
        {
            Ok(())
        }
        other => Err(format!("{text:?} parsed as {other:?}, but its JSON says {expected:?}")),
    }
}

/// What a plain chunk carries: content, reasoning content, finish reason.
type Delta<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>);

/// The [`Delta`] when `value` is plainly a chunk: an object without an error,
/// whose fields on the path to the content have the documented types. `None` for
/// anything else (the typed parse may refuse those).
fn plain_delta(value: &Value) -> Option<Delta<'_>> {
    let payload = value.as_object()?;
    if !matches!(payload.get("error"), None | Some(Value::Null)) {
        return None;
    }
    match payload.get("object") {
        None | Some(Value::Null) => {}
        Some(Value::String(object)) if object != "error" => {}
        Some(_) => return None,
    }
    let choice = match payload.get("choices") {
        None | Some(Value::Null) => return Some((None, None, None)),
        Some(Value::Array(choices)) => match choices.first() {
            None => return Some((None, None, None)),
            Some(Value::Object(choice)) => choice,
            Some(_) => return None,
        },
        Some(_) => return None,
    };
    let (content, reasoning) = match choice.get("delta") {
        None | Some(Value::Null) => (None, None),
        Some(Value::Object(delta)) => {
            (optional_text(delta, "content")?, optional_text(delta, "reasoning_content")?)
        }
        Some(_) => return None,
    };
    let finish_reason = optional_text(choice, "finish_reason")?.filter(|reason| !reason.is_empty());
    Some((content, reasoning, finish_reason))
}

/// `Some(None)` when the field is absent or null, `None` when it is not a string.
fn optional_text<'a>(object: &'a Map<String, Value>, field: &str) -> Option<Option<&'a str>> {
    match object.get(field) {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(text)) => Some(Some(text)),
        Some(_) => None,
    }
}

/// A handoff no payload could produce as easily: any strings, JSON values of
/// every kind, any `u32`, `i64` and any `f64` bit pattern in every option.
fn scripted_handoff(script: &mut Script<'_>) -> Handoff {
    let model = match script.byte() % 3 {
        0 => None,
        1 => Some(String::new()),
        _ => Some(text(script.run())),
    };
    let count = script.byte() % (MAX_MESSAGES + 1);
    let mut messages: Vec<Message> = (0..count)
        .map(|_| {
            let role = text(script.run());
            Message::new(role, json_value(script))
        })
        .collect();
    let max_tokens = (script.byte() % 2 == 1).then(|| script.u32());
    let temperature = (script.byte() % 2 == 1).then(|| readable(f64::from_bits(script.u64())));
    for message in &mut messages {
        let extras = script.byte();
        message.name = (extras & 1 != 0).then(|| text(script.run()));
        message.tool_call_id = (extras & 2 != 0).then(|| text(script.run()));
        message.tool_calls = (extras & 4 != 0).then(|| json_value(script));
    }
    let number =
        |script: &mut Script<'_>| (script.byte() % 2 == 1).then(|| readable(f64::from_bits(script.u64())));
    let top_p = number(script);
    let presence_penalty = number(script);
    let frequency_penalty = number(script);
    let options = script.byte();
    let max_completion_tokens = (options & 1 != 0).then(|| script.u32());
    let seed = (options & 2 != 0).then(|| script.u64() as i64);
    let json = |bit: u8, script: &mut Script<'_>| (options & bit != 0).then(|| json_value(script));
    let stop = json(4, script);
    let response_format = json(8, script);
    let tools = json(16, script);
    let tool_choice = json(32, script);
    let user = (options & 64 != 0).then(|| text(script.run()));
    let user_id = (options & 128 != 0).then(|| text(script.run()));
    Handoff {
        messages,
        model,
        max_tokens,
        temperature,
        top_p,
        presence_penalty,
        frequency_penalty,
        max_completion_tokens,
        seed,
        stop,
        response_format,
        tools,
        tool_choice,
        user,
        user_id,
        ..Handoff::default()
    }
}

/// Largest magnitude the check reads back: serde_json (without `float_roundtrip`)
/// may round a decimal within an ULP of `f64::MAX` up past it and refuse it as out
/// of range. Handoffs themselves only carry temperatures from 0 to 2.
const MAX_READABLE: f64 = 1e300;

/// `value`, with finite magnitudes over [`MAX_READABLE`] brought down to it (NaN
/// and the infinities stay: the body must leave them out).
fn readable(value: f64) -> f64 {
    if value.is_finite() && value.abs() > MAX_READABLE {
        MAX_READABLE.copysign(value)
    } else {
        value
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json_value(script: &mut Script<'_>) -> Json {
    let json = match script.byte() % 5 {
        0 => Value::String(text(script.run())).to_string(),
        1 => "null".to_owned(),
        2 => {
            let part = Value::Object(Map::from_iter([
                ("type".to_owned(), Value::String("text".to_owned())),
                ("text".to_owned(), Value::String(text(script.run()))),
            ]));
            Value::Array(vec![part]).to_string()
        }
        3 => text(script.run()),
        _ => script.u64().to_string(),
    };
    // Raw bytes that strict JSON refuses become a string holding them.
    Json::parse(&json).unwrap_or_else(|_| Json::string(&json))
}

/// The body is a JSON object holding exactly `model`, `messages` (role, content
/// and the optional fields as given), `stream: true`, and every option the
/// handoff set, finite numbers only, with `user` falling back to `user_id` when
/// the defaults say so.
pub(super) fn check_request_body(handoff: &Handoff, defaults: &RequestDefaults<'_>) -> Result<(), String> {
    let body = openai::request_body(handoff, defaults);
    let shown = || String::from_utf8_lossy(&body).into_owned();
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| format!("request body {} is not JSON: {e}", shown()))?;
    let object = value.as_object().ok_or_else(|| format!("request body {} is not an object", shown()))?;
    let expected = expected_body(handoff, defaults)?;
    let mut keys: Vec<&String> = object.keys().collect();
    let mut expected_keys: Vec<&String> = expected.keys().collect();
    keys.sort();
    expected_keys.sort();
    if keys != expected_keys {
        return Err(format!("request body {} has keys {keys:?}, expected {expected_keys:?}", shown()));
    }
    for (key, want) in &expected {
        let sent = object.get(key).unwrap_or(&Value::Null);
        // The f64 options are written with Display: 2.0 comes back as the integer 2.
        let same = match (sent.as_f64(), want.as_f64()) {
            (Some(sent), Some(want_f64)) if want.is_f64() => same_number(sent, want_f64),
            _ => sent == want,
        };
        if !same {
            return Err(format!("request body {}: `{key}` is {sent}, expected {want}", shown()));
        }
    }
    Ok(())
}

/// The body [`openai::request_body`] must write, built as a `Value`.
fn expected_body(handoff: &Handoff, defaults: &RequestDefaults<'_>) -> Result<Map<String, Value>, String> {
    let parse = |json: &Json| serde_json::from_str::<Value>(json.get()).map_err(|e| format!("{json:?}: {e}"));
    let mut body = Map::new();
    let model = handoff.model.as_deref().filter(|model| !model.is_empty()).unwrap_or(defaults.default_model);
    body.insert("model".into(), Value::String(model.into()));
    let mut messages = Vec::new();
    for message in &handoff.messages {
        let mut entry = Map::new();
        entry.insert("role".into(), Value::String(message.role.clone()));
        entry.insert("content".into(), parse(&message.content)?);
        if let Some(name) = &message.name {
            entry.insert("name".into(), Value::String(name.clone()));
        }
        if let Some(id) = &message.tool_call_id {
            entry.insert("tool_call_id".into(), Value::String(id.clone()));
        }
        if let Some(calls) = &message.tool_calls {
            entry.insert("tool_calls".into(), parse(calls)?);
        }
        messages.push(Value::Object(entry));
    }
    body.insert("messages".into(), Value::Array(messages));
    let integers = [
        ("max_tokens", handoff.max_tokens.map(i64::from)),
        ("max_completion_tokens", handoff.max_completion_tokens.map(i64::from)),
        ("seed", handoff.seed),
    ];
    for (key, value) in integers {
        if let Some(value) = value {
            body.insert(key.into(), Value::from(value));
        }
    }
    let numbers = [
        ("temperature", handoff.temperature),
        ("top_p", handoff.top_p),
        ("presence_penalty", handoff.presence_penalty),
        ("frequency_penalty", handoff.frequency_penalty),
    ];
    for (key, value) in numbers {
        if let Some(value) = value.filter(|value| value.is_finite()) {
            body.insert(key.into(), Value::from(value));
        }
    }
    let forwarded = [
        ("stop", &handoff.stop),
        ("response_format", &handoff.response_format),
        ("tools", &handoff.tools),
        ("tool_choice", &handoff.tool_choice),
    ];
    for (key, value) in forwarded {
        if let Some(value) = value {
            body.insert(key.into(), parse(value)?);
        }
    }
    let user = handoff.user.as_ref().or(handoff.user_id.as_ref().filter(|_| defaults.user_from_user_id));
    if let Some(user) = user {
        body.insert("user".into(), Value::String(user.clone()));
    }
    if defaults.include_usage {
        body.insert("stream_options".into(), serde_json::json!({"include_usage": true}));
    }
    body.insert("stream".into(), Value::Bool(true));
    Ok(body)
}

/// serde_json (without `float_roundtrip`) may read a long decimal one ULP off, and
/// reads the longest subnormals as zero: close enough means the same number here.
fn same_number(read: f64, written: f64) -> bool {
    let difference = (read - written).abs();
    difference <= read.abs().max(written.abs()) * 1e-12 || difference < 1e-300
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_chunks_have_a_model_and_odd_shapes_do_not() {
        let chunk = serde_json::json!({"choices":[{"delta":{"content":"Hi"},"finish_reason":""}]});
        assert_eq!(plain_delta(&chunk), Some((Some("Hi"), None, None)));
        let chunk =
            serde_json::json!({"choices":[{"delta":{"reasoning_content":"Hm"},"finish_reason":"stop"}]});
        assert_eq!(plain_delta(&chunk), Some((None, Some("Hm"), Some("stop"))));
        assert_eq!(plain_delta(&serde_json::json!({"choices":[]})), Some((None, None, None)));
        assert_eq!(plain_delta(&serde_json::json!({"error":"x"})), None);
        assert_eq!(plain_delta(&serde_json::json!({"choices":[{"delta":{"content":1}}]})), None);
    }

    #[test]
    fn a_scripted_handoff_uses_every_field() {
        let mut bytes = vec![2, 3, b'g', b'p', b't', 1, 1, b'u', 0, 2, b'h', b'i', 1, 0, 0, 0, 9, 1];
        bytes.extend([0x3f, 0xe0, 0, 0, 0, 0, 0, 0]); // temperature 0.5
        bytes.extend([7, 1, b'n', 1, b'c', 1]); // name, tool_call_id, tool_calls null
        bytes.extend([1, 0x3f, 0xd0, 0, 0, 0, 0, 0, 0, 0, 0]); // top_p 0.25, no penalties
        bytes.extend([0xff, 0, 0, 0, 3]); // every option; max_completion_tokens 3
        bytes.extend([0xff; 8]); // seed -1
        bytes.extend([0, 2, b's', b't', 1, 1, 1, 1, b'x', 1, b'7']); // stop "st", three nulls, user, user_id
        let mut script = Script::new(&bytes);
        let handoff = scripted_handoff(&mut script);
        assert_eq!(handoff.model.as_deref(), Some("gpt"));
        assert_eq!(handoff.messages.len(), 1);
        assert_eq!((handoff.messages[0].role.as_str(), handoff.messages[0].content.get()), ("u", "\"hi\""));
        assert_eq!(handoff.max_tokens, Some(9));
        assert_eq!(handoff.temperature, Some(0.5));
        assert_eq!(handoff.messages[0].name.as_deref(), Some("n"));
        assert_eq!(handoff.messages[0].tool_call_id.as_deref(), Some("c"));
        assert!(handoff.messages[0].tool_calls.is_some());
        assert_eq!(
            (handoff.top_p, handoff.presence_penalty, handoff.frequency_penalty),
            (Some(0.25), None, None)
        );
        assert_eq!((handoff.max_completion_tokens, handoff.seed), (Some(3), Some(-1)));
        assert_eq!(handoff.stop.as_ref().map(Json::get), Some("\"st\""));
        assert!(
            handoff.response_format.is_some() && handoff.tools.is_some() && handoff.tool_choice.is_some()
        );
        assert_eq!((handoff.user.as_deref(), handoff.user_id.as_deref()), (Some("x"), Some("7")));
        for user_from_user_id in [false, true] {
            let defaults =
                RequestDefaults { default_model: "default", user_from_user_id, include_usage: true };
            assert_eq!(check_request_body(&handoff, &defaults), Ok(()));
        }
        let anonymous = Handoff { user: None, ..handoff };
        let defaults =
            RequestDefaults { default_model: "default", user_from_user_id: true, include_usage: false };
        let body: Value = serde_json::from_slice(&openai::request_body(&anonymous, &defaults)).unwrap();
        assert_eq!(body["user"], "7", "user_id as user when configured");
        assert_eq!(check_request_body(&anonymous, &defaults), Ok(()));
    }

    #[test]
    fn numbers_read_back_within_a_rounding_error_are_the_same() {
        assert!(same_number(0.7, 0.7));
        assert!(same_number(0.0, -0.0));
        assert!(same_number(0.0, 5e-324));
        assert!(!same_number(0.7, 0.8));
    }
}
