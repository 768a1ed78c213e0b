//! The `openai_chunk` target: upstream payloads never panic the chunk parser and,
//! when it reads a chunk, it reads the same content a `serde_json::Value` shows;
//! the request body says exactly what the handoff says, for any handoff.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::script::Script;
use crate::handoff::{Handoff, Message};
use crate::openai::{self, ChunkEvent};

/// Most messages a scripted handoff has.
const MAX_MESSAGES: u8 = 6;

pub(super) fn check(data: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(data);
    check_chunk(&text)?;
    let status = u16::from_be_bytes([data.first().copied().unwrap_or(0), data.get(1).copied().unwrap_or(0)]);
    let _ = openai::error_from_status(status, data);
    check_request_body(&scripted_handoff(&mut Script::new(data)), "fuzz-default-model")
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
        ChunkEvent::Delta { content, finish_reason }
            if content.as_deref() == expected.0 && finish_reason.as_deref() == expected.1 =>
        {
            Ok(())
        }
        other => Err(format!("{text:?} parsed as {other:?}, but its JSON says {expected:?}")),
    }
}

/// `(content, finish_reason)` when `value` is plainly a chunk: an object without
/// an error, whose fields on the path to the content have the documented types.
/// `None` for anything else (the typed parse may refuse those).
fn plain_delta(value: &Value) -> Option<(Option<&str>, Option<&str>)> {
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
        None | Some(Value::Null) => return Some((None, None)),
        Some(Value::Array(choices)) => match choices.first() {
            None => return Some((None, None)),
            Some(Value::Object(choice)) => choice,
            Some(_) => return None,
        },
        Some(_) => return None,
    };
    let content = match choice.get("delta") {
        None | Some(Value::Null) => None,
        Some(Value::Object(delta)) => optional_text(delta, "content")?,
        Some(_) => return None,
    };
    let finish_reason = optional_text(choice, "finish_reason")?.filter(|reason| !reason.is_empty());
    Some((content, finish_reason))
}

/// `Some(None)` when the field is absent or null, `None` when it is not a string.
fn optional_text<'a>(object: &'a Map<String, Value>, field: &str) -> Option<Option<&'a str>> {
    match object.get(field) {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(text)) => Some(Some(text)),
        Some(_) => None,
    }
}

/// A handoff no payload could produce as easily: any strings, raw JSON contents of
/// every kind, any `u32` and any `f64` bit pattern.
fn scripted_handoff(script: &mut Script<'_>) -> Handoff {
    let model = match script.byte() % 3 {
        0 => None,
        1 => Some(String::new()),
        _ => Some(text(script.run())),
    };
    let count = script.byte() % (MAX_MESSAGES + 1);
    let messages = (0..count)
        .map(|_| {
            let role = text(script.run());
            Message { role, content: raw_content(script) }
        })
        .collect();
    let max_tokens = (script.byte() % 2 == 1).then(|| script.u32());
    let temperature = (script.byte() % 2 == 1).then(|| readable(f64::from_bits(script.u64())));
    Handoff { messages, model, max_tokens, temperature, ..Handoff::default() }
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

fn raw_content(script: &mut Script<'_>) -> Box<RawValue> {
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
    // Raw bytes that are not JSON become a string holding them. Strict parsing
    // first: a raw value alone lets lone surrogate escapes through, which the
    // `handoff` target covers (see core/tests/fuzz_regressions.rs).
    let json = match serde_json::from_str::<Value>(&json) {
        Ok(_) => json,
        Err(_) => Value::String(json).to_string(),
    };
    RawValue::from_string(json).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// The body is a JSON object holding exactly `model`, `messages` (role and content
/// as given), `stream: true`, and `max_tokens` and a finite `temperature` when set.
pub(super) fn check_request_body(handoff: &Handoff, default_model: &str) -> Result<(), String> {
    let body = openai::request_body(handoff, default_model);
    let shown = || String::from_utf8_lossy(&body).into_owned();
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| format!("request body {} is not JSON: {e}", shown()))?;
    let object = value.as_object().ok_or_else(|| format!("request body {} is not an object", shown()))?;
    let model = handoff.model.as_deref().filter(|model| !model.is_empty()).unwrap_or(default_model);
    let mut expected_keys = 3;
    if object.get("stream") != Some(&Value::Bool(true)) {
        return Err(format!("request body {} lacks \"stream\":true", shown()));
    }
    if object.get("model").and_then(Value::as_str) != Some(model) {
        return Err(format!("request body {} does not name model {model:?}", shown()));
    }
    let messages = object.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if messages.len() != handoff.messages.len() {
        return Err(format!(
            "request body {} has {} messages, not {}",
            shown(),
            messages.len(),
            handoff.messages.len()
        ));
    }
    for (sent, given) in messages.iter().zip(&handoff.messages) {
        let content: Value = serde_json::from_str(given.content.get()).map_err(|e| e.to_string())?;
        let expected = Value::Object(Map::from_iter([
            ("role".to_owned(), Value::String(given.role.clone())),
            ("content".to_owned(), content),
        ]));
        if *sent != expected {
            return Err(format!("request body message {sent} is not {expected}"));
        }
    }
    if let Some(max_tokens) = handoff.max_tokens {
        expected_keys += 1;
        if object.get("max_tokens").and_then(Value::as_u64) != Some(u64::from(max_tokens)) {
            return Err(format!("request body {} does not carry max_tokens {max_tokens}", shown()));
        }
    }
    if let Some(temperature) = handoff.temperature.filter(|t| t.is_finite()) {
        expected_keys += 1;
        let sent = object.get("temperature").and_then(Value::as_f64);
        if !sent.is_some_and(|sent| same_number(sent, temperature)) {
            return Err(format!("request body {} does not carry temperature {temperature:?}", shown()));
        }
    }
    if object.len() != expected_keys {
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        return Err(format!("request body has keys {keys:?}"));
    }
    Ok(())
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
        assert_eq!(plain_delta(&chunk), Some((Some("Hi"), None)));
        assert_eq!(plain_delta(&serde_json::json!({"choices":[]})), Some((None, None)));
        assert_eq!(plain_delta(&serde_json::json!({"error":"x"})), None);
        assert_eq!(plain_delta(&serde_json::json!({"choices":[{"delta":{"content":1}}]})), None);
    }

    #[test]
    fn a_scripted_handoff_uses_every_field() {
        let mut script =
            Script::new(&[2, 3, b'g', b'p', b't', 1, 1, b'u', 0, 2, b'h', b'i', 1, 0, 0, 0, 9, 1]);
        let handoff = scripted_handoff(&mut script);
        assert_eq!(handoff.model.as_deref(), Some("gpt"));
        assert_eq!(handoff.messages.len(), 1);
        assert_eq!((handoff.messages[0].role.as_str(), handoff.messages[0].content.get()), ("u", "\"hi\""));
        assert_eq!(handoff.max_tokens, Some(9));
        assert!(handoff.temperature.is_some());
        assert_eq!(check_request_body(&handoff, "default"), Ok(()));
    }

    #[test]
    fn numbers_read_back_within_a_rounding_error_are_the_same() {
        assert!(same_number(0.7, 0.7));
        assert!(same_number(0.0, -0.0));
        assert!(same_number(0.0, 5e-324));
        assert!(!same_number(0.7, 0.8));
    }
}
