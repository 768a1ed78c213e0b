//! The body of `POST {base}/chat/completions`.

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

use crate::handoff::{Handoff, Json};
use crate::json;

/// What a backend's configuration adds to every request built for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestDefaults<'a> {
    /// Used when the handoff names no model (or an empty one).
    pub default_model: &'a str,
    /// Send the handoff's `user_id` as `user` when the handoff sets no `user`
    /// (`--openai-user-from-user-id`), for the provider's abuse monitoring.
    pub user_from_user_id: bool,
    /// Ask for a final usage chunk: `"stream_options":{"include_usage":true}`.
    pub include_usage: bool,
}

impl<'a> RequestDefaults<'a> {
    /// Only a default model.
    pub fn model(default_model: &'a str) -> Self {
        RequestDefaults { default_model, user_from_user_id: false, include_usage: false }
    }
}

/// The JSON body of `POST {base}/chat/completions`:
/// `{"model":..,"messages":[..],...,"stream":true}`, with each option the handoff
/// set and nothing it did not. Strings are escaped here; forwarded JSON
/// ([`Json`]) was parsed and written back strictly by the handoff decoder. A
/// non-finite number (not expressible in JSON) is left out.
pub fn request_body(handoff: &Handoff, defaults: &RequestDefaults<'_>) -> Bytes {
    let model = handoff.model.as_deref().filter(|model| !model.is_empty()).unwrap_or(defaults.default_model);
    let json_len = |json: &Option<Json>| json.as_ref().map_or(0, |json| json.get().len() + 24);
    let messages_len: usize = handoff
        .messages
        .iter()
        .map(|message| {
            message.role.len()
                + message.content.get().len()
                + message.name.as_ref().map_or(0, |name| name.len() + 16)
                + message.tool_call_id.as_ref().map_or(0, |id| id.len() + 24)
                + json_len(&message.tool_calls)
                + 24
        })
        .sum();
    let options_len = [&handoff.stop, &handoff.response_format, &handoff.tools, &handoff.tool_choice]
        .into_iter()
        .map(json_len)
        .sum::<usize>();
    let mut out = BytesMut::with_capacity(model.len() + messages_len + options_len + 256);

    out.put_slice(b"{\"model\":");
    json::write_str(&mut out, model);
    out.put_slice(b",\"messages\":[");
    for (i, message) in handoff.messages.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(b"{\"role\":");
        json::write_str(&mut out, &message.role);
        out.put_slice(b",\"content\":");
        out.put_slice(message.content.get().as_bytes());
        put_str(&mut out, "name", message.name.as_deref());
        put_str(&mut out, "tool_call_id", message.tool_call_id.as_deref());
        put_json(&mut out, "tool_calls", message.tool_calls.as_ref());
        out.put_u8(b'}');
    }
    out.put_u8(b']');
    put_int(&mut out, "max_tokens", handoff.max_tokens.map(i64::from));
    put_int(&mut out, "max_completion_tokens", handoff.max_completion_tokens.map(i64::from));
    put_number(&mut out, "temperature", handoff.temperature);
    put_number(&mut out, "top_p", handoff.top_p);
    put_int(&mut out, "seed", handoff.seed);
    put_number(&mut out, "presence_penalty", handoff.presence_penalty);
    put_number(&mut out, "frequency_penalty", handoff.frequency_penalty);
    put_json(&mut out, "stop", handoff.stop.as_ref());
    put_json(&mut out, "response_format", handoff.response_format.as_ref());
    put_json(&mut out, "tools", handoff.tools.as_ref());
    put_json(&mut out, "tool_choice", handoff.tool_choice.as_ref());
    let user = handoff.user.as_deref().or(handoff.user_id.as_deref().filter(|_| defaults.user_from_user_id));
    put_str(&mut out, "user", user);
    if defaults.include_usage {
        out.put_slice(b",\"stream_options\":{\"include_usage\":true}");
    }
    out.put_slice(b",\"stream\":true}");
    out.freeze()
}

/// `,"name":` (names are ours: plain ASCII, nothing to escape).
fn put_key(out: &mut BytesMut, name: &str) {
    out.put_slice(b",\"");
    out.put_slice(name.as_bytes());
    out.put_slice(b"\":");
}

fn put_str(out: &mut BytesMut, name: &str, value: Option<&str>) {
    if let Some(value) = value {
        put_key(out, name);
        json::write_str(out, value);
    }
}

fn put_json(out: &mut BytesMut, name: &str, value: Option<&Json>) {
    if let Some(value) = value {
        put_key(out, name);
        out.put_slice(value.get().as_bytes());
    }
}

fn put_int(out: &mut BytesMut, name: &str, value: Option<i64>) {
    if let Some(value) = value {
        put_key(out, name);
        // Writing to a BytesMut only fails past usize::MAX bytes.
        let _ = write!(out, "{value}");
    }
}

fn put_number(out: &mut BytesMut, name: &str, value: Option<f64>) {
    if let Some(value) = value.filter(|value| value.is_finite()) {
        put_key(out, name);
        // f64's Display never uses exponents or NaN here: always a valid JSON number.
        let _ = write!(out, "{value}");
    }
}
