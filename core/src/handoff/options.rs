//! The request options a handoff may set, each checked for the type (and range)
//! OpenAI's chat API documents; a wrong one names its field.

use serde_json::value::RawValue;

use super::{invalid, object, Format, HandoffError, Json};

/// `max_tokens` and `max_completion_tokens`.
pub(super) fn token_count(field: &'static str, raw: &RawValue) -> Result<u32, HandoffError> {
    serde_json::from_str(raw.get())
        .map_err(|_| invalid(field, format!("must be an integer from 0 to {}", u32::MAX)))
}

/// A number within `min..=max` (`temperature`, `top_p`, the penalties).
pub(super) fn number_in(
    field: &'static str,
    raw: &RawValue,
    min: f64,
    max: f64,
) -> Result<f64, HandoffError> {
    serde_json::from_str::<f64>(raw.get())
        .ok()
        .filter(|value| (min..=max).contains(value))
        .ok_or_else(|| invalid(field, format!("must be a number from {min} to {max}")))
}

pub(super) fn seed(raw: &RawValue) -> Result<i64, HandoffError> {
    serde_json::from_str(raw.get()).map_err(|_| invalid("seed", "must be an integer (64-bit signed)"))
}

pub(super) fn boolean(field: &'static str, raw: &RawValue) -> Result<bool, HandoffError> {
    serde_json::from_str(raw.get()).map_err(|_| invalid(field, "must be true or false"))
}

pub(super) fn format(raw: &RawValue) -> Result<Format, HandoffError> {
    match serde_json::from_str::<String>(raw.get()).as_deref() {
        Ok("content") => Ok(Format::Content),
        Ok("openai") => Ok(Format::OpenAi),
        _ => Err(invalid("format", "must be \"content\" or \"openai\"")),
    }
}

/// A string, or an array of strings.
pub(super) fn stop(raw: &RawValue) -> Result<Json, HandoffError> {
    let reason = "must be a string or an array of strings";
    let json = strict("stop", raw)?;
    let fine = match json.first_byte() {
        b'"' => true,
        b'[' => serde_json::from_str::<Vec<String>>(json.get()).is_ok(),
        _ => false,
    };
    if fine {
        Ok(json)
    } else {
        Err(invalid("stop", reason))
    }
}

/// An object with a string `type` (`text`, `json_object`, `json_schema`).
pub(super) fn response_format(raw: &RawValue) -> Result<Json, HandoffError> {
    let json = strict("response_format", raw)?;
    if has_string_type(json.get()) {
        Ok(json)
    } else {
        Err(invalid("response_format", "must be an object with a string `type`"))
    }
}

/// An array of objects, each with a string `type`.
pub(super) fn tools(raw: &RawValue) -> Result<Json, HandoffError> {
    let json = strict("tools", raw)?;
    let fine = json.first_byte() == b'['
        && serde_json::from_str::<Vec<&RawValue>>(json.get())
            .is_ok_and(|tools| tools.iter().all(|tool| has_string_type(tool.get())));
    if fine {
        Ok(json)
    } else {
        Err(invalid("tools", "must be an array of objects, each with a string `type`"))
    }
}

/// A string (`none`, `auto`, `required`) or an object naming a tool.
pub(super) fn tool_choice(raw: &RawValue) -> Result<Json, HandoffError> {
    let json = strict("tool_choice", raw)?;
    match json.first_byte() {
        b'"' | b'{' => Ok(json),
        _ => Err(invalid("tool_choice", "must be a string or an object")),
    }
}

/// A passthrough backend's request body: any JSON object, forwarded as given.
pub(super) fn body(raw: &RawValue) -> Result<Json, HandoffError> {
    let json = strict("body", raw)?;
    match json.first_byte() {
        b'{' => Ok(json),
        _ => Err(invalid("body", "must be an object")),
    }
}

fn strict(field: &'static str, raw: &RawValue) -> Result<Json, HandoffError> {
    Json::from_raw(raw)
        .map_err(|_| invalid(field, "is not strict JSON (a lone \\u surrogate or a number beyond f64)"))
}

/// Whether `json` is an object whose `type` is a string.
pub(super) fn has_string_type(json: &str) -> bool {
    object::named_fields(json.as_bytes(), &["type"])
        .ok()
        .flatten()
        .and_then(|fields| fields.first().copied().flatten())
        .is_some_and(|kind| kind.get().starts_with('"'))
}
