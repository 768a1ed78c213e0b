//! The body of `POST {base}/chat/completions`.

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

use crate::handoff::Handoff;
use crate::json;

/// The JSON body of `POST {base}/chat/completions`:
/// `{"model":..,"messages":[..],"stream":true}` plus `max_tokens` and
/// `temperature` when the handoff has them. `model` falls back to `default_model`
/// (also when the handoff's is empty). Message contents are written byte for byte
/// as the handoff carried them; a non-finite temperature (not expressible in JSON)
/// is left out.
pub fn request_body(handoff: &Handoff, default_model: &str) -> Bytes {
    let model = handoff.model.as_deref().filter(|model| !model.is_empty()).unwrap_or(default_model);
    let messages_len: usize =
        handoff.messages.iter().map(|message| message.role.len() + message.content.get().len() + 24).sum();
    let mut out = BytesMut::with_capacity(model.len() + messages_len + 96);

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
        out.put_u8(b'}');
    }
    out.put_u8(b']');
    // Writing to a BytesMut only fails past usize::MAX bytes, so the results are moot.
    if let Some(max_tokens) = handoff.max_tokens {
        let _ = write!(out, ",\"max_tokens\":{max_tokens}");
    }
    if let Some(temperature) = handoff.temperature.filter(|t| t.is_finite()) {
        // f64's Display never uses exponents or NaN here: always a valid JSON number.
        let _ = write!(out, ",\"temperature\":{temperature}");
    }
    out.put_slice(b",\"stream\":true}");
    out.freeze()
}
